/*
 * Ethernet/IPv4/TCP/UDP/ICMP frames: building them with correct checksums (tests, the
 * benchmark, fixtures), and parsing them, including IPIP and the original header quoted
 * by ICMP errors. The parser never throws: what it cannot parse it reports in `error`.
 */
import { formatIpv4, formatMac, parseIpv4, parseMac } from './addr.js';
import { checksum, l4Checksum } from './checksum.js';
import type { Flow } from './flow.js';

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const PROTO = { icmp: 1, ipip: 4, tcp: 6, udp: 17 } as const;

export interface TcpFlags {
  syn?: boolean;
  ack?: boolean;
  fin?: boolean;
  rst?: boolean;
  psh?: boolean;
}

export interface FrameSpec {
  srcMac?: string;
  dstMac?: string;
  /** One 802.1Q tag with this VLAN id. */
  vlan?: number;
  saddr: string;
  daddr: string;
  ttl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** In 8-byte units. */
  fragOffset?: number;
  /** Raw IPv4 options, padded by the caller to a multiple of 4 bytes. */
  ipOptions?: Buffer;
  protocol?: 'tcp' | 'udp' | 'icmp';
  sport?: number;
  dport?: number;
  tcpFlags?: TcpFlags;
  seq?: number;
  ackNum?: number;
  /** Payload bytes, or a length of zero-filled payload. */
  payload?: Buffer | number;
}

/** Where fields sit in a default frame (untagged, no IP options). */
export const FRAME_OFFSETS = { saddr: 14 + 12, daddr: 14 + 16, sport: 14 + 20, dport: 14 + 22 } as const;

function tcpFlagByte(f: TcpFlags = {}): number {
  return (f.fin ? 1 : 0) | (f.syn ? 2 : 0) | (f.rst ? 4 : 0) | (f.psh ? 8 : 0) | (f.ack ? 16 : 0);
}

/** An IPv4 packet (no L2) around `l4`, with its header checksum. */
export function buildIpv4(spec: Omit<FrameSpec, 'protocol'> & { proto: number }, l4: Buffer): Buffer {
  const opts = spec.ipOptions ?? Buffer.alloc(0);
  if (opts.length % 4 || opts.length > 40)
    throw new RangeError('IPv4 options must be a multiple of 4 bytes, at most 40');
  const hlen = 20 + opts.length;
  const ip = Buffer.alloc(hlen);
  ip[0] = 0x40 | (hlen / 4);
  ip[1] = spec.tos ?? 0;
  ip.writeUInt16BE(hlen + l4.length, 2);
  ip.writeUInt16BE(spec.id ?? 0, 4);
  ip.writeUInt16BE((spec.df ? 0x4000 : 0) | (spec.mf ? 0x2000 : 0) | ((spec.fragOffset ?? 0) & 0x1fff), 6);
  ip[8] = spec.ttl ?? 64;
  ip[9] = spec.proto;
  ip.writeUInt32BE(parseIpv4(spec.saddr), 12);
  ip.writeUInt32BE(parseIpv4(spec.daddr), 16);
  opts.copy(ip, 20);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([ip, l4]);
}

function buildL4(spec: FrameSpec): { proto: number; l4: Buffer } {
  const payload = typeof spec.payload === 'number' ? Buffer.alloc(spec.payload) : (spec.payload ?? Buffer.alloc(0));
  const src = Buffer.alloc(4);
  const dst = Buffer.alloc(4);
  src.writeUInt32BE(parseIpv4(spec.saddr));
  dst.writeUInt32BE(parseIpv4(spec.daddr));
  switch (spec.protocol ?? 'tcp') {
    case 'tcp': {
      const h = Buffer.alloc(20);
      h.writeUInt16BE(spec.sport ?? 40000, 0);
      h.writeUInt16BE(spec.dport ?? 80, 2);
      h.writeUInt32BE((spec.seq ?? 1) >>> 0, 4);
      h.writeUInt32BE((spec.ackNum ?? 0) >>> 0, 8);
      h[12] = 5 << 4;
      h[13] = tcpFlagByte(spec.tcpFlags);
      h.writeUInt16BE(65535, 14);
      const seg = Buffer.concat([h, payload]);
      seg.writeUInt16BE(l4Checksum(src, dst, PROTO.tcp, seg), 16);
      return { proto: PROTO.tcp, l4: seg };
    }
    case 'udp': {
      const h = Buffer.alloc(8);
      h.writeUInt16BE(spec.sport ?? 40000, 0);
      h.writeUInt16BE(spec.dport ?? 53, 2);
      h.writeUInt16BE(8 + payload.length, 4);
      const seg = Buffer.concat([h, payload]);
      seg.writeUInt16BE(l4Checksum(src, dst, PROTO.udp, seg) || 0xffff, 6);
      return { proto: PROTO.udp, l4: seg };
    }
    case 'icmp': {
      const h = Buffer.alloc(8);
      h[0] = 8; // echo request
      h.writeUInt16BE(spec.id ?? 1, 4);
      h.writeUInt16BE(spec.seq ?? 1, 6);
      const msg = Buffer.concat([h, payload]);
      msg.writeUInt16BE(checksum(msg), 2);
      return { proto: PROTO.icmp, l4: msg };
    }
  }
}

