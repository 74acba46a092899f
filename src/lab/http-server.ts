/*
 * A target's web server in the lab: every GET gets the server's name back ("t1\n"), over
 * HTTP/1.1 with keep-alive. Usage: http-server NAME PORT. Prints "ready" once listening.
 */
import * as http from 'node:http';

const [name, port] = process.argv.slice(2);
const server = http.createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'x-served-by': name });
  res.end(`${name}\n`);
});
server.listen(Number(port), () => process.stdout.write('ready\n'));
