/*
 * The owner's renewals in a thread of their own (see renewer.ts): every interval, for each
 * DVIPA this node owns, one transaction puts the owner key again if it still holds this
 * node's record; each success moves the DVIPA's fence to FENCE after the request left.
 * This thread is the fence map's only writer while the DVIPA is owned. It also keeps the
 * owner keys' lease alive (the main thread does too).
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as os from 'node:os';
import type { IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, Watcher } from 'etcd3';
import {
  commitClaim,
  etcdClient,
  parseReleased,
  type ClaimTxn,
  type EtcdConnection,
  type Renewal,
} from './coupling.js';
import { BpfMap } from '../dataplane/map.js';
import { addr, addr6, FENCE_DRAIN, u64 } from '../dataplane/structs.js';
import { ipFamily } from '../net/addr.js';
import { AddressHolder } from './address.js';
import { sys } from '../kernel/sys.js';
import { log } from '../log.js';

export interface WorkerSetup {
  etcd: EtcdConnection;
  fenceFd: number;
  /** The IPv6 DVIPAs' fences (map fence6). */
  fence6Fd: number;
  renewMs: number;
  fenceNs: bigint;
  /** How long a replaced owner's data plane forwards what still reaches it (HANDOVER_DRAIN_MS). */
  drainNs: bigint;
  /**
   * The external interface, where a takeover's address is taken and announced from this
   * thread as soon as etcd takes the claim (the main thread does it again, later); none where
   * the address must wait (IPsec: its SAs go in first) or there is no external interface.
   */
  announceOn?: string;
}

export type WorkerRequest =
  /**
   * Commit this claim; if etcd takes it, renew from that moment, the fence a fence after the
   * request left. Answered with a ClaimAnswer of the same `id`.
   */
  | { op: 'claim'; id: number; dvipa: string; claim: ClaimTxn }
  /** The fence may run to `deadlineNs` (every other candidate promised), if that is later. */
  | { op: 'extend'; dvipa: string; deadlineNs: bigint }
  /**
   * No more renewals: the fence runs out by itself or, handed over, drains until
   * `drainUntilNs`. Written here, after any renewal still in flight: a late confirmation
   * must not turn the drain back into a plain deadline.
   */
  | { op: 'drop'; dvipa: string; drainUntilNs?: bigint }
  /**
   * A clean stop: renewals end, and each owner key goes to a lease of `graceSec` that nobody
   * renews, marked with the grace; the reply ('handed') lists the DVIPAs whose key etcd took.
   */
  | { op: 'handOver'; graceSec: number };

/** The worker's answer to a hand-over. */
export interface HandedOver {
  handed: string[];
}

/** The worker's answer to a claim: etcd's revision after it (none: refused), or why it failed. */
export interface ClaimAnswer {
  id: number;
  revision?: number;
  error?: string;
}

/** The renewal thread's nice value, and its real-time priority (SCHED_RR) while it owns a DVIPA. */
const RENEWAL_NICE = -20;
const RENEWAL_RT_PRIORITY = 10;
/**
 * Renewals of one DVIPA sent and not yet answered. Answers come late on a busy machine even
 * when etcd committed at once, and renewals must go on landing every interval: room for
 * 160 ms of round trip at the default interval; beyond, etcd is not keeping up.
 */
const MAX_IN_FLIGHT = 8;
/**
 * A claim's deadline here: etcd may still apply a claim it did not answer in time, and the
 * main thread then finds the key its own (an adoption, see Election).
 */
const CLAIM_DEADLINE_MS = 2000;
/**
 * Keepalives of the owner keys' lease from this thread: the main thread's stop while it
 * stalls, and a stall longer than the TTL would let etcd delete the owner keys with the
 * lease, so that a backup takes over from a living owner. A third of the shortest TTL (1 s).
 */
const LEASE_KEEPALIVE_MS = 330;

const setup = workerData as WorkerSetup;
// Ahead of ordinary work on a busy node: a renewal late by a fence is a failover. The highest
// nice value (per thread on Linux) always, and round-robin real time only while this node owns
// a DVIPA, as keepalived's VRRP process can run (its vrrp_rt_priority): as an ordinary thread
// the owner's renewals came back 100-140 ms late every few seconds under the lab demo's load,
// and its fence lapsed for a few milliseconds each time. Not always: this thread runs a
// JavaScript engine, whose garbage collections and bursts of gRPC answers are not bounded. In
// real time on every node, a returning node's thread and the owner's took both CPUs of the
// lab's machine at once (perf, at a takeback), above etcd, ksoftirqd and every agent, and an
// owner's fence lapsed for up to a second while a node came back. One node owns a DVIPA at a time.
try {
  os.setPriority(RENEWAL_NICE);
} catch {
  // not allowed (not root, or no CAP_SYS_NICE): renewals run at the agent's priority
}
/** This thread's policy (SCHED_OTHER to start with), and whether real time was refused once. */
let realTime = false;
let refused = false;
/**
 * Claims and hand-overs whose writes are out: real time from the moment a claim leaves, for its
 * first renewals, and until a hand-over's writes (which move the fence) are answered.
 */
