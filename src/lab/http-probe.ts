/*
 * The lab client's HTTP requests: COUNT GETs to http://HOST:PORT/, one new connection each,
 * one after the other. Prints {"t1": n, ..., "error:CODE": n} once done.
 * Usage: http-probe HOST PORT COUNT.
 */
import * as http from 'node:http';

const [host, port, count] = process.argv.slice(2);
const counts: Record<string, number> = {};
const add = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
let left = Number(count);

function one(): void {
  if (left-- <= 0) {
    process.stdout.write(`${JSON.stringify(counts)}\n`);
    return;
  }
  const req = http.get({ host, port: Number(port), path: '/', agent: false, timeout: 5000 }, (res) => {
    let body = '';
    res.on('data', (d: Buffer) => (body += d.toString()));
    res.on('end', () => {
      add(body.trim() || `status:${res.statusCode}`);
      one();
    });
  });
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
  req.on('error', (e: NodeJS.ErrnoException) => {
    add(`error:${e.code ?? e.message}`);
    one();
  });
}
one();
