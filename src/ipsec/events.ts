/*
 * The kernel's XFRM notifications, typed: SAs and policies added, updated, deleted and
 * expired, acquires (traffic that wants an SA), replay counters moved (async events),
 * flushes; and `overflow` when the kernel dropped some for want of buffer room, after which
 * only a dump tells what is installed. Read on Node's event loop by the addon's XfrmEvents,
 * decoded with the codecs of xfrm.ts. What cannot be decoded is reported as `malformed`,
 * never thrown: a notification is no request of ours to fail.
 */
import { nlattrs } from '../net/netlink.js';
import { SyscallError } from '../kernel/errors.js';
import { openXfrmEvents, type EventSource, type XfrmEventMessage } from '../kernel/events.js';
import {
  inetFamily,
  familyOf,
  decodePolicy,
  decodeReplay,
  decodeSa,
  DIRS,
  LAYOUT,
  protoName,
  readAddr,
  readCurrent,
  readSelector,
  XFRM_MSG,
  XFRMA,
  XfrmError,
  type IpsecProto,
  type Policy,
  type PolicyDir,
  type Replay,
  type Sa,
  type Selector,
} from './xfrm-codec.js';

/** The multicast groups (XFRMNLGRP_*): the numbers are the kernel's. */
export const XFRM_GROUPS = {
  acquire: 1,
  expire: 2,
  sa: 3,
  policy: 4,
  aevents: 5,
  report: 6,
  migrate: 7,
  mapping: 8,
} as const;
export type XfrmGroup = keyof typeof XFRM_GROUPS;

/** What names an SA: destination, SPI, protocol. */
export interface SaKey {
  dst: string;
  spi: number;
  proto: IpsecProto;
}
/** What names a policy; a policy deleted by index has an empty selector here. */
export interface PolicyKey {
  selector: Selector;
  dir: PolicyDir;
  index: number;
}

export type XfrmEvent =
  | { kind: 'sa'; op: 'new' | 'update'; sa: Sa }
  /** `sa`: the SA as it was, when the kernel says (it does since 2.6). */
  | { kind: 'sa'; op: 'delete'; id: SaKey; sa?: Sa }
  /** A soft (renew it) or hard (it is gone) lifetime limit reached; `sa` has no algorithms. */
  | { kind: 'expire'; hard: boolean; sa: Sa }
  | { kind: 'policy'; op: 'new' | 'update'; policy: Policy }
  | { kind: 'policy'; op: 'delete'; id: PolicyKey; policy?: Policy }
  /**
   * An SA's replay state or counters: `cause` says why (sequence numbers moved past the replay
   * threshold, the timer, or a user's XFRM_MSG_NEWAE). `replay.window` is 0 for a legacy
   * replay state (its attribute lacks it). Thresholds come only when `flags` asks for them:
   * sequence numbers, and 100 ms units for the timer.
   */
  | {
      kind: 'aevent';
      id: SaKey;
      src: string;
      reqid: number;
      flags: number;
      cause?: 'replay' | 'timer' | 'update';
      replay?: Replay;
      current?: NonNullable<Sa['current']>;
      replayThreshold?: number;
      timerThreshold?: number;
    }
  /** Traffic matched `policy` and found no SA: the kernel asks a key manager for one (`seq` names the request). */
  | { kind: 'acquire'; id: SaKey; src: string; selector: Selector; policy: Policy; seq: number }
  /** `proto` absent: SAs of every protocol. */
  | { kind: 'flush'; table: 'sa'; proto?: IpsecProto }
  | { kind: 'flush'; table: 'policy' }
  /** The kernel dropped notifications (receive buffer full): dump to learn what is installed. */
  | { kind: 'overflow' }
  /** Reading the socket failed; the stream goes on. */
  | { kind: 'error'; error: XfrmError }
  | { kind: 'malformed'; type: number; error: string; payload: Buffer }
  /** A message type not decoded here, or an SA or policy of another family than IPv4. */
  | { kind: 'other'; type: number; payload: Buffer };

/** XFRM_AE_* (enum xfrm_ae_ftype_t): what an async event carries, and why it came. */
export const XFRM_AE = { RTHR: 1, RVAL: 2, LVAL: 4, ETHR: 8, CR: 16, CE: 32, CU: 64 } as const;
const AE_CAUSE = [
  [XFRM_AE.CR, 'replay'],
  [XFRM_AE.CE, 'timer'],
  [XFRM_AE.CU, 'update'],
] as const;
const IPSEC_PROTO_ANY = 255;

function need(b: Buffer, size: number, what: string): void {
  if (b.length < size) throw new XfrmError(`${what} of ${b.length} bytes, at least ${size} expected`);
}

function proto(n: number): IpsecProto {
  const p = protoName(n);
  if (!p) throw new XfrmError(`SA protocol ${n}: not ESP, AH or IPComp`);
  return p;
}

function dir(n: number): PolicyDir {
  const d = DIRS[n];
  if (!d) throw new XfrmError(`policy direction ${n}: not in, out or fwd`);
  return d;
}

