/*
 * XFRM netlink messages, typed: IPsec SAs (xfrm_usersa_info + algorithm, replay, encapsulation
 * attributes) and policies (xfrm_userpolicy_info + templates), encoded and decoded. IPv4 and
 * IPv6, as DVIPAs are: each address (xfrm_address_t, 16 bytes) is read by the family its
 * struct states, and written with the family of the address given. The kernel UAPI layouts are written out below as offsets; test/kernel/xfrm.test.ts
 * checks each against the running kernel's BTF, so they cannot drift. Sending them is xfrm.ts.
 */
import { nlattr, nlattrs } from '../net/netlink.js';
import { DvipaError } from '../errors.js';
import { formatIpv4, formatIpv6, ipFamily, parseIpv4, parseIpv6 } from '../net/addr.js';

export const AF_INET = 2;
export const AF_INET6 = 10;

/** The address family number of an address's text form. */
export const familyOf = (ip: string) => (ipFamily(ip) === 6 ? AF_INET6 : AF_INET);

export const XFRM_MSG = {
  NEWSA: 0x10,
  DELSA: 0x11,
  GETSA: 0x12,
  NEWPOLICY: 0x13,
  DELPOLICY: 0x14,
  GETPOLICY: 0x15,
  UPDPOLICY: 0x19,
  UPDSA: 0x1a,
  FLUSHSA: 0x1c,
  FLUSHPOLICY: 0x1d,
  ACQUIRE: 0x17,
  EXPIRE: 0x18,
  NEWAE: 0x1e,
} as const;
export const XFRMA = {
  ALG_AUTH: 1,
  ALG_CRYPT: 2,
  ENCAP: 4,
  TMPL: 5,
  SA: 6,
  POLICY: 7,
  LTIME_VAL: 9,
  REPLAY_VAL: 10,
  REPLAY_THRESH: 11,
  ETIMER_THRESH: 12,
  ALG_AEAD: 18,
  ALG_AUTH_TRUNC: 20,
  MARK: 21,
  REPLAY_ESN_VAL: 23,
} as const;

/** Byte offsets and sizes of the UAPI structs used here (x86-64; checked against BTF by the tests). */
export const LAYOUT = {
  xfrm_selector: {
    size: 56,
    daddr: 0,
    saddr: 16,
    dport: 32,
    dport_mask: 34,
    sport: 36,
    sport_mask: 38,
    family: 40,
    prefixlen_d: 42,
    prefixlen_s: 43,
    proto: 44,
    ifindex: 48,
    user: 52,
  },
  xfrm_id: { size: 24, daddr: 0, spi: 16, proto: 20 },
  xfrm_lifetime_cfg: {
    size: 64,
    soft_byte_limit: 0,
    hard_byte_limit: 8,
    soft_packet_limit: 16,
    hard_packet_limit: 24,
    soft_add_expires_seconds: 32,
    hard_add_expires_seconds: 40,
    soft_use_expires_seconds: 48,
    hard_use_expires_seconds: 56,
  },
  xfrm_lifetime_cur: { size: 32, bytes: 0, packets: 8, add_time: 16, use_time: 24 },
  xfrm_usersa_info: {
    size: 224,
    sel: 0,
    id: 56,
    saddr: 80,
    lft: 96,
    curlft: 160,
    stats: 192,
    seq: 204,
    reqid: 208,
    family: 212,
    mode: 214,
    replay_window: 215,
    flags: 216,
  },
  xfrm_usersa_id: { size: 24, daddr: 0, spi: 16, family: 20, proto: 22 },
  xfrm_userpolicy_info: {
    size: 168,
    sel: 0,
    lft: 56,
    curlft: 120,
    priority: 152,
    index: 156,
    dir: 160,
    action: 161,
    flags: 162,
    share: 163,
  },
  xfrm_userpolicy_id: { size: 64, sel: 0, index: 56, dir: 60 },
  xfrm_user_tmpl: {
    size: 64,
    id: 0,
    family: 24,
    saddr: 28,
    reqid: 44,
    mode: 48,
    share: 49,
    optional: 50,
    aalgos: 52,
    ealgos: 56,
    calgos: 60,
  },
  xfrm_replay_state: { size: 12, oseq: 0, seq: 4, bitmap: 8 },
  xfrm_replay_state_esn: { size: 24, bmp_len: 0, oseq: 4, seq: 8, oseq_hi: 12, seq_hi: 16, replay_window: 20, bmp: 24 },
  xfrm_algo: { size: 68, alg_name: 0, alg_key_len: 64, alg_key: 68 },
  xfrm_algo_aead: { size: 72, alg_name: 0, alg_key_len: 64, alg_icv_len: 68, alg_key: 72 },
  xfrm_algo_auth: { size: 72, alg_name: 0, alg_key_len: 64, alg_trunc_len: 68, alg_key: 72 },
  xfrm_encap_tmpl: { size: 24, encap_type: 0, encap_sport: 2, encap_dport: 4, encap_oa: 8 },
  xfrm_mark: { size: 8, v: 0, m: 4 },
  xfrm_user_expire: { size: 232, state: 0, hard: 224 },
  xfrm_aevent_id: { size: 48, sa_id: 0, saddr: 24, flags: 40, reqid: 44 },
  xfrm_user_acquire: {
    size: 280,
    id: 0,
    saddr: 24,
    sel: 40,
    policy: 96,
    aalgos: 264,
    ealgos: 268,
    calgos: 272,
    seq: 276,
  },
  xfrm_usersa_flush: { size: 1, proto: 0 },
} as const;