function ethernet(spec: Pick<FrameSpec, 'srcMac' | 'dstMac' | 'vlan'>, ethertype: number): Buffer {
  const eth = Buffer.alloc(spec.vlan === undefined ? 14 : 18);
  parseMac(spec.dstMac ?? '02:00:00:00:00:02').copy(eth, 0);
  parseMac(spec.srcMac ?? '02:00:00:00:00:01').copy(eth, 6);
  if (spec.vlan === undefined) {
    eth.writeUInt16BE(ethertype, 12);
  } else {
    eth.writeUInt16BE(ETH_P_8021Q, 12);
    eth.writeUInt16BE(spec.vlan & 0xfff, 14);
    eth.writeUInt16BE(ethertype, 16);
  }
  return eth;
}

export function buildFrame(spec: FrameSpec): Buffer {
  const { proto, l4 } = buildL4(spec);
  return Buffer.concat([ethernet(spec, ETH_P_IP), buildIpv4({ ...spec, proto }, l4)]);
}

/** A frame of any ethertype around a raw payload (ARP, IPv6, garbage). */
export function buildRawFrame(
  ethertype: number,
  payload: Buffer,
  l2: Pick<FrameSpec, 'srcMac' | 'dstMac' | 'vlan'> = {},
): Buffer {
  return Buffer.concat([ethernet(l2, ethertype), payload]);
}

export interface Tcp {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: Required<TcpFlags>;
  checksumOk: boolean;
}
export interface Udp {
  sport: number;
  dport: number;
  length: number;
  checksumOk: boolean;
}
export interface Icmp {
  type: number;
  code: number;
  checksumOk: boolean;
  mtu?: number;
  quoted?: Ipv4;
}

export interface Ipv4 {
  ihl: number;
  tos: number;
  totalLength: number;
  id: number;
  df: boolean;
  mf: boolean;
  fragOffset: number;
  ttl: number;
  protocol: number;
  checksumOk: boolean;
  src: string;
  dst: string;
  options: Buffer;
  /** IPIP: the encapsulated packet. */
  inner?: Ipv4;
  /** A packet quoted by an ICMP error carries only 8 bytes of its transport header. */
  quotedPorts?: { sport: number; dport: number };
  tcp?: Tcp;
  udp?: Udp;
  icmp?: Icmp;
}

export interface ParsedFrame {
  eth?: { dst: string; src: string; vlan?: number; ethertype: number };
  ipv4?: Ipv4;
  error?: string;
}

/**
 * Parses an IPv4 packet. `quoted`: the copy inside an ICMP error, cut after 8 bytes of
 * payload, whose lengths and checksums cannot be checked.
 */
function parseIpv4Packet(b: Buffer, out: { error?: string }, quoted = false): Ipv4 | undefined {
  if (b.length < 20) return void (out.error = `IPv4 header truncated (${b.length} bytes)`);
  if (b[0] >> 4 !== 4) return void (out.error = `IP version ${b[0] >> 4}`);
  const ihl = (b[0] & 15) * 4;
  if (ihl < 20 || b.length < ihl) return void (out.error = `bad IHL ${ihl}`);
  const frag = b.readUInt16BE(6);
  const ip: Ipv4 = {
    ihl,
    tos: b[1],
    totalLength: b.readUInt16BE(2),
    id: b.readUInt16BE(4),
    df: (frag & 0x4000) !== 0,
    mf: (frag & 0x2000) !== 0,
    fragOffset: frag & 0x1fff,
    ttl: b[8],
    protocol: b[9],
    checksumOk: checksum(b.subarray(0, ihl)) === 0,
    src: formatIpv4(b.readUInt32BE(12)),
    dst: formatIpv4(b.readUInt32BE(16)),
    options: Buffer.from(b.subarray(20, ihl)),
  };
  if (!quoted && (ip.totalLength < ihl || ip.totalLength > b.length)) {
    out.error = `IPv4 total length ${ip.totalLength} does not fit the ${b.length} bytes present`;
    return ip;
  }
  if (ip.fragOffset !== 0) return ip;
  const body = b.subarray(ihl, quoted ? b.length : ip.totalLength);
  if (quoted) {
    if ((ip.protocol === PROTO.tcp || ip.protocol === PROTO.udp) && body.length >= 4) {
      ip.quotedPorts = { sport: body.readUInt16BE(0), dport: body.readUInt16BE(2) };
    }
    return ip;
  }
  const src = b.subarray(12, 16);
  const dst = b.subarray(16, 20);
  switch (ip.protocol) {
    case PROTO.ipip:
      ip.inner = parseIpv4Packet(body, out);
      break;
    case PROTO.tcp:
      if (body.length < 20) out.error = `TCP header truncated (${body.length} bytes)`;
      else {
        const f = body[13];
        ip.tcp = {
          sport: body.readUInt16BE(0),
          dport: body.readUInt16BE(2),
          seq: body.readUInt32BE(4),
          ack: body.readUInt32BE(8),
          flags: { fin: !!(f & 1), syn: !!(f & 2), rst: !!(f & 4), psh: !!(f & 8), ack: !!(f & 16) },
          checksumOk: !ip.mf && l4Checksum(src, dst, PROTO.tcp, body) === 0,
        };
      }
      break;
    case PROTO.udp:
      if (body.length < 8) out.error = `UDP header truncated (${body.length} bytes)`;
      else {
        ip.udp = {
          sport: body.readUInt16BE(0),
          dport: body.readUInt16BE(2),
          length: body.readUInt16BE(4),
          checksumOk: !ip.mf && (body.readUInt16BE(6) === 0 || l4Checksum(src, dst, PROTO.udp, body) === 0),
        };
      }
      break;
    case PROTO.icmp:
      if (body.length < 8) out.error = `ICMP header truncated (${body.length} bytes)`;
      else {
        ip.icmp = { type: body[0], code: body[1], checksumOk: checksum(body) === 0 };
        if (body[0] === 3 || body[0] === 11) {
          if (body[0] === 3 && body[1] === 4) ip.icmp.mtu = body.readUInt16BE(6);
          ip.icmp.quoted = parseIpv4Packet(body.subarray(8), out, true);
        }
      }
      break;
  }
  return ip;
}

