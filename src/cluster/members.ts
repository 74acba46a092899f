/*
 * Membership like XCF: with the coupling facility (etcd), each agent writes a member record
 * under <prefix>members/<node>, bound to its lease, and learns the other nodes from theirs, so
 * a per-node file needs no PEER for them. A record only says where a node says it is: it
 * never grants trust. It is signed by the node (its Ed25519 identity with CLUSTER IDENTITIES,
 * else an HMAC under the cluster key), so a stolen etcd credential cannot write one for
 * another node; the name must be that of the key it sits under, its signature must verify
 * with the public key this node holds for that name (its identities directory, never the
 * record), it must be bound to the lease it names, later than the last record of that node
 * seen (a replay of an old one is refused), and consistent with the configuration (a node
 * or PEER of the file keeps its address) and with the other members (no address claimed by
 * two names). What passes becomes a peer of the transport, which still makes the node prove
 * its identity in the handshake, and from that address only. Everything else is counted by
 * reason and logged at most once a minute per name and reason; the number of members is capped.
 */
import { EventEmitter } from 'node:events';
import { createHmac, sign, timingSafeEqual, verify } from 'node:crypto';
import { canonicalIpv6, ipFamily, parseIpv4, parseIpv6 } from '../net/addr.js';
import { keyId, NODE_NAME, publicKeyOf, type Identities } from './handshake.js';
import { Refusals } from './refusals.js';
import type { MemberRow } from './views.js';
import type { Logger } from '../log.js';

export const MEMBER_RECORD_VERSION = 1;
/** A record is a few hundred bytes; anything much larger is not one. */
export const MAX_RECORD_BYTES = 8192;
const MAX_ADDRESSES = 4;
/** As many as a VIPA list may carry. */
const MAX_DVIPAS = 256;

export interface MemberRecord {
  v: typeof MEMBER_RECORD_VERSION;
  node: string;
  /** Cluster (XCF) addresses; peers dial the first. */
  xcf: string[];
  /** The agents' transport port. */
  port: number;
  /** The key that signs: an Ed25519 key id (keyId), or 'cluster' (an HMAC under the cluster key). */
  key: string;
  /** The transport's frame version. */
  version: number;
  /** DVIPAs the node defines or backs up: what it may name in a VIPA list to a node that knows none. */
  dvipas: string[];
  /** The etcd lease the record is bound to (decimal). */
  lease: string;
  /** Milliseconds since the epoch when written: a node's later records have later times. */
  at: number;
  sig: string;
}

export type MemberRefusal =
  | 'oversized'
  | 'malformed'
  | 'name_mismatch'
  | 'no_lease'
  | 'lease_mismatch'
  | 'unknown_identity'
  | 'wrong_key'
  | 'bad_signature'
  | 'stale'
  | 'address_mismatch'
  | 'address_taken'
  | 'too_many_members';

export class RecordRefused extends Error {
  constructor(
    readonly reason: MemberRefusal,
    detail: string,
  ) {
    super(detail);
  }
}

const signed = (r: Omit<MemberRecord, 'sig'>) =>
  Buffer.from(
    `dvipa/member/${r.v} ${JSON.stringify([r.node, r.xcf, r.port, r.key, r.version, r.dvipas, r.lease, r.at])}`,
  );

/** Signs this node's records and checks the others': the node's identity, or the cluster key. */
export class MemberSigner {
  readonly keyId: string;

  constructor(
    private readonly clusterKey: Buffer,
    private readonly ids?: Identities,
  ) {
    this.keyId = ids ? keyId(ids.own) : 'cluster';
  }

  /** This node's record, signed. */
  record(fields: Omit<MemberRecord, 'v' | 'key' | 'sig'>): MemberRecord {
    const r = { v: MEMBER_RECORD_VERSION, ...fields, key: this.keyId } as const;
    const data = signed(r);
    const sig = this.ids ? sign(null, data, this.ids.own) : createHmac('sha256', this.clusterKey).update(data).digest();
    return { ...r, sig: sig.toString('hex') };
  }