/** A struct xfrm_usersa_id at `off`. */
function saKey(b: Buffer, off: number): SaKey {
  const L = LAYOUT.xfrm_usersa_id;
  return {
    dst: readAddr(b, off + L.daddr, b.readUInt16LE(off + L.family)),
    spi: b.readUInt32BE(off + L.spi),
    proto: proto(b.readUInt8(off + L.proto)),
  };
}

/** The value of the first attribute of `type` from `off` on. */
function attrOf(b: Buffer, off: number, type: number): Buffer | undefined {
  for (const [t, v] of nlattrs(b, off)) if (t === type) return v;
  return undefined;
}

// A struct embedded in a notification, with the message's attributes after it, reads as the
// message that carries that struct alone: the codecs skip attributes they do not know.
const embedded = (head: Buffer, b: Buffer, attrsFrom: number) => Buffer.concat([head, b.subarray(attrsFrom)]);

function decode(type: number, b: Buffer): XfrmEvent | undefined {
  switch (type) {
    case XFRM_MSG.NEWSA:
    case XFRM_MSG.UPDSA:
      need(b, LAYOUT.xfrm_usersa_info.size, 'xfrm_usersa_info');
      if (!inetFamily(b, LAYOUT.xfrm_usersa_info.family)) return undefined;
      return { kind: 'sa', op: type === XFRM_MSG.NEWSA ? 'new' : 'update', sa: decodeSa(b) };
    case XFRM_MSG.DELSA: {
      const L = LAYOUT.xfrm_usersa_id;
      need(b, L.size, 'xfrm_usersa_id');
      if (!inetFamily(b, L.family)) return undefined;
      const full = attrOf(b, L.size, XFRMA.SA);
      return { kind: 'sa', op: 'delete', id: saKey(b, 0), ...(full && { sa: decodeSa(embedded(full, b, L.size)) }) };
    }
    case XFRM_MSG.EXPIRE: {
      const L = LAYOUT.xfrm_user_expire;
      need(b, L.size, 'xfrm_user_expire');
      if (!inetFamily(b, L.state + LAYOUT.xfrm_usersa_info.family)) return undefined;
      return {
        kind: 'expire',
        hard: b.readUInt8(L.hard) !== 0,
        sa: decodeSa(embedded(b.subarray(L.state, L.state + LAYOUT.xfrm_usersa_info.size), b, L.size)),
      };
    }
    case XFRM_MSG.NEWPOLICY:
    case XFRM_MSG.UPDPOLICY:
      need(b, LAYOUT.xfrm_userpolicy_info.size, 'xfrm_userpolicy_info');
      if (!inetFamily(b, LAYOUT.xfrm_selector.family)) return undefined;
      dir(b.readUInt8(LAYOUT.xfrm_userpolicy_info.dir));
      return { kind: 'policy', op: type === XFRM_MSG.NEWPOLICY ? 'new' : 'update', policy: decodePolicy(b) };
    case XFRM_MSG.DELPOLICY: {
      const L = LAYOUT.xfrm_userpolicy_id;
      need(b, L.size, 'xfrm_userpolicy_id');
      const full = attrOf(b, L.size, XFRMA.POLICY);
      // Deleted by index, the id's selector is empty: the full policy's tells the family.
      if (full) need(full, LAYOUT.xfrm_userpolicy_info.size, 'XFRMA_POLICY');
      if (!inetFamily(full ?? b, LAYOUT.xfrm_selector.family)) return undefined;
      const id: PolicyKey = {
        // Deleted by index, the id's selector is AF_UNSPEC: read as the full policy's family.
        selector: readSelector(b, L.sel, (full ?? b).readUInt16LE(LAYOUT.xfrm_selector.family)),
        dir: dir(b.readUInt8(L.dir)),
        index: b.readUInt32LE(L.index),
      };
      return { kind: 'policy', op: 'delete', id, ...(full && { policy: decodePolicy(embedded(full, b, L.size)) }) };
    }
    case XFRM_MSG.NEWAE: {
      const L = LAYOUT.xfrm_aevent_id;
      need(b, L.size, 'xfrm_aevent_id');
      if (!inetFamily(b, L.sa_id + LAYOUT.xfrm_usersa_id.family)) return undefined;
      const flags = b.readUInt32LE(L.flags);
      const e: Extract<XfrmEvent, { kind: 'aevent' }> = {
        kind: 'aevent',
        id: saKey(b, L.sa_id),
        src: readAddr(b, L.saddr, b.readUInt16LE(L.sa_id + LAYOUT.xfrm_usersa_id.family)),
        reqid: b.readUInt32LE(L.reqid),
        flags,
      };
      const cause = AE_CAUSE.find(([bit]) => flags & bit);
      if (cause) e.cause = cause[1];
      for (const [t, v] of nlattrs(b, L.size)) {
        const replay = decodeReplay(t, v, 0);
        if (replay) e.replay = replay;
        else if (t === XFRMA.LTIME_VAL) e.current = readCurrent(v, 0);
        else if (t === XFRMA.REPLAY_THRESH && flags & XFRM_AE.RTHR) e.replayThreshold = v.readUInt32LE(0);
        else if (t === XFRMA.ETIMER_THRESH && flags & XFRM_AE.ETHR) e.timerThreshold = v.readUInt32LE(0);
      }
      return e;
    }
    case XFRM_MSG.ACQUIRE: {
      const L = LAYOUT.xfrm_user_acquire;
      const I = LAYOUT.xfrm_id;
      need(b, L.size, 'xfrm_user_acquire');
      if (!inetFamily(b, L.sel + LAYOUT.xfrm_selector.family)) return undefined;
      const policy = decodePolicy(
        embedded(b.subarray(L.policy, L.policy + LAYOUT.xfrm_userpolicy_info.size), b, L.size),
      );
      // The SA to acquire is of its template's family (a tunnel may carry the other one).
      const family = policy.tmpls[0]
        ? familyOf(policy.tmpls[0].dst)
        : b.readUInt16LE(L.sel + LAYOUT.xfrm_selector.family);
      return {
        kind: 'acquire',
        id: {
          dst: readAddr(b, L.id + I.daddr, family),
          spi: b.readUInt32BE(L.id + I.spi),
          proto: proto(b.readUInt8(L.id + I.proto)),
        },
        src: readAddr(b, L.saddr, family),
        selector: readSelector(b, L.sel),
        policy,
        seq: b.readUInt32LE(L.seq),
      };
    }
    case XFRM_MSG.FLUSHSA: {
      need(b, LAYOUT.xfrm_usersa_flush.size, 'xfrm_usersa_flush');
      const p = b.readUInt8(LAYOUT.xfrm_usersa_flush.proto);
      return p === IPSEC_PROTO_ANY ? { kind: 'flush', table: 'sa' } : { kind: 'flush', table: 'sa', proto: proto(p) };
    }
    case XFRM_MSG.FLUSHPOLICY:
      return { kind: 'flush', table: 'policy' };
    default:
      return undefined;
  }
}

