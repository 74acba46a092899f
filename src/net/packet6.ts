/*
 * Ethernet/IPv6 frames with TCP/UDP and extension headers, with correct checksums (tests,
 * the benchmark), and the reading of the tunnelled and ICMPv6 frames the data plane makes.
 */
import { formatIpv4, formatIpv6, parseIpv6, parseMac } from './addr.js';
import { l4Checksum } from './checksum.js';
import { ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, transportSegment } from './packet.js';
import type { Flow } from './flow.js';

export const NEXTHDR = {
  hop: 0,
  tcp: 6,
  udp: 17,
  ipv6inip: 41,
  routing: 43,
  fragment: 44,
  icmpv6: 58,
  none: 59,
  dest: 60,
} as const;

/** An extension header: its type and body (padded by the builder to 8-byte units). */
export interface ExtHeader {
  type: 'hop' | 'routing' | 'dest' | 'fragment';
  /** fragment: the offset in 8-byte units and the M flag. */
  fragOffset?: number;
  more?: boolean;
  /** hop/routing/dest: body length in bytes after the 2-byte header (rounded up to 8n + 6). */
  bodyLength?: number;
}

export interface Frame6Spec {
  srcMac?: string;
  dstMac?: string;
  vlan?: number;
  saddr: string;
  daddr: string;
  trafficClass?: number;
  hopLimit?: number;
  ext?: ExtHeader[];
  protocol?: 'tcp' | 'udp' | 'icmpv6';
  sport?: number;
  dport?: number;
  syn?: boolean;
  ack?: boolean;
  /** ICMPv6 type and the body after its 4-byte header. */
  icmpType?: number;
  icmpBody?: Buffer;
  payload?: Buffer | number;
}

/*
 * l4Checksum's pseudo-header sum is IPv6's too (RFC 8200 8.1): the 32-bit length and next
 * header sum as the IPv4 fields do, for anything shorter than 64 KiB.
 */
function upperLayer(spec: Frame6Spec, src: Buffer, dst: Buffer): { nh: number; l4: Buffer } {
  const protocol = spec.protocol ?? 'tcp';
  if (protocol !== 'icmpv6') {
    const { proto, l4 } = transportSegment({ ...spec, protocol, tcpFlags: { syn: spec.syn, ack: spec.ack } }, src, dst);
    return { nh: proto, l4 };
  }
  const msg = Buffer.concat([Buffer.from([spec.icmpType ?? 128, 0, 0, 0]), spec.icmpBody ?? Buffer.alloc(4)]);
  msg.writeUInt16BE(l4Checksum(src, dst, NEXTHDR.icmpv6, msg), 2);
  return { nh: NEXTHDR.icmpv6, l4: msg };
}

function extHeader(h: ExtHeader, next: number): Buffer {
  if (h.type === 'fragment') {
    const b = Buffer.alloc(8);
    b[0] = next;
    b.writeUInt16BE(((h.fragOffset ?? 0) << 3) | (h.more ? 1 : 0), 2);
    b.writeUInt32BE(0x1234, 4);
    return b;
  }
  const units = Math.ceil(((h.bodyLength ?? 6) + 2) / 8);
  const b = Buffer.alloc(units * 8);
  b[0] = next;
  b[1] = units - 1;
  b[2] = 1; // a PadN option filling the rest
  b[3] = b.length - 4;
  return b;
}

/** An IPv6 packet (no L2) around an upper-layer message, behind the extension headers given. */
export function buildIpv6(spec: Frame6Spec): Buffer {
  const src = parseIpv6(spec.saddr);
  const dst = parseIpv6(spec.daddr);
  const { nh, l4 } = upperLayer(spec, src, dst);
  const ext = spec.ext ?? [];
  const codes = ext.map((e) => NEXTHDR[e.type]);
  const headers = ext.map((e, i) => extHeader(e, i + 1 < ext.length ? codes[i + 1] : nh));
  const body = Buffer.concat([...headers, l4]);
  const ip = Buffer.alloc(40);
  ip.writeUInt32BE((6 << 28) | ((spec.trafficClass ?? 0) << 20), 0);
  ip.writeUInt16BE(body.length, 4);
  ip[6] = ext.length ? codes[0] : nh;
  ip[7] = spec.hopLimit ?? 64;
  src.copy(ip, 8);
  dst.copy(ip, 24);
  return Buffer.concat([ip, body]);
}

/** Ethernet (optionally one 802.1Q tag) of the given type around `packet`. */
export function ethernetAround(
  packet: Buffer,
  ethertype: number,
  spec: Pick<Frame6Spec, 'srcMac' | 'dstMac' | 'vlan'> = {},
): Buffer {
  const eth = Buffer.alloc(spec.vlan === undefined ? 14 : 18);
  parseMac(spec.dstMac ?? '02:00:00:00:00:02').copy(eth, 0);
  parseMac(spec.srcMac ?? '02:00:00:00:00:01').copy(eth, 6);
  if (spec.vlan === undefined) eth.writeUInt16BE(ethertype, 12);
  else {
    eth.writeUInt16BE(ETH_P_8021Q, 12);
    eth.writeUInt16BE(spec.vlan & 0xfff, 14);
    eth.writeUInt16BE(ethertype, 16);
  }
  return Buffer.concat([eth, packet]);
}

/** Where fields sit in a default IPv6 frame (untagged, no extension headers): the last word of the source, and the ports. */
export const FRAME6_OFFSETS = { saddr: 14 + 8 + 12, sport: 14 + 40, dport: 14 + 42 } as const;

export function buildFrame6(spec: Frame6Spec): Buffer {
  return ethernetAround(buildIpv6(spec), ETH_P_IPV6, spec);
}