  /** Throws RecordRefused unless `r` is signed by the key this node holds for `r.node`. */
  check(r: MemberRecord): void {
    const data = signed(r);
    const got = Buffer.from(r.sig, 'hex');
    if (!this.ids) {
      if (r.key !== 'cluster')
        throw new RecordRefused('wrong_key', `${r.node} signs with ${r.key}, not the cluster key`);
      const want = createHmac('sha256', this.clusterKey).update(data).digest();
      if (got.length !== want.length || !timingSafeEqual(got, want))
        throw new RecordRefused('bad_signature', `${r.node}'s record is not signed with the cluster key`);
      return;
    }
    const pub = publicKeyOf(this.ids, r.node);
    if (!pub)
      throw new RecordRefused('unknown_identity', `no public key of ${r.node} in ${this.ids.dir ?? 'the identities'}`);
    const mine = keyId(pub);
    if (r.key !== mine) throw new RecordRefused('wrong_key', `${r.node} names key ${r.key}; its key is ${mine}`);
    if (got.length !== 64 || !verify(null, data, pub, got))
      throw new RecordRefused('bad_signature', `${r.node}'s record is not signed by ${r.node}'s key`);
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** A unicast address: IPv4 not 0/8, loopback, multicast or above; IPv6 not ::, ::1 or multicast. */
function unicast(x: unknown): x is string {
  if (typeof x !== 'string') return false;
  const family = ipFamily(x);
  if (family === 6) {
    // In its one spelling (peers compare addresses as text); not unspecified, loopback or multicast.
    const b = parseIpv6(x);
    return canonicalIpv6(x) === x && b[0] !== 0xff && !b.subarray(0, 15).every((v) => v === 0);
  }
  if (family !== 4) return false;
  const first = parseIpv4(x) >>> 24;
  return first !== 0 && first !== 127 && first < 224;
}

const FIELDS = ['v', 'node', 'xcf', 'port', 'key', 'version', 'dvipas', 'lease', 'at', 'sig'];

/**
 * The record under members/`name`, every field checked (the signature is MemberSigner's):
 * throws RecordRefused saying what is wrong. `lease`: the lease the key is bound to ('0': none).
 */
export function parseMemberRecord(name: string, value: string, lease: string): MemberRecord {
  const bad = (why: string): never => {
    throw new RecordRefused('malformed', why);
  };
  if (value.length > MAX_RECORD_BYTES)
    throw new RecordRefused('oversized', `${value.length} bytes, at most ${MAX_RECORD_BYTES}`);
  let o: unknown;
  try {
    o = JSON.parse(value);
  } catch {
    return bad('not JSON');
  }
  if (!isObject(o)) return bad('not an object');
  const extra = Object.keys(o).filter((k) => !FIELDS.includes(k));
  if (extra.length) bad(`unknown fields ${extra.slice(0, 4).join(', ')}`);
  if (o.v !== MEMBER_RECORD_VERSION) bad(`record version ${JSON.stringify(o.v)}, expected ${MEMBER_RECORD_VERSION}`);
  if (typeof o.node !== 'string' || !NODE_NAME.test(o.node)) bad('node: a name of letters, digits, _ . -');
  if (o.node !== name)
    throw new RecordRefused('name_mismatch', `the record of ${String(o.node)} sits under members/${name}`);
  const list = (x: unknown, max: number, what: string): string[] => {
    if (!Array.isArray(x) || x.length > max || !x.every(unicast))
      bad(`${what}: at most ${max} unicast addresses (IPv4, or IPv6 in RFC 5952 form)`);
    return x as string[];
  };
  if (!list(o.xcf, MAX_ADDRESSES, 'xcf').length) bad('xcf: no address');
  list(o.dvipas, MAX_DVIPAS, 'dvipas');
  if (!Number.isInteger(o.port) || (o.port as number) < 1 || (o.port as number) > 65535) bad('port: 1 to 65535');
  if (typeof o.key !== 'string' || !/^(cluster|[0-9a-f]{32})$/.test(o.key)) bad('key: a key id');
  if (!Number.isInteger(o.version) || (o.version as number) < 0 || (o.version as number) > 255) bad('version');
  if (typeof o.lease !== 'string' || !/^[1-9]\d{0,19}$/.test(o.lease)) bad('lease: a lease id');
  if (!Number.isSafeInteger(o.at) || (o.at as number) <= 0) bad('at: milliseconds');
  if (typeof o.sig !== 'string' || !/^[0-9a-f]{64,128}$/.test(o.sig)) bad('sig: hex');
  if (lease === '0' || lease === '') throw new RecordRefused('no_lease', 'not bound to a lease: it would never expire');
  if (lease !== o.lease) throw new RecordRefused('lease_mismatch', `bound to lease ${lease}, names ${String(o.lease)}`);
  return o as unknown as MemberRecord;
}

export interface MembershipOptions {
  me: string;
  /**
   * This node, and the nodes and PEERs of its configuration, by name: their cluster addresses
   * (one per family) are not the records' to change.
   */
  configured: ReadonlyMap<string, readonly string[]>;
  signer: MemberSigner;
  max: number;
  logger: Logger;
}

// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export declare interface Membership {
  on(event: 'join', listener: (r: MemberRecord) => void): this;
  on(event: 'leave', listener: (r: MemberRecord) => void): this;
}

/** The members of the cluster as the records say, each record checked before it counts. */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging
export class Membership extends EventEmitter {
  readonly refusals: Refusals;
  private readonly members = new Map<string, { record: MemberRecord; since: number }>();
  /** The latest record time seen of each member, kept after it leaves: an older record is a replay. */
  private readonly lastAt = new Map<string, number>();

