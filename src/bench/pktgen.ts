/*
 * The kernel's packet generator, driven through /proc/net/pktgen on a real router: one
 * device per thread (kpktgend_N), UDP flows over a range of source addresses and ports so
 * the distributor sees many connections, a rate in packets per second. The commands are a
 * plain list (tested against a scratch directory standing in for /proc/net/pktgen); the
 * results are parsed from each device's file when the run ends.
 */
import { DvipaError } from '../errors.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const PKTGEN_DIR = '/proc/net/pktgen';

export interface PktgenOptions {
  /** The interface to send from (towards the routing node's external interface). */
  device: string;
  threads: number;
  dst: string;
  dstMac: string;
  dport: number;
  srcMin: string;
  srcMax: string;
  sportMin: number;
  sportMax: number;
  /** Concurrent flows pktgen cycles through, each flowLen packets long. */
  flows: number;
  flowLen: number;
  /** Packets per second per thread (0: as fast as it can). */
  ratePps: number;
  size: number;
  durationS: number;
}

export interface PktgenCommand {
  file: string;
  command: string;
}

/** Packets per thread: a rate makes a counted run (rate x seconds); 0, none, runs until stopped. */
const countOf = (o: Pick<PktgenOptions, 'ratePps' | 'durationS'>) => (o.ratePps > 0 ? o.ratePps * o.durationS : 0);

/** Every write, in order, that sets up the run; `start` on pgctrl is left to the caller. */
export function pktgenCommands(o: PktgenOptions): PktgenCommand[] {
  const cmds: PktgenCommand[] = [];
  for (let t = 0; t < o.threads; t++) {
    const thread = `kpktgend_${t}`;
    const dev = `${o.device}@${t}`;
    cmds.push({ file: thread, command: 'rem_device_all' }, { file: thread, command: `add_device ${dev}` });
    for (const c of [
      `count ${countOf(o)}`,
      'clone_skb 0',
      `pkt_size ${o.size}`,
      'delay 0',
      `queue_map_min ${t}`,
      `queue_map_max ${t}`,
      `dst ${o.dst}`,
      `dst_mac ${o.dstMac}`,
      `src_min ${o.srcMin}`,
      `src_max ${o.srcMax}`,
      `udp_src_min ${o.sportMin}`,
      `udp_src_max ${o.sportMax}`,
      `udp_dst_min ${o.dport}`,
      `udp_dst_max ${o.dport}`,
      'flag IPSRC_RND',
      'flag UDPSRC_RND',
      'flag FLOW_SEQ',
      `flows ${o.flows}`,
      `flowlen ${o.flowLen}`,
      ...(o.ratePps > 0 ? [`ratep ${o.ratePps}`] : []),
    ])
      cmds.push({ file: dev, command: c });
  }
  return cmds;
}

export class PktgenMissing extends DvipaError {
  constructor(dir: string) {
    super(
      `pktgen is not available here: ${dir} does not exist. On a router, load it with 'modprobe pktgen' (CONFIG_NET_PKTGEN); ` +
        'on a machine without it, --generator live sends real frames through the lab instead',
    );
  }
}

/** Writes the commands, one write each, as pktgen expects them. */
export function configurePktgen(cmds: PktgenCommand[], dir = PKTGEN_DIR): void {
  if (!fs.existsSync(path.join(dir, 'pgctrl'))) throw new PktgenMissing(dir);
  for (const c of cmds) {
    const f = path.join(dir, c.file);
    // A thread's file exists before we write to it; a device's appears with add_device.
    if (c.file.startsWith('kpktgend_') && !fs.existsSync(f))
      throw new Error(`${f}: no such pktgen thread (fewer CPUs than --threads?)`);
    fs.appendFileSync(f, `${c.command}\n`);
  }
}

export interface PktgenResult {
  device: string;
  packets: number;
  usec: number;
  pps: number;
  errors: number;
}

/**
 * A device file's result after the run, e.g.
 *   Result: OK: 10000007(c9999712+d295) usec, 11463280 (64byte,0frags)
 *   1146328pps 586Mb/sec (586919936bps) errors: 0
 */
export function parsePktgenResult(device: string, text: string): PktgenResult | undefined {
  const m = /Result: OK: (\d+)\(.*?\) usec, (\d+) \(/.exec(text);
  const p = /(\d+)pps .*errors: (\d+)/.exec(text);
  if (!m || !p) return undefined;
  return { device, usec: Number(m[1]), packets: Number(m[2]), pps: Number(p[1]), errors: Number(p[2]) };
}

/** The devices a thread's file lists as running ("Running: eth0@0 eth0@1 \nStopped: ..."). */
export function runningDevices(threadFile: string): string[] {
  return (/^Running: (.*)$/m.exec(threadFile)?.[1] ?? '').split(' ').filter(Boolean);
}

const START_TIMEOUT_MS = 10_000;

/**
 * Starts the threads configured with the same options and reads each device's result when
 * the run ends. A counted run (a rate: count = rate x seconds) ends by itself; `seconds` then
 * only bounds it, at three times its length and 5 s more, for a rate the machine cannot keep.
 * An uncounted run is stopped `seconds` after every device runs.
 */
export async function runPktgen(
  dir: string,
  o: Pick<PktgenOptions, 'device' | 'threads' | 'durationS' | 'ratePps'>,
): Promise<PktgenResult[]> {
  const { device, threads, durationS: seconds } = o;
  const ctl = path.join(dir, 'pgctrl');
  let ended = false;
  // "start" blocks its writer until the run ends: written from the thread pool, stopped from here.
  const running = fs.promises.appendFile(ctl, 'start\n').finally(() => {
    ended = true;
  });
  const stop = () => {
    if (!ended) fs.appendFileSync(ctl, 'stop\n');
  };
  // The run is timed from when every device runs, not from the write: the write reaches pktgen
  // through the thread pool and pktgen readies each device first, which took most of a second
  // in the emulated kernel lab, where a 1 s timer from the write once left a run of 61 ms.
  const started = () =>
    Array.from({ length: threads }, (_, t) => t).every((t) =>
      runningDevices(fs.readFileSync(path.join(dir, `kpktgend_${t}`), 'utf8')).includes(`${device}@${t}`),
    );
  const startBy = Date.now() + START_TIMEOUT_MS;
  while (!ended && !started()) {
    if (Date.now() > startBy) {
      stop();
      await running;
      throw new Error(`pktgen: ${device} not running ${START_TIMEOUT_MS / 1000} s after start`);
    }
    await sleep(20);
  }
  const bound = countOf(o) > 0 ? seconds * 3000 + 5000 : seconds * 1000;
  const timer = new AbortController();
  await Promise.race([running, sleep(bound, undefined, { signal: timer.signal }).catch(() => undefined)]);
  timer.abort();
  stop();
  await running;
  const results: PktgenResult[] = [];
  for (let t = 0; t < threads; t++) {
    const dev = `${device}@${t}`;
    const r = parsePktgenResult(dev, fs.readFileSync(path.join(dir, dev), 'utf8'));
    if (!r) throw new Error(`${path.join(dir, dev)}: no result from pktgen`);
    results.push(r);
  }
  return results;
}