/** The fixed IPv6 header of a packet. */
export interface Ipv6Header {
  trafficClass: number;
  payloadLength: number;
  nexthdr: number;
  hopLimit: number;
  src: string;
  dst: string;
}

export function readIpv6(b: Buffer): Ipv6Header {
  if (b.length < 40 || b[0] >> 4 !== 6) throw new RangeError('not an IPv6 header');
  return {
    trafficClass: (b.readUInt32BE(0) >>> 20) & 0xff,
    payloadLength: b.readUInt16BE(4),
    nexthdr: b[6],
    hopLimit: b[7],
    src: formatIpv6(b.subarray(8, 24)),
    dst: formatIpv6(b.subarray(24, 40)),
  };
}

/** The L3 ethertype and offset of a frame (one 802.1Q/802.1ad tag understood). */
function l3Of(frame: Buffer): { type: number; off: number } | undefined {
  if (frame.length < 14) return undefined;
  const type = frame.readUInt16BE(12);
  if (type !== ETH_P_8021Q && type !== 0x88a8) return { type, off: 14 };
  return frame.length < 18 ? undefined : { type: frame.readUInt16BE(16), off: 18 };
}

const EXT = new Set<number>([NEXTHDR.hop, NEXTHDR.routing, NEXTHDR.dest]);

/**
 * An IPv6 packet's upper layer as the data plane finds it: extension headers walked (at
 * most 4, bpf/parse.h), a fragment header stops the walk. Undefined if it is cut short.
 */
export function upperOf6(packet: Buffer): { nexthdr: number; off: number; fragment: boolean } | undefined {
  let nexthdr = packet[6];
  let off = 40;
  for (let i = 0; i <= 4 && EXT.has(nexthdr); i++) {
    if (i === 4 || packet.length < off + 2) return undefined;
    nexthdr = packet[off];
    off += (packet[off + 1] + 1) * 8;
  }
  return { nexthdr, off, fragment: nexthdr === NEXTHDR.fragment };
}

/** The CRT key of an IPv6 frame's TCP/UDP packet that is not a fragment. */
export function flowOf6(frame: Buffer): Flow | undefined {
  const l3 = l3Of(frame);
  if (l3?.type !== ETH_P_IPV6 || frame.length < l3.off + 40) return undefined;
  const packet = frame.subarray(l3.off);
  // An IPv6 EtherType does not make an IPv6 header (a capture holds whatever was sent).
  if (packet[0] >> 4 !== 6) return undefined;
  const up = upperOf6(packet);
  if (!up || up.fragment || (up.nexthdr !== NEXTHDR.tcp && up.nexthdr !== NEXTHDR.udp)) return undefined;
  if (packet.length < up.off + 4) return undefined;
  const h = readIpv6(packet);
  return {
    saddr: h.src,
    daddr: h.dst,
    sport: packet.readUInt16BE(up.off),
    dport: packet.readUInt16BE(up.off + 2),
    proto: up.nexthdr,
  };
}

/** One line for an IPv6 frame, tcpdump-like; undefined for any other frame. */
export function describeFrame6(frame: Buffer): string | undefined {
  const l3 = l3Of(frame);
  if (l3?.type !== ETH_P_IPV6) return undefined;
  const vlan = l3.off === 18 ? `vlan ${frame.readUInt16BE(14) & 0xfff} ` : '';
  const packet = frame.subarray(l3.off);
  if (packet.length < 40 || packet[0] >> 4 !== 6) return `${vlan}IPv6 (header truncated or not version 6)`;
  const h = readIpv6(packet);
  const up = upperOf6(packet);
  const len = `len ${40 + h.payloadLength}`;
  if (!up) return `${vlan}IPv6 ${h.src} > ${h.dst} (extension headers truncated or too many) ${len}`;
  if (up.fragment) return `${vlan}IPv6 ${h.src} > ${h.dst} fragment ${len}`;
  const l4 = packet.subarray(up.off);
  if ((up.nexthdr === NEXTHDR.tcp && l4.length >= 14) || (up.nexthdr === NEXTHDR.udp && l4.length >= 4)) {
    const ports = `[${h.src}]:${l4.readUInt16BE(0)} > [${h.dst}]:${l4.readUInt16BE(2)}`;
    if (up.nexthdr === NEXTHDR.udp) return `${vlan}UDP ${ports} ${len}`;
    const f = l4[13];
    const flags = `${f & 2 ? 'S' : ''}${f & 1 ? 'F' : ''}${f & 4 ? 'R' : ''}${f & 8 ? 'P' : ''}${f & 16 ? '.' : ''}`;
    return `${vlan}TCP ${ports} [${flags}] ${len}`;
  }
  if (up.nexthdr === NEXTHDR.icmpv6 && l4.length >= 2)
    return `${vlan}ICMPv6 ${h.src} > ${h.dst} type ${l4[0]} code ${l4[1]} ${len}`;
  return `${vlan}IPv6 next header ${up.nexthdr} ${h.src} > ${h.dst} ${len}`;
}

/** The outer destination of a tunnelled frame, any of IPv4/IPv6 in IPv4/IPv6; undefined if it is none. */
export function tunnelTarget(frame: Buffer): string | undefined {
  const l3 = l3Of(frame);
  const tunnelled = (proto: number) => proto === 4 || proto === NEXTHDR.ipv6inip;
  if (l3?.type === ETH_P_IPV6 && frame.length >= l3.off + 40) {
    const h = readIpv6(frame.subarray(l3.off));
    return tunnelled(h.nexthdr) ? h.dst : undefined;
  }
  if (l3?.type === ETH_P_IP && frame.length >= l3.off + 20 && tunnelled(frame[l3.off + 9]))
    return formatIpv4(frame.readUInt32BE(l3.off + 16));
  return undefined;
}