  constructor(private readonly opts: MembershipOptions) {
    super();
    this.refusals = new Refusals(opts.logger, 'member record refused');
  }

  get(node: string): MemberRecord | undefined {
    return this.members.get(node)?.record;
  }

  has(node: string): boolean {
    return this.members.has(node);
  }

  records(): MemberRecord[] {
    return [...this.members.values()].map((m) => m.record);
  }

  rows(connected: (node: string) => boolean): MemberRow[] {
    return [...this.members.values()]
      .map(({ record: r, since }) => ({
        node: r.node,
        xcf: r.xcf,
        port: r.port,
        state: connected(r.node) ? ('Up' as const) : ('Joined' as const),
        since: new Date(since).toISOString(),
        key: r.key,
        version: r.version,
        dvipas: r.dvipas,
      }))
      .sort((a, b) => a.node.localeCompare(b.node));
  }

  /** A record written or changed under members/`name`. Never throws: a bad one is counted. */
  put(name: string, value: string, lease: string): void {
    if (name === this.opts.me) return;
    try {
      const r = parseMemberRecord(name, value, lease);
      const old = this.members.get(name);
      if (old && old.record.sig === r.sig) return;
      this.accept(r, old?.record);
    } catch (e) {
      if (!(e instanceof RecordRefused)) throw e;
      // Short and printable in the log, whatever the name is.
      // Logged once a minute per reason, not per name: 10,000 junk names are one line.
      this.refusals.add('members', e.reason, `${JSON.stringify(name.slice(0, 64))}: ${e.message}`);
      // A node whose record went bad is no member any more.
      this.delete(name);
    }
  }

  private accept(r: MemberRecord, old: MemberRecord | undefined): void {
    if (!old && this.members.size >= this.opts.max)
      throw new RecordRefused('too_many_members', `${this.members.size} members already (at most ${this.opts.max})`);
    const configured = this.opts.configured.get(r.node);
    if (configured !== undefined && (configured.length !== r.xcf.length || configured.some((a) => !r.xcf.includes(a))))
      throw new RecordRefused(
        'address_mismatch',
        `${r.node} is at ${configured.join(' ')} in the configuration, not ${r.xcf.join(' ')}`,
      );
    for (const x of r.xcf) {
      const other =
        [...this.opts.configured].find(([n, a]) => a.includes(x) && n !== r.node)?.[0] ??
        [...this.members.values()].find((m) => m.record.node !== r.node && m.record.xcf.includes(x))?.record.node;
      if (other !== undefined) throw new RecordRefused('address_taken', `${x} is ${other}'s address`);
    }
    const last = this.lastAt.get(r.node) ?? 0;
    if (r.at <= last) throw new RecordRefused('stale', `written at ${r.at}, ${r.node}'s last record at ${last}`);
    this.opts.signer.check(r);
    this.lastAt.set(r.node, r.at);
    const moved = old !== undefined && (old.xcf[0] !== r.xcf[0] || old.port !== r.port);
    // Since it joined at this address: a new record where it was (a new lease) is not news.
    const since = old && !moved ? this.members.get(r.node)!.since : Date.now();
    this.members.set(r.node, { record: r, since });
    if (moved) this.emit('leave', old);
    if (!old || moved) {
      this.opts.logger.info({ member: r.node, xcf: r.xcf[0], port: r.port, key: r.key }, 'member joined');
      this.emit('join', r);
    }
  }

  /** The record under members/`name` is gone (its lease ended, or it was deleted). */
  delete(name: string): void {
    const m = this.members.get(name);
    if (!m) return;
    this.members.delete(name);
    this.opts.logger.info({ member: name }, 'member left');
    this.emit('leave', m.record);
  }
}