const PROTO = { esp: 50, ah: 51, comp: 108 } as const;
export type IpsecProto = keyof typeof PROTO;
export const protoName = (n: number): IpsecProto | undefined =>
  (Object.keys(PROTO) as IpsecProto[]).find((k) => PROTO[k] === n);
const MODES = ['transport', 'tunnel'] as const;
export type XfrmMode = (typeof MODES)[number];
export const DIRS = ['in', 'out', 'fwd'] as const;
export type PolicyDir = (typeof DIRS)[number];

export interface Selector {
  src: string;
  srcPrefix: number;
  dst: string;
  dstPrefix: number;
  proto: number;
  sport: number;
  dport: number;
}
export const ANY_SELECTOR: Selector = {
  src: '0.0.0.0',
  srcPrefix: 0,
  dst: '0.0.0.0',
  dstPrefix: 0,
  proto: 0,
  sport: 0,
  dport: 0,
};

export interface Lifetime {
  softBytes: bigint;
  hardBytes: bigint;
  softPackets: bigint;
  hardPackets: bigint;
  softAddSec: bigint;
  hardAddSec: bigint;
  softUseSec: bigint;
  hardUseSec: bigint;
}
const INF = 0xffffffffffffffffn;
export const NO_LIMITS: Lifetime = {
  softBytes: INF,
  hardBytes: INF,
  softPackets: INF,
  hardPackets: INF,
  softAddSec: 0n,
  hardAddSec: 0n,
  softUseSec: 0n,
  hardUseSec: 0n,
};

/** The replay state: outbound sequence number, inbound highest seen, the window bitmap (ESN: also the high halves). */
export interface Replay {
  oseq: number;
  seq: number;
  oseqHi: number;
  seqHi: number;
  window: number;
  bitmap: Buffer;
  esn: boolean;
}

export interface Sa {
  src: string;
  dst: string;
  spi: number;
  proto: IpsecProto;
  mode: XfrmMode;
  reqid: number;
  flags: number;
  selector: Selector;
  enc?: { name: string; key: Buffer };
  auth?: { name: string; key: Buffer; truncBits: number };
  aead?: { name: string; key: Buffer; icvBits: number };
  encap?: { type: number; sport: number; dport: number };
  mark?: { value: number; mask: number };
  lifetime: Lifetime;
  replay: Replay;
  /** Counters at the time of the dump (not written back). */
  current?: { bytes: bigint; packets: bigint; addTime: bigint; useTime: bigint };
}

export interface Tmpl {
  src: string;
  dst: string;
  spi: number;
  proto: IpsecProto;
  mode: XfrmMode;
  reqid: number;
  optional: boolean;
}
export interface Policy {
  selector: Selector;
  dir: PolicyDir;
  action: 'allow' | 'block';
  priority: number;
  index: number;
  tmpls: Tmpl[];
}

/**
 * A refused XFRM request (the operation, the errno, and the kernel's own reason when it gives
 * one) or an XFRM message dvipa cannot read.
 */
export class XfrmError extends DvipaError {
  constructor(
    message: string,
    readonly op?: string,
    readonly code?: string,
    readonly errno?: number,
    readonly reason?: string,
    cause?: unknown,
  ) {
    super(message, undefined, { cause });
  }
}