function xfrmError(e: NonNullable<XfrmEventMessage['error']>): XfrmError {
  return new XfrmError(e.message, e.op, e.code, e.errno, e.detail);
}

/** One entry of the addon's batch as an event; never throws. */
export function decodeXfrmEvent(m: XfrmEventMessage): XfrmEvent {
  if (m.overflow) return { kind: 'overflow' };
  if (m.error) return { kind: 'error', error: xfrmError(m.error) };
  try {
    return decode(m.type, m.payload) ?? { kind: 'other', type: m.type, payload: m.payload };
  } catch (e) {
    return { kind: 'malformed', type: m.type, error: e instanceof Error ? e.message : String(e), payload: m.payload };
  }
}

/**
 * A subscription to XFRM notifications of the network namespace it was opened in. Events
 * are handed to `onEvent` on Node's event loop, in the kernel's order; none after close().
 * An open stream keeps the process alive. A handler that throws is an uncaught exception,
 * as from any event emitter.
 */
export class XfrmEventStream {
  /** What was delivered: events (all kinds), overflows, malformed messages and read errors. */
  readonly stats = { events: 0, overflows: 0, malformed: 0, errors: 0 };
  private handle: EventSource | undefined;

  private constructor(
    groups: readonly number[],
    private readonly onEvent: (e: XfrmEvent) => void,
    rcvBuf?: number,
  ) {
    try {
      this.handle = openXfrmEvents(groups, (msgs) => this.deliver(msgs), rcvBuf);
    } catch (e) {
      if (!(e instanceof SyscallError)) throw e;
      throw new XfrmError(`${e.op}: ${e.explanation}`, e.op, e.code, e.errno, e.reason, e);
    }
  }

  /**
   * Subscribes, in the calling thread's network namespace (wrap the call in inNetns for
   * another). `rcvBuf`: the socket's receive buffer in bytes (4 MiB by default); a burst
   * larger than it is lost and reported as `overflow`.
   */
  static open(
    groups: readonly XfrmGroup[],
    onEvent: (e: XfrmEvent) => void,
    opts: { rcvBuf?: number } = {},
  ): XfrmEventStream {
    if (!groups.length) throw new XfrmError('XFRM events: no group to subscribe to');
    for (const g of groups)
      if (!(g in XFRM_GROUPS))
        throw new XfrmError(`XFRM events: unknown group ${g} (${Object.keys(XFRM_GROUPS).join(', ')})`);
    return new XfrmEventStream(
      groups.map((g) => XFRM_GROUPS[g]),
      onEvent,
      opts.rcvBuf,
    );
  }

  get closed(): boolean {
    return this.handle === undefined;
  }

  /** Stops the subscription; no event is delivered after it, not even the rest of a batch. Idempotent. */
  close(): void {
    const h = this.handle;
    this.handle = undefined;
    h?.close();
  }

  private deliver(msgs: XfrmEventMessage[]): void {
    for (const m of msgs) {
      if (!this.handle) return;
      const e = decodeXfrmEvent(m);
      this.stats.events++;
      if (e.kind === 'overflow') this.stats.overflows++;
      else if (e.kind === 'malformed') this.stats.malformed++;
      else if (e.kind === 'error') this.stats.errors++;
      this.onEvent(e);
    }
  }
}
