/*
 * Ethernet/IPv4/TCP/UDP/ICMP frames: building them with correct checksums (tests, the
 * benchmark, fixtures), and parsing them, including IPIP and the original header quoted
 * by ICMP errors. The parser never throws: what it cannot parse it reports in `error`.
 */
import { formatIpv4, formatIpv6, formatMac, parseIpv4, parseMac } from './addr.js';
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
  /** IPIP: the encapsulated packet; protocol 41: an IPv6 one. */
  inner?: Ipv4;
  inner6?: Ipv6;
  /** A packet quoted by an ICMP error carries only 8 bytes of its transport header. */
  quotedPorts?: { sport: number; dport: number };
  tcp?: Tcp;
  udp?: Udp;
  icmp?: Icmp;
}

/** An IPv6 packet, its extension headers walked (at most EXT_MAX of them). */
export interface Ipv6 {
  src: string;
  dst: string;
  payloadLength: number;
  hopLimit: number;
  /** The header after the extension headers: the upper layer's protocol. */
  nexthdr: number;
  fragment?: { offset: number; more: boolean };
  /** Next header 4 / 41: the tunnelled packet. */
  inner?: Ipv4;
  inner6?: Ipv6;
  tcp?: Tcp;
  udp?: Udp;
  icmpv6?: { type: number; code: number; checksumOk: boolean };
}

export interface ParsedFrame {
  eth?: { dst: string; src: string; vlan?: number; ethertype: number };
  ipv4?: Ipv4;
  ipv6?: Ipv6;
  error?: string;
}

const IPPROTO_IPV6 = 41;
const IPPROTO_ICMPV6 = 58;
/** Hop-by-hop, routing, destination options: (length + 1) * 8 bytes; fragment: 8. */
const EXT_HEADERS = new Set([0, 43, 60]);
const EXT_FRAGMENT = 44;
const EXT_MAX = 8;

/**
 * The TCP or UDP header of a segment. `ok`: its checksum with the pseudo-header is right;
 * `whole`: the segment is all there (a fragment's checksum cannot be checked).
 */
function transport(
  proto: number,
  body: Buffer,
  whole: boolean,
  ok: () => boolean,
  out: { error?: string },
): { tcp?: Tcp; udp?: Udp } {
  if (proto === PROTO.tcp) {
    if (body.length < 20) {
      out.error = `TCP header truncated (${body.length} bytes)`;
      return {};
    }
    const f = body[13];
    return {
      tcp: {
        sport: body.readUInt16BE(0),
        dport: body.readUInt16BE(2),
        seq: body.readUInt32BE(4),
        ack: body.readUInt32BE(8),
        flags: { fin: !!(f & 1), syn: !!(f & 2), rst: !!(f & 4), psh: !!(f & 8), ack: !!(f & 16) },
        checksumOk: whole && ok(),
      },
    };
  }
  if (body.length < 8) {
    out.error = `UDP header truncated (${body.length} bytes)`;
    return {};
  }
  return {
    udp: {
      sport: body.readUInt16BE(0),
      dport: body.readUInt16BE(2),
      length: body.readUInt16BE(4),
      checksumOk: whole && (body.readUInt16BE(6) === 0 || ok()),
    },
  };
}

function parseIpv6Packet(b: Buffer, out: { error?: string }): Ipv6 | undefined {
  if (b.length < 40) return void (out.error = `IPv6 header truncated (${b.length} bytes)`);
  if (b[0] >> 4 !== 6) return void (out.error = `IP version ${b[0] >> 4}`);
  const ip: Ipv6 = {
    src: formatIpv6(b.subarray(8, 24)),
    dst: formatIpv6(b.subarray(24, 40)),
    payloadLength: b.readUInt16BE(4),
    hopLimit: b[7],
    nexthdr: b[6],
  };
  if (40 + ip.payloadLength > b.length) {
    out.error = `IPv6 payload length ${ip.payloadLength} does not fit the ${b.length - 40} bytes present`;
    return ip;
  }
  const end = 40 + ip.payloadLength;
  let off = 40;
  for (let n = 0; EXT_HEADERS.has(ip.nexthdr) || ip.nexthdr === EXT_FRAGMENT; n++) {
    const len = ip.nexthdr === EXT_FRAGMENT ? 8 : (b[off + 1] + 1) * 8;
    if (n === EXT_MAX || off + len > end) {
      out.error = 'IPv6 extension headers beyond the walk';
      return ip;
    }
    if (ip.nexthdr === EXT_FRAGMENT) {
      const v = b.readUInt16BE(off + 2);
      ip.fragment = { offset: v >> 3, more: (v & 1) === 1 };
    }
    ip.nexthdr = b[off];
    off += len;
  }
  if (ip.fragment && (ip.fragment.offset || ip.fragment.more)) return ip;
  const body = b.subarray(off, end);
  const [src, dst] = [b.subarray(8, 24), b.subarray(24, 40)];
  if (ip.nexthdr === PROTO.tcp || ip.nexthdr === PROTO.udp)
    Object.assign(
      ip,
      transport(ip.nexthdr, body, true, () => l4Checksum(src, dst, ip.nexthdr, body) === 0, out),
    );
  else if (ip.nexthdr === IPPROTO_ICMPV6 && body.length >= 4)
    ip.icmpv6 = { type: body[0], code: body[1], checksumOk: l4Checksum(src, dst, IPPROTO_ICMPV6, body) === 0 };
  else if (ip.nexthdr === PROTO.ipip) ip.inner = parseIpv4Packet(body, out);
  else if (ip.nexthdr === IPPROTO_IPV6) ip.inner6 = parseIpv6Packet(body, out);
  return ip;
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
    case IPPROTO_IPV6:
      ip.inner6 = parseIpv6Packet(body, out);
      break;
    case PROTO.tcp:
    case PROTO.udp:
      Object.assign(
        ip,
        transport(ip.protocol, body, !ip.mf, () => l4Checksum(src, dst, ip.protocol, body) === 0, out),
      );
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
  if (ethertype === ETH_P_IPV6) out.ipv6 = parseIpv6Packet(frame.subarray(off), out);
  return out;
}

