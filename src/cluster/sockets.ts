/*
 * The TCP sockets of this node's network namespace, from /proc/net/tcp and tcp6: listeners
 * (for SRVSTAT) and connections (for NEWCONN/TERMCONN). This is the reconciliation path: a
 * full scan that catches whatever events were missed. Addresses of both families, IPv6 in
 * RFC 5952 form. A dual-stack socket on :: serves IPv4 too (it is the default of many
 * servers, Node's included): :: is the wildcard of both families, and ::ffff:a.b.c.d is
 * a.b.c.d. (/proc does not show IPV6_V6ONLY: a v6-only listener on :: is taken to serve
 * IPv4 as well, and the IPv4 DVIPA's connections then fail as they would on z/OS's stack.)
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { formatIpv4, formatIpv6, ipFamily } from '../net/addr.js';

export interface SocketEntry {
  local: string;
  localPort: number;
  remote: string;
  remotePort: number;
  state: TcpState;
}

export type TcpState =
  | 'established'
  | 'syn_sent'
  | 'syn_recv'
  | 'fin_wait1'
  | 'fin_wait2'
  | 'time_wait'
  | 'close'
  | 'close_wait'
  | 'last_ack'
  | 'listen'
  | 'closing'
  | 'new_syn_recv';

/** By the kernel's number (include/net/tcp_states.h), from 1. */
export const TCP_STATES: readonly TcpState[] = [
  'established',
  'syn_sent',
  'syn_recv',
  'fin_wait1',
  'fin_wait2',
  'time_wait',
  'close',
  'close_wait',
  'last_ack',
  'listen',
  'closing',
  'new_syn_recv',
];
const LITTLE = os.endianness() === 'LE';

/** The kernel prints each 32-bit word of an address as a host-order number. */
function word(hex: string): number {
  const n = parseInt(hex, 16) >>> 0;
  return LITTLE ? (((n & 0xff) << 24) | ((n & 0xff00) << 8) | ((n >>> 8) & 0xff00) | (n >>> 24)) >>> 0 : n;
}

function address(hex: string): string | undefined {
  if (!/^[\da-fA-F]+$/.test(hex)) return undefined;
  if (hex.length === 8) return formatIpv4(word(hex));
  if (hex.length !== 32) return undefined;
  const w = [0, 8, 16, 24].map((i) => word(hex.slice(i, i + 8)));
  if (w[0] === 0 && w[1] === 0 && w[2] === 0xffff) return formatIpv4(w[3]);
  const b = Buffer.alloc(16);
  w.forEach((x, i) => b.writeUInt32BE(x, i * 4));
  return formatIpv6(b);
}

export function parseProcNetTcp(text: string): SocketEntry[] {
  const out: SocketEntry[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const [la, lp] = f[1].split(':');
    const [ra, rp] = f[2].split(':');
    const state = TCP_STATES[parseInt(f[3], 16) - 1];
    const local = address(la);
    const remote = address(ra);
    if (!state || !lp || !rp || local === undefined || remote === undefined) continue;
    out.push({ local, localPort: parseInt(lp, 16), remote, remotePort: parseInt(rp, 16), state });
  }
  return out;
}

export function readSockets(): SocketEntry[] {
  const v6 = fs.existsSync('/proc/net/tcp6') ? parseProcNetTcp(fs.readFileSync('/proc/net/tcp6', 'utf8')) : [];
  return [...parseProcNetTcp(fs.readFileSync('/proc/net/tcp', 'utf8')), ...v6];
}

/**
 * Listening on `dvipa:port` (`port` undefined: any port) itself or on a wildcard address
 * that covers it (:: covers both families).
 */
export function listensOn(sockets: readonly SocketEntry[], dvipa: string, port?: number): boolean {
  const wildcards = ipFamily(dvipa) === 6 ? ['::'] : ['0.0.0.0', '::'];
  return sockets.some(
    (s) =>
      s.state === 'listen' &&
      (port === undefined || s.localPort === port) &&
      (s.local === dvipa || wildcards.includes(s.local)),
  );
}

/** Connections whose local address is one of `dvipas`, as the routing node keys them (client first). */
export function connectionsOn(
  sockets: readonly SocketEntry[],
  dvipas: ReadonlySet<string>,
): Array<{ saddr: string; daddr: string; sport: number; dport: number }> {
  return sockets
    .filter((s) => dvipas.has(s.local) && s.state !== 'listen' && s.state !== 'time_wait' && s.state !== 'close')
    .map((s) => ({ saddr: s.remote, daddr: s.local, sport: s.remotePort, dport: s.localPort }));
}