function addr(b: Buffer, off: number, ip: string): void {
  if (ipFamily(ip) === 6) parseIpv6(ip).copy(b, off);
  else b.writeUInt32BE(parseIpv4(ip), off);
}
/** The xfrm_address_t at `off`, as `family` (AF_INET or AF_INET6) says. */
export const readAddr = (b: Buffer, off: number, family: number) =>
  family === AF_INET6 ? formatIpv6(b.subarray(off, off + 16)) : formatIpv4(b.readUInt32BE(off));

export function writeSelector(b: Buffer, off: number, s: Selector): void {
  const L = LAYOUT.xfrm_selector;
  if (familyOf(s.src) !== familyOf(s.dst)) throw new XfrmError(`selector ${s.src} -> ${s.dst}: two families`);
  addr(b, off + L.daddr, s.dst);
  addr(b, off + L.saddr, s.src);
  b.writeUInt16BE(s.dport, off + L.dport);
  b.writeUInt16BE(s.dport ? 0xffff : 0, off + L.dport_mask);
  b.writeUInt16BE(s.sport, off + L.sport);
  b.writeUInt16BE(s.sport ? 0xffff : 0, off + L.sport_mask);
  b.writeUInt16LE(familyOf(s.dst), off + L.family);
  b.writeUInt8(s.dstPrefix, off + L.prefixlen_d);
  b.writeUInt8(s.srcPrefix, off + L.prefixlen_s);
  b.writeUInt8(s.proto, off + L.proto);
}

/** `family`: the enclosing SA's or policy's, for a selector whose own is AF_UNSPEC (the kernel then uses that). */
export function readSelector(b: Buffer, off: number, family = AF_INET): Selector {
  const L = LAYOUT.xfrm_selector;
  const f = b.readUInt16LE(off + L.family) || family;
  return {
    dst: readAddr(b, off + L.daddr, f),
    src: readAddr(b, off + L.saddr, f),
    dport: b.readUInt16BE(off + L.dport),
    sport: b.readUInt16BE(off + L.sport),
    dstPrefix: b.readUInt8(off + L.prefixlen_d),
    srcPrefix: b.readUInt8(off + L.prefixlen_s),
    proto: b.readUInt8(off + L.proto),
  };
}

function writeLifetime(b: Buffer, off: number, l: Lifetime): void {
  const L = LAYOUT.xfrm_lifetime_cfg;
  const v: Array<[number, bigint]> = [
    [L.soft_byte_limit, l.softBytes],
    [L.hard_byte_limit, l.hardBytes],
    [L.soft_packet_limit, l.softPackets],
    [L.hard_packet_limit, l.hardPackets],
    [L.soft_add_expires_seconds, l.softAddSec],
    [L.hard_add_expires_seconds, l.hardAddSec],
    [L.soft_use_expires_seconds, l.softUseSec],
    [L.hard_use_expires_seconds, l.hardUseSec],
  ];
  for (const [o, x] of v) b.writeBigUInt64LE(x, off + o);
}

function readLifetime(b: Buffer, off: number): Lifetime {
  const L = LAYOUT.xfrm_lifetime_cfg;
  const r = (o: number) => b.readBigUInt64LE(off + o);
  return {
    softBytes: r(L.soft_byte_limit),
    hardBytes: r(L.hard_byte_limit),
    softPackets: r(L.soft_packet_limit),
    hardPackets: r(L.hard_packet_limit),
    softAddSec: r(L.soft_add_expires_seconds),
    hardAddSec: r(L.hard_add_expires_seconds),
    softUseSec: r(L.soft_use_expires_seconds),
    hardUseSec: r(L.hard_use_expires_seconds),
  };
}

function algo(name: string, key: Buffer, extraBits?: number): Buffer {
  if (Buffer.byteLength(name) > 63) throw new XfrmError(`algorithm name ${name}: at most 63 bytes`);
  const A = extraBits === undefined ? LAYOUT.xfrm_algo : LAYOUT.xfrm_algo_aead;
  const b = Buffer.alloc(A.alg_key + key.length);
  b.write(name, A.alg_name);
  b.writeUInt32LE(key.length * 8, A.alg_key_len);
  if (extraBits !== undefined) b.writeUInt32LE(extraBits, LAYOUT.xfrm_algo_aead.alg_icv_len);
  key.copy(b, A.alg_key);
  return b;
}