/** The CRT key of a frame's packet, for TCP/UDP that is not a fragment (either family). */
export function flowOf(p: ParsedFrame): Flow | undefined {
  const ip = p.ipv4;
  const l4 = ip?.tcp ?? ip?.udp;
  if (ip && l4 && !ip.mf && !ip.fragOffset)
    return { saddr: ip.src, daddr: ip.dst, sport: l4.sport, dport: l4.dport, proto: ip.protocol };
  const ip6 = p.ipv6;
  const l46 = ip6?.tcp ?? ip6?.udp;
  if (!ip6 || !l46) return undefined;
  return { saddr: ip6.src, daddr: ip6.dst, sport: l46.sport, dport: l46.dport, proto: ip6.nexthdr };
}

/** Where a tunnelled frame goes: the outer destination of IPIP, IPv6-in-IPv6 and the mixed forms. */
export function tunnelDestination(p: ParsedFrame): string | undefined {
  if (p.ipv4 && (p.ipv4.inner || p.ipv4.inner6)) return p.ipv4.dst;
  if (p.ipv6 && (p.ipv6.inner || p.ipv6.inner6)) return p.ipv6.dst;
  return undefined;
}

function describeIpv6(ip: Ipv6): string {
  const f = ip.fragment && (ip.fragment.offset || ip.fragment.more) ? ` frag(off ${ip.fragment.offset * 8})` : '';
  const inner = ip.inner ? describeIpv4(ip.inner) : ip.inner6 ? describeIpv6(ip.inner6) : undefined;
  if (inner) return `IP6IP ${ip.src} > ${ip.dst} [${inner}]`;
  const l4 = ip.tcp ?? ip.udp;
  if (ip.tcp) {
    const g = ip.tcp.flags;
    const flags = `${g.syn ? 'S' : ''}${g.fin ? 'F' : ''}${g.rst ? 'R' : ''}${g.psh ? 'P' : ''}${g.ack ? '.' : ''}`;
    return `TCP [${ip.src}]:${ip.tcp.sport} > [${ip.dst}]:${ip.tcp.dport} [${flags}] len ${ip.payloadLength}${f}`;
  }
  if (l4) return `UDP [${ip.src}]:${l4.sport} > [${ip.dst}]:${l4.dport} len ${ip.payloadLength}${f}`;
  if (ip.icmpv6) return `ICMP6 ${ip.src} > ${ip.dst} type ${ip.icmpv6.type} code ${ip.icmpv6.code}`;
  return `IPv6 next ${ip.nexthdr} ${ip.src} > ${ip.dst}${f}`;
}

function describeIpv4(ip: Ipv4): string {
  const frag = ip.mf || ip.fragOffset ? ` frag(off ${ip.fragOffset * 8}${ip.mf ? ', MF' : ''})` : '';
  if (ip.inner) return `IPIP ${ip.src} > ${ip.dst} [${describeIpv4(ip.inner)}]`;
  if (ip.inner6) return `IPIP ${ip.src} > ${ip.dst} [${describeIpv6(ip.inner6)}]`;
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
  if (p.ipv6) return `${vlan}${describeIpv6(p.ipv6)}${p.error ? ` (${p.error})` : ''}`;
  if (p.eth)
    return `${vlan}ethertype 0x${p.eth.ethertype.toString(16).padStart(4, '0')}${p.error ? ` (${p.error})` : ''}`;
  return p.error ?? 'empty frame';
}