let writing = 0;
/** Real time while `owned` holds a DVIPA or a claim or hand-over is out. */
function followOwnership(): void {
  const wanted = owned.size > 0 || writing > 0;
  if (wanted === realTime) return;
  try {
    sys.threadRealTime('renewal thread', wanted ? RENEWAL_RT_PRIORITY : 0);
    realTime = wanted;
  } catch (e) {
    // No CAP_SYS_NICE: the nice value above stays; asked again at the next change, said once.
    if (!refused)
      log.warn({ err: (e as Error).message }, 'renewal thread: real time refused; it renews at its nice value');
    refused = true;
  }
}
const client = etcdClient(setup.etcd);
const fence4 = new BpfMap('fence', setup.fenceFd, addr, u64);
const fence6 = new BpfMap('fence6', setup.fence6Fd, addr6, u64);
const fenceOf = (dvipa: string) => (ipFamily(dvipa) === 6 ? fence6 : fence4);
/** `lapsedAt`: where the fence ran out, while no confirmed renewal has started it again. */
type Owned = { renewal: Renewal; deadlineNs: bigint; inFlight: number; lapsedAt?: bigint };
const owned = new Map<string, Owned>();
// Its repeats stop once this thread no longer renews the DVIPA (lost, dropped).
const address = setup.announceOn ? new AddressHolder(setup.announceOn, log, (a) => owned.has(a)) : undefined;

function extend(dvipa: string, deadlineNs: bigint): void {
  const o = owned.get(dvipa);
  if (!o || deadlineNs <= o.deadlineNs) return;
  o.deadlineNs = deadlineNs;
  fenceOf(dvipa).set(dvipa, deadlineNs);
}

function renewAll(): void {
  for (const [dvipa, o] of owned) {
    if (o.inFlight >= MAX_IN_FLIGHT) continue;
    o.inFlight++;
    const sent = process.hrtime.bigint();
    const { key, value, lease } = o.renewal;
    // An unanswered renewal needs no handling: the fence lapses; the main thread sees etcd's health.
    client
      .if(key, 'Value', '==', value)
      .then(client.put(key).value(value).lease(lease))
      .else(client.get(key))
      .commit()
      .then(
        (res) => {
          if (owned.get(dvipa) !== o) return;
          if (res.succeeded) return confirmed(dvipa, o, sent);
          if (res.responses[0]?.response_range?.kvs.length) replaced(dvipa, o);
        },
        () => undefined,
      )
      .finally(() => o.inFlight--);
  }
}

/**
 * The owner key holds another node's record: a living owner was replaced (takeback, move).
 * Its fence, if it still runs, turns into a drain here and now, not when the main thread
 * hears of the change from etcd's watch: on a busy node that may come after the fence ran
 * out, and the clients not yet moved by the new owner's announcement would be dropped. A
 * fence already run out stays so (a frozen or cut-off owner taken over).
 */
function replaced(dvipa: string, o: Owned): void {
  owned.delete(dvipa);
  const now = process.hrtime.bigint();
  const draining = o.deadlineNs > now;
  if (draining) fenceOf(dvipa).set(dvipa, (now + setup.drainNs) | FENCE_DRAIN);
  log.info({ dvipa, draining, fenceLeftMs: ms(o.deadlineNs - now) }, 'replaced as owner: renewals end');
  followOwnership();
}

const ms = (ns: bigint) => Number(ns / 1000n) / 1000;

/**
 * A renewal etcd confirmed moves the fence. One that comes after the fence ran out ends a lapse
 * only if it starts the fence again (renewals late by more than a fence answer in a burst),
 * and the lapse is said then, once: how long the data plane was silent for the DVIPA
 * (drop_fenced) and the round trip of the renewal that ended it. etcd, this thread or the way
 * between was late; a lapse that never ends (the owner replaced) is said by replaced().
 */
function confirmed(dvipa: string, o: Owned, sent: bigint): void {
  const now = process.hrtime.bigint();
  const deadlineNs = sent + setup.fenceNs;
  if (now > o.deadlineNs) o.lapsedAt ??= o.deadlineNs;
  if (o.lapsedAt !== undefined && deadlineNs > now) {
    log.warn(
      { dvipa, silentMs: ms(now - o.lapsedAt), roundTripMs: ms(now - sent) },
      'fence ran out before a renewal was confirmed: the data plane was silent for the DVIPA',
    );
    o.lapsedAt = undefined;
  }
  extend(dvipa, deadlineNs);
}

// Connected before the first renewal, which must not wait for a handshake: the agent claims
// nothing until this thread has reached etcd once.
function connect(): void {
  client
    .get('dvipa-renewal-connect')
    .string()
    .then(
      () => parentPort!.postMessage('connected'),
      () => setTimeout(connect, 200),
    );
}
connect();
setInterval(renewAll, setup.renewMs);