function readAlgo(b: Buffer, withExtra: boolean): { name: string; key: Buffer; extra: number } {
  const A = withExtra ? LAYOUT.xfrm_algo_aead : LAYOUT.xfrm_algo;
  const name = b.subarray(A.alg_name, A.alg_key_len).toString('utf8').replace(/\0.*$/s, '');
  const bits = b.readUInt32LE(A.alg_key_len);
  const key = Buffer.from(b.subarray(A.alg_key, A.alg_key + Math.ceil(bits / 8)));
  return { name, key, extra: withExtra ? b.readUInt32LE(LAYOUT.xfrm_algo_aead.alg_icv_len) : 0 };
}

export function encodeSa(sa: Sa): Buffer {
  const L = LAYOUT.xfrm_usersa_info;
  const b = Buffer.alloc(L.size);
  writeSelector(b, L.sel, sa.selector);
  addr(b, L.id + LAYOUT.xfrm_id.daddr, sa.dst);
  b.writeUInt32BE(sa.spi, L.id + LAYOUT.xfrm_id.spi);
  b.writeUInt8(PROTO[sa.proto], L.id + LAYOUT.xfrm_id.proto);
  addr(b, L.saddr, sa.src);
  writeLifetime(b, L.lft, sa.lifetime);
  b.writeUInt32LE(sa.reqid, L.reqid);
  if (familyOf(sa.src) !== familyOf(sa.dst)) throw new XfrmError(`SA ${sa.src} -> ${sa.dst}: two families`);
  b.writeUInt16LE(familyOf(sa.dst), L.family);
  b.writeUInt8(MODES.indexOf(sa.mode), L.mode);
  // With ESN the window lives in the ESN attribute; the legacy byte must stay 0.
  b.writeUInt8(sa.replay.esn ? 0 : Math.min(255, sa.replay.window), L.replay_window);
  b.writeUInt8(sa.flags, L.flags);
  const parts: Buffer[] = [b];
  if (sa.aead) parts.push(nlattr(XFRMA.ALG_AEAD, algo(sa.aead.name, sa.aead.key, sa.aead.icvBits)));
  if (sa.enc) parts.push(nlattr(XFRMA.ALG_CRYPT, algo(sa.enc.name, sa.enc.key)));
  if (sa.auth) parts.push(nlattr(XFRMA.ALG_AUTH_TRUNC, algo(sa.auth.name, sa.auth.key, sa.auth.truncBits)));
  if (sa.encap) {
    const E = LAYOUT.xfrm_encap_tmpl;
    const e = Buffer.alloc(E.size);
    e.writeUInt16LE(sa.encap.type, E.encap_type);
    e.writeUInt16BE(sa.encap.sport, E.encap_sport);
    e.writeUInt16BE(sa.encap.dport, E.encap_dport);
    parts.push(nlattr(XFRMA.ENCAP, e));
  }
  if (sa.mark) parts.push(markAttr(sa.mark));
  const r = sa.replay;
  if (r.esn) {
    const R = LAYOUT.xfrm_replay_state_esn;
    const words = Math.max(1, Math.ceil(r.window / 32));
    const e = Buffer.alloc(R.size + words * 4);
    e.writeUInt32LE(words, R.bmp_len);
    e.writeUInt32LE(r.oseq, R.oseq);
    e.writeUInt32LE(r.seq, R.seq);
    e.writeUInt32LE(r.oseqHi, R.oseq_hi);
    e.writeUInt32LE(r.seqHi, R.seq_hi);
    e.writeUInt32LE(r.window, R.replay_window);
    r.bitmap.copy(e, R.bmp, 0, Math.min(r.bitmap.length, words * 4));
    parts.push(nlattr(XFRMA.REPLAY_ESN_VAL, e));
  } else {
    const R = LAYOUT.xfrm_replay_state;
    const e = Buffer.alloc(R.size);
    e.writeUInt32LE(r.oseq, R.oseq);
    e.writeUInt32LE(r.seq, R.seq);
    if (r.bitmap.length >= 4) e.writeUInt32LE(r.bitmap.readUInt32LE(0), R.bitmap);
    parts.push(nlattr(XFRMA.REPLAY_VAL, e));
  }
  return Buffer.concat(parts);
}

