/*
 * Ethernet/IPv6 frames with TCP/UDP and extension headers, with correct checksums (tests,
 * the benchmark), and the reading of the tunnelled and ICMPv6 frames the data plane makes.
 */
import { formatIpv6, parseIpv6, parseMac } from './addr.js';
import { l4Checksum } from './checksum.js';
import { ETH_P_8021Q, ETH_P_IPV6 } from './packet.js';

export const NEXTHDR = { hop: 0, tcp: 6, udp: 17, routing: 43, fragment: 44, icmpv6: 58, none: 59, dest: 60 } as const;

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
const checksum6 = l4Checksum;

function upperLayer(spec: Frame6Spec, src: Buffer, dst: Buffer): { nh: number; l4: Buffer } {
  const payload = typeof spec.payload === 'number' ? Buffer.alloc(spec.payload) : (spec.payload ?? Buffer.alloc(0));
  switch (spec.protocol ?? 'tcp') {
    case 'tcp': {
      const h = Buffer.alloc(20);
      h.writeUInt16BE(spec.sport ?? 40000, 0);
      h.writeUInt16BE(spec.dport ?? 80, 2);
      h.writeUInt32BE(1, 4);
      h[12] = 5 << 4;
      h[13] = (spec.syn ? 2 : 0) | (spec.ack ? 16 : 0);
      h.writeUInt16BE(65535, 14);
      const seg = Buffer.concat([h, payload]);
      seg.writeUInt16BE(checksum6(src, dst, NEXTHDR.tcp, seg), 16);
      return { nh: NEXTHDR.tcp, l4: seg };
    }
    case 'udp': {
      const h = Buffer.alloc(8);
      h.writeUInt16BE(spec.sport ?? 40000, 0);
      h.writeUInt16BE(spec.dport ?? 53, 2);
      h.writeUInt16BE(8 + payload.length, 4);
      const seg = Buffer.concat([h, payload]);
      seg.writeUInt16BE(checksum6(src, dst, NEXTHDR.udp, seg) || 0xffff, 6);
      return { nh: NEXTHDR.udp, l4: seg };
    }
    case 'icmpv6': {
      const msg = Buffer.concat([Buffer.from([spec.icmpType ?? 128, 0, 0, 0]), spec.icmpBody ?? Buffer.alloc(4)]);
      msg.writeUInt16BE(checksum6(src, dst, NEXTHDR.icmpv6, msg), 2);
      return { nh: NEXTHDR.icmpv6, l4: msg };
    }
  }
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