let keepalives: IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> | undefined;
let opening = false;
function keepLeasesAlive(): void {
  const leases = new Set([...owned.values()].map((o) => o.renewal.lease));
  if (!leases.size) return;
  if (keepalives) {
    for (const id of leases) keepalives.write({ ID: id });
    return;
  }
  if (opening) return;
  opening = true;
  // One stream for every lease; opened again (next tick) when it fails. An expired lease
  // answers TTL 0: the main thread's own keepalive finds that out and rejoins.
  client.leaseClient.leaseKeepAlive().then(
    (s) => {
      opening = false;
      keepalives = s;
      const gone = () => {
        if (keepalives === s) keepalives = undefined;
      };
      s.on('data', () => undefined)
        .on('error', gone)
        .on('end', gone);
      keepLeasesAlive();
    },
    () => (opening = false),
  );
}
setInterval(keepLeasesAlive, LEASE_KEEPALIVE_MS);

/**
 * Here and not in the main thread: the fence must run from one confirmed write to the next
 * without a gap. Renewals stop first (a late confirmation no longer moves the fence), then
 * each key is written again with its grace, and the fence moves to that grace (plus a fence)
 * after the write was sent: candidates wait a claim delay and the grace after they see it.
 */
async function handOver(graceSec: number): Promise<HandedOver> {
  const mine = [...owned];
  owned.clear();
  const handed: string[] = [];
  if (graceSec <= 0 || !mine.length) {
    followOwnership();
    return { handed };
  }
  writing++;
  const lease = client.lease(graceSec, { autoKeepAlive: false });
  try {
    const id = await lease.grant();
    for (const [dvipa, o] of mine) {
      const { key, value } = o.renewal;
      const graced = JSON.stringify({ ...(JSON.parse(value) as object), graceMs: graceSec * 1000 });
      const sent = process.hrtime.bigint();
      const res = await client.if(key, 'Value', '==', value).then(client.put(key).value(graced).lease(id)).commit();
      if (!res.succeeded) continue;
      fenceOf(dvipa).set(dvipa, sent + BigInt(graceSec) * 1_000_000_000n + setup.fenceNs);
      handed.push(dvipa);
    }
  } catch {
    // etcd unreachable: what was not handed over lapses with its fence, as after a crash
  } finally {
    lease.release();
    writing--;
    followOwnership();
  }
  return { handed };
}

/**
 * A takeback's or move's address, taken and announced from here once the old owner has let
 * it go (its RELEASED record names this epoch) or a fence after the claim was answered, when
 * its fence has run out or drains (as Handoffs.wait on the main thread, which does it again).
 * Watched from the claim's revision on: the record may have come before the answer.
 */
function announceOnceReleased(dvipa: string, key: string, epoch: number, fromRevision: number): void {
  let done = false;
  let watcher: Watcher | undefined;
  const announce = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    void watcher?.cancel().catch(() => undefined);
    if (owned.has(dvipa)) address!.take(dvipa);
  };
  const timer = setTimeout(announce, Number(setup.fenceNs / 1_000_000n));
  client
    .watch()
    .key(key)
    .startRevision(String(fromRevision))
    .create()
    .then(
      (w) => {
        watcher = w;
        if (done) return void w.cancel().catch(() => undefined);
        // A record of another shape or epoch is not ours: the fence ends the wait.
        w.on('put', (kv) => parseReleased(kv.value.toString())?.epoch === epoch && announce());
      },
      () => undefined,
    );
}

/** A claim committed from here: renewals and the fence start when etcd answers, not when the main thread next runs. */
function claim(id: number, dvipa: string, c: ClaimTxn): void {
  // Real time before the claim leaves: its answer starts the fence and, after a death, the announcement.
  writing++;
  followOwnership();
  const sent = process.hrtime.bigint();
  commitClaim(client, c, CLAIM_DEADLINE_MS)
    .then(
      (revision) => {
        if (revision !== undefined) {
          const deadlineNs = sent + setup.fenceNs;
          owned.set(dvipa, { renewal: { key: c.ownerKey, value: c.record, lease: c.lease }, deadlineNs, inFlight: 0 });
          fenceOf(dvipa).set(dvipa, deadlineNs);
          // After a death every client waits for the announcement: not for the main thread too.
          if (c.announce) address?.take(dvipa);
          else if (c.releasedKey && c.epoch && address)
            announceOnceReleased(dvipa, c.releasedKey, Number(c.epoch), revision);
        }
        parentPort!.postMessage({ id, revision } satisfies ClaimAnswer);
      },
      (e: Error) => parentPort!.postMessage({ id, error: e.message } satisfies ClaimAnswer),
    )
    // After the fence, the address and the answer.
    .finally(() => {
      writing--;
      followOwnership();
    });
}

parentPort!.on('message', (m: WorkerRequest) => {
  switch (m.op) {
    case 'claim':
      return claim(m.id, m.dvipa, m.claim);
    case 'extend':
      return extend(m.dvipa, m.deadlineNs);
    case 'drop':
      owned.delete(m.dvipa);
      if (m.drainUntilNs !== undefined) fenceOf(m.dvipa).set(m.dvipa, m.drainUntilNs | FENCE_DRAIN);
      return followOwnership();
    case 'handOver':
      void handOver(m.graceSec).then((r) => parentPort!.postMessage(r));
  }
});