export function decodeSa(b: Buffer): Sa {
  const L = LAYOUT.xfrm_usersa_info;
  if (b.length < L.size) throw new XfrmError(`SA message of ${b.length} bytes, at least ${L.size} expected`);
  const protoNum = b.readUInt8(L.id + LAYOUT.xfrm_id.proto);
  const proto = protoName(protoNum);
  if (!proto) throw new XfrmError(`SA protocol ${protoNum}: not ESP, AH or IPComp`);
  const family = b.readUInt16LE(L.family);
  const sa: Sa = {
    selector: readSelector(b, L.sel, family),
    dst: readAddr(b, L.id + LAYOUT.xfrm_id.daddr, family),
    spi: b.readUInt32BE(L.id + LAYOUT.xfrm_id.spi),
    proto,
    src: readAddr(b, L.saddr, family),
    lifetime: readLifetime(b, L.lft),
    current: readCurrent(b, L.curlft),
    reqid: b.readUInt32LE(L.reqid),
    mode: MODES[b.readUInt8(L.mode)] ?? 'transport',
    flags: b.readUInt8(L.flags),
    replay: {
      oseq: 0,
      seq: 0,
      oseqHi: 0,
      seqHi: 0,
      window: b.readUInt8(L.replay_window),
      bitmap: Buffer.alloc(4),
      esn: false,
    },
  };
  for (const [t, v] of nlattrs(b, L.size)) {
    if (t === XFRMA.ALG_AEAD) {
      const a = readAlgo(v, true);
      sa.aead = { name: a.name, key: a.key, icvBits: a.extra };
    } else if (t === XFRMA.ALG_CRYPT) {
      const a = readAlgo(v, false);
      sa.enc = { name: a.name, key: a.key };
    } else if (t === XFRMA.ALG_AUTH_TRUNC) {
      const a = readAlgo(v, true);
      sa.auth = { name: a.name, key: a.key, truncBits: a.extra };
    } else if (t === XFRMA.ENCAP) {
      sa.encap = { type: v.readUInt16LE(0), sport: v.readUInt16BE(2), dport: v.readUInt16BE(4) };
    } else if (t === XFRMA.MARK) {
      sa.mark = { value: v.readUInt32LE(0), mask: v.readUInt32LE(4) };
    } else if (t === XFRMA.REPLAY_VAL || t === XFRMA.REPLAY_ESN_VAL) {
      sa.replay = decodeReplay(t, v, sa.replay.window)!;
    }
  }
  return sa;
}

/** An XFRMA_REPLAY_VAL or XFRMA_REPLAY_ESN_VAL attribute; `window`: the legacy state's, which its attribute lacks. */
export function decodeReplay(type: number, v: Buffer, window: number): Replay | undefined {
  if (type === XFRMA.REPLAY_VAL) {
    const R = LAYOUT.xfrm_replay_state;
    const bitmap = Buffer.from(v.subarray(R.bitmap, R.bitmap + 4));
    return {
      oseq: v.readUInt32LE(R.oseq),
      seq: v.readUInt32LE(R.seq),
      oseqHi: 0,
      seqHi: 0,
      window,
      bitmap,
      esn: false,
    };
  }
  if (type !== XFRMA.REPLAY_ESN_VAL) return undefined;
  const R = LAYOUT.xfrm_replay_state_esn;
  const words = v.readUInt32LE(R.bmp_len);
  return {
    oseq: v.readUInt32LE(R.oseq),
    seq: v.readUInt32LE(R.seq),
    oseqHi: v.readUInt32LE(R.oseq_hi),
    seqHi: v.readUInt32LE(R.seq_hi),
    window: v.readUInt32LE(R.replay_window),
    bitmap: Buffer.from(v.subarray(R.bmp, R.bmp + words * 4)),
    esn: true,
  };
}

/** A struct xfrm_lifetime_cur: an SA's counters. */
export function readCurrent(b: Buffer, off: number): NonNullable<Sa['current']> {
  const C = LAYOUT.xfrm_lifetime_cur;
  return {
    bytes: b.readBigUInt64LE(off + C.bytes),
    packets: b.readBigUInt64LE(off + C.packets),
    addTime: b.readBigUInt64LE(off + C.add_time),
    useTime: b.readBigUInt64LE(off + C.use_time),
  };
}