export function parseFrame(frame: Buffer): ParsedFrame {
  const out: ParsedFrame = {};
  if (frame.length < 14) {
    out.error = `frame of ${frame.length} bytes is shorter than an Ethernet header`;
    return out;
  }
  let off = 14;
  let ethertype = frame.readUInt16BE(12);
  let vlan: number | undefined;
  if (ethertype === ETH_P_8021Q || ethertype === 0x88a8) {
    if (frame.length < 18) {
      out.error = 'VLAN tag truncated';
      return out;
    }
    vlan = frame.readUInt16BE(14) & 0xfff;
    ethertype = frame.readUInt16BE(16);
    off = 18;
  }
  out.eth = {
    dst: formatMac(frame.subarray(0, 6)),
    src: formatMac(frame.subarray(6, 12)),
    ethertype,
    ...(vlan === undefined ? {} : { vlan }),
  };
  if (ethertype === ETH_P_IP) out.ipv4 = parseIpv4Packet(frame.subarray(off), out);
  return out;
}

/** The CRT key of a frame's packet, for TCP/UDP that is not a fragment. */
export function flowOf(p: ParsedFrame): Flow | undefined {
  const ip = p.ipv4;
  const l4 = ip?.tcp ?? ip?.udp;
  if (!ip || !l4 || ip.mf || ip.fragOffset) return undefined;
  return { saddr: ip.src, daddr: ip.dst, sport: l4.sport, dport: l4.dport, proto: ip.protocol };
}

function describeIpv4(ip: Ipv4): string {
  const frag = ip.mf || ip.fragOffset ? ` frag(off ${ip.fragOffset * 8}${ip.mf ? ', MF' : ''})` : '';
  if (ip.inner) return `IPIP ${ip.src} > ${ip.dst} [${describeIpv4(ip.inner)}]`;
  if (ip.tcp) {
    const f = ip.tcp.flags;
    const flags = `${f.syn ? 'S' : ''}${f.fin ? 'F' : ''}${f.rst ? 'R' : ''}${f.psh ? 'P' : ''}${f.ack ? '.' : ''}`;
    return `TCP ${ip.src}:${ip.tcp.sport} > ${ip.dst}:${ip.tcp.dport} [${flags}] len ${ip.totalLength}${frag}`;
  }
  if (ip.udp) return `UDP ${ip.src}:${ip.udp.sport} > ${ip.dst}:${ip.udp.dport} len ${ip.totalLength}${frag}`;
  if (ip.icmp)
    return `ICMP ${ip.src} > ${ip.dst} type ${ip.icmp.type} code ${ip.icmp.code}${ip.icmp.mtu !== undefined ? ` mtu ${ip.icmp.mtu}` : ''}`;
  return `IPv4 proto ${ip.protocol} ${ip.src} > ${ip.dst}${frag}`;
}

/** One line for a frame, tcpdump-like. */
export function describeFrame(p: ParsedFrame): string {
  const vlan = p.eth?.vlan !== undefined ? `vlan ${p.eth.vlan} ` : '';
  if (p.ipv4) return `${vlan}${describeIpv4(p.ipv4)}${p.error ? ` (${p.error})` : ''}`;
  if (p.eth)
    return `${vlan}ethertype 0x${p.eth.ethertype.toString(16).padStart(4, '0')}${p.error ? ` (${p.error})` : ''}`;
  return p.error ?? 'empty frame';
}