export function encodePolicy(p: Policy): Buffer {
  const L = LAYOUT.xfrm_userpolicy_info;
  const b = Buffer.alloc(L.size);
  writeSelector(b, L.sel, p.selector);
  writeLifetime(b, L.lft, NO_LIMITS);
  b.writeUInt32LE(p.priority, L.priority);
  b.writeUInt32LE(p.index, L.index);
  b.writeUInt8(DIRS.indexOf(p.dir), L.dir);
  b.writeUInt8(p.action === 'allow' ? 0 : 1, L.action);
  if (!p.tmpls.length) return b;
  const T = LAYOUT.xfrm_user_tmpl;
  const t = Buffer.alloc(T.size * p.tmpls.length);
  p.tmpls.forEach((x, i) => {
    const o = i * T.size;
    addr(t, o + T.id + LAYOUT.xfrm_id.daddr, x.dst);
    t.writeUInt32BE(x.spi, o + T.id + LAYOUT.xfrm_id.spi);
    t.writeUInt8(PROTO[x.proto], o + T.id + LAYOUT.xfrm_id.proto);
    t.writeUInt16LE(familyOf(x.dst), o + T.family);
    addr(t, o + T.saddr, x.src);
    t.writeUInt32LE(x.reqid, o + T.reqid);
    t.writeUInt8(MODES.indexOf(x.mode), o + T.mode);
    t.writeUInt8(x.optional ? 1 : 0, o + T.optional);
    // Any algorithm: the SA decides.
    for (const f of [T.aalgos, T.ealgos, T.calgos]) t.writeUInt32LE(0xffffffff, o + f);
  });
  return Buffer.concat([b, nlattr(XFRMA.TMPL, t)]);
}

export function decodePolicy(b: Buffer): Policy {
  const L = LAYOUT.xfrm_userpolicy_info;
  if (b.length < L.size) throw new XfrmError(`policy message of ${b.length} bytes, at least ${L.size} expected`);
  const p: Policy = {
    selector: readSelector(b, L.sel),
    priority: b.readUInt32LE(L.priority),
    index: b.readUInt32LE(L.index),
    dir: DIRS[b.readUInt8(L.dir)] ?? 'in',
    action: b.readUInt8(L.action) === 0 ? 'allow' : 'block',
    tmpls: [],
  };
  const T = LAYOUT.xfrm_user_tmpl;
  for (const [t, v] of nlattrs(b, L.size)) {
    if (t !== XFRMA.TMPL) continue;
    for (let o = 0; o + T.size <= v.length; o += T.size) {
      const protoNum = v.readUInt8(o + T.id + LAYOUT.xfrm_id.proto);
      const family = v.readUInt16LE(o + T.family);
      p.tmpls.push({
        dst: readAddr(v, o + T.id, family),
        spi: v.readUInt32BE(o + T.id + LAYOUT.xfrm_id.spi),
        src: readAddr(v, o + T.saddr, family),
        reqid: v.readUInt32LE(o + T.reqid),
        proto: (Object.keys(PROTO) as IpsecProto[]).find((k) => PROTO[k] === protoNum) ?? 'esp',
        mode: MODES[v.readUInt8(o + T.mode)] ?? 'transport',
        optional: v.readUInt8(o + T.optional) === 1,
      });
    }
  }
  return p;
}

/** Whether the family field at `familyOff` says IPv4 or IPv6, as DVIPAs are: other families are not dvipa's business. */
export const inetFamily = (b: Buffer, familyOff: number) =>
  b.length >= familyOff + 2 && [AF_INET, AF_INET6].includes(b.readUInt16LE(familyOff));

export function markAttr(mark: { value: number; mask: number }): Buffer {
  const m = Buffer.alloc(LAYOUT.xfrm_mark.size);
  m.writeUInt32LE(mark.value, LAYOUT.xfrm_mark.v);
  m.writeUInt32LE(mark.mask, LAYOUT.xfrm_mark.m);
  return nlattr(XFRMA.MARK, m);
}

export type SaId = Pick<Sa, 'dst' | 'spi' | 'proto' | 'mark'>;

/** What names an SA for the kernel; one with a mark is found only with it. */
export function saIdMessage(sa: SaId): Buffer {
  const L = LAYOUT.xfrm_usersa_id;
  const b = Buffer.alloc(L.size);
  addr(b, L.daddr, sa.dst);
  b.writeUInt32BE(sa.spi, L.spi);
  b.writeUInt16LE(familyOf(sa.dst), L.family);
  b.writeUInt8(PROTO[sa.proto], L.proto);
  return sa.mark ? Buffer.concat([b, markAttr(sa.mark)]) : b;
}
