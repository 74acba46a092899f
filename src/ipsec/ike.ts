/*
 * IKE continuity (the seeds' second half of IPsec recovery), with strongSwan's charon on every
 * routing node, over VICI:
 * - the owner of a DVIPA records, next to the sealed SA records, each IKE SA whose local
 *   address is the DVIPA: connection name, identities, addresses, SPIs, and its CHILD SAs
 *   (name, reqid, SPIs, traffic selectors), kept current from charon's events;
 * - a new owner, once the kernel SAs are re-installed and the address is here, asks its own
 *   charon to initiate the recorded connections (the re-installed SAs carry traffic until
 *   then). charon sends INITIAL_CONTACT (it has no IKE SA with that peer), so the peer drops
 *   the predecessor's IKE SA and its CHILD SAs locally, without a message to the old owner;
 *   the re-installed outbound SAs are held meanwhile (see PeerHandover). Once a peer's CHILD
 *   SAs are installed, the re-installed SAs of that peer are removed and the new records
 *   stored at the new epoch;
 * - a node that no longer owns the DVIPA makes its charon forget the DVIPA's IKE SAs. VICI has
 *   no local-only forget: `terminate` always queues a DELETE (`force` only skips waiting for
 *   the answer). So it runs only when the address is gone from this node (it waits for the
 *   agent's release), where the DELETE cannot leave with the DVIPA as source (EADDRNOTAVAIL); the
 *   peer's SAs, now the new owner's, are untouched. `force` with timeout -1: charon destroys
 *   the IKE SA at once instead of retransmitting. That holds with mobike = no only: with MOBIKE,
 *   charon moves the IKE SA to the node's own address as the DVIPA leaves (see forget).
 * Connections must be loaded in every routing node's charon under the same name, with the
 * DVIPA as local address and the peer's address as remote (a node initiates to a named peer).
 */
import * as os from 'node:os';
import type { OwnerRecord } from '../net/ownership.js';
import type { Logger } from '../log.js';
import { openJson, sealJson, StoreError } from './store.js';
import type { RecordStore } from './recovery.js';
import { ViciClient, ViciError, type ViciMessage } from './vici.js';

export interface IkeChild {
  name: string;
  reqid: number;
  state: string;
  mode: string;
  /** Hex, as charon shows them. */
  spiIn: string;
  spiOut: string;
  localTs: string[];
  remoteTs: string[];
}

export interface IkeSa {
  /** charon's id of the IKE SA in this daemon (not kept across nodes). */
  uniqueId: string;
  conn: string;
  state: string;
  localHost: string;
  remoteHost: string;
  localId: string;
  remoteId: string;
  initiatorSpi: string;
  responderSpi: string;
  initiator: boolean;
  /** Seconds since it was established. */
  establishedS: number;
  children: IkeChild[];
}

/** How this node came to hold a peer's IKE SA. */
export type IkeSource = 'negotiated' | 'inherited' | 'renegotiated';

export interface IkeRecord {
  dvipa: string;
  epoch: number;
  owner: string;
  savedAt: string;
  source: IkeSource;
  sa: Omit<IkeSa, 'uniqueId' | 'establishedS'>;
}

const str = (m: ViciMessage, k: string): string => {
  const v = m[k];
  if (typeof v !== 'string') throw new ViciError('decode', `list-sas: ${k} missing or not text`);
  return v;
};
/** An optional text value ('' when absent). */
const text = (m: ViciMessage, k: string): string => {
  const v = m[k];
  return typeof v === 'string' ? v : '';
};
const list = (m: ViciMessage, k: string): string[] => {
  const v = m[k];
  return Array.isArray(v) ? v : [];
};

/** charon's list-sas items (each a section named by the connection) as IKE SAs; a malformed one is an error. */
export function parseListSas(items: ViciMessage[]): IkeSa[] {
  return items.flatMap((item) =>
    Object.entries(item).map(([conn, v]): IkeSa => {
      if (typeof v !== 'object' || Array.isArray(v))
        throw new ViciError('decode', `list-sas: ${conn} is not a section`);
      const children = typeof v['child-sas'] === 'object' && !Array.isArray(v['child-sas']) ? v['child-sas'] : {};
      return {
        uniqueId: str(v, 'uniqueid'),
        conn,
        state: str(v, 'state'),
        localHost: str(v, 'local-host'),
        remoteHost: str(v, 'remote-host'),
        localId: str(v, 'local-id'),
        remoteId: str(v, 'remote-id'),
        initiatorSpi: str(v, 'initiator-spi'),
        responderSpi: str(v, 'responder-spi'),
        initiator: v.initiator === 'yes',
        establishedS: Number(v.established ?? 0),
        children: Object.values(children).map((c): IkeChild => {
          if (typeof c !== 'object' || Array.isArray(c)) {
            throw new ViciError('decode', `list-sas: a CHILD SA of ${conn} is not a section`);
          }
          return {
            name: str(c, 'name'),
            reqid: Number(c.reqid ?? 0),
            state: str(c, 'state'),
            mode: text(c, 'mode'),
            spiIn: text(c, 'spi-in'),
            spiOut: text(c, 'spi-out'),
            localTs: list(c, 'local-ts'),
            remoteTs: list(c, 'remote-ts'),
          };
        }),
      };
    }),
  );
}

/** What continuity asks of the IKE daemon (charon over VICI in production). */
export interface IkeDaemon {
  listSas(): Promise<IkeSa[]>;
  /** The names of the connections loaded. */
  conns(): Promise<string[]>;
  /** Starts initiating (does not wait for the result: list the SAs to see it). */
  initiate(conn: string, child?: string): Promise<void>;
  /** Destroys the IKE SA and its CHILD SAs at once (see the head comment on the DELETE). */
  forget(uniqueId: string): Promise<void>;
  /** Starts delivering changes (events) to whoever the daemon reports to. */
  watch?(): void;
  close(): void;
}

const CHANGE_EVENTS = ['ike-updown', 'child-updown', 'ike-rekey', 'child-rekey'];

/**
 * charon over its VICI socket: one connection for commands, one for events; either is opened
 * again at the next use after it failed (charon restarted), and `changed` is called on every
 * event and after a reconnection (events may have been missed).
 */
export class ViciDaemon implements IkeDaemon {
  private commands?: Promise<ViciClient>;
  private events?: Promise<ViciClient>;
  private retry?: NodeJS.Timeout;
  private closed = false;
  private quiet = false;

  constructor(
    private readonly path: string,
    private readonly changed: () => void,
    private readonly log: Logger,
    private readonly timeoutMs = 10_000,
  ) {}

  /** Registers for charon's events now (and again after charon went away). */
  watch(): void {
    if (this.events || this.closed) return;
    const opening = ViciClient.connect(this.path, { timeoutMs: this.timeoutMs }).then(async (c) => {
      if (this.closed) c.close();
      await c.listen(CHANGE_EVENTS, () => this.changed());
      c.onClose(() => this.lostEvents());
      this.changed();
      return c;
    });
    this.events = opening;
    opening.then(
      () => (this.quiet = false),
      (e: Error) => {
        // Said once per outage, not every retry.
        if (!this.quiet)
          this.log.warn({ vici: this.path, err: e.message }, "charon's events not received; retrying every second");
        this.quiet = true;
        this.lostEvents();
      },
    );
  }

  private lostEvents(): void {
    this.events = undefined;
    if (this.closed) return;
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.watch(), 1000);
  }

  private async client(): Promise<ViciClient> {
    const c = this.commands ? await this.commands.catch(() => undefined) : undefined;
    if (c && !c.closed) return c;
    this.commands = ViciClient.connect(this.path, { timeoutMs: this.timeoutMs });
    return this.commands;
  }

  async listSas(): Promise<IkeSa[]> {
    // Blocking (no noblock): an IKE SA busy in an exchange would otherwise be left out, and its record removed.
    return parseListSas((await (await this.client()).stream('list-sas', 'list-sa')).items);
  }

  async conns(): Promise<string[]> {
    return list(await (await this.client()).request('get-conns'), 'conns');
  }

  async initiate(conn: string, child?: string): Promise<void> {
    const which = { ike: conn, ...(child ? { child } : {}) };
    await (await this.client()).request('initiate', { ...which, timeout: '-1', 'init-limits': 'no' });
  }

  async forget(uniqueId: string): Promise<void> {
    await (await this.client()).request('terminate', { 'ike-id': uniqueId, force: 'yes', timeout: '-1' });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    for (const p of [this.commands, this.events])
      void p?.then(
        (c) => c.close(),
        () => undefined,
      );
    this.commands = this.events = undefined;
  }
}

export const ikePrefix = (dvipa: string) => `ike/${dvipa}/`;
export const ikeKey = (dvipa: string, sa: Pick<IkeSa, 'conn' | 'remoteHost'>) =>
  `${ikePrefix(dvipa)}${encodeURIComponent(sa.conn)}@${sa.remoteHost}`;

/** The DVIPA's IKE records that may be renegotiated (the newest epoch's, not ahead of ours), and why not the others. */
export function readIkeRecords(
  key: Buffer,
  blobs: Map<string, Buffer>,
  epoch: number,
): { records: IkeRecord[]; refused: StoreError[] } {
  const refused: StoreError[] = [];
  const opened: IkeRecord[] = [];
  for (const [where, blob] of blobs) {
    try {
      const r = openJson(key, where, blob) as IkeRecord;
      const shaped = typeof r?.epoch === 'number' && typeof r.sa?.conn === 'string';
      if (!shaped || typeof r.sa.remoteHost !== 'string' || !Array.isArray(r.sa.children)) {
        throw new StoreError(where, 'opens but is not an IKE record');
      }
      if (r.epoch > epoch) {
        throw new StoreError(where, `written at epoch ${r.epoch}, ahead of the DVIPA's epoch ${epoch}: refused`);
      }
      opened.push(r);
    } catch (e) {
      if (!(e instanceof StoreError)) throw e;
      refused.push(e);
    }
  }
  const newest = Math.max(0, ...opened.map((r) => r.epoch));
  return { records: opened.filter((r) => r.epoch === newest), refused };
}

/** An IKE SA with a peer as this node shows it. */
export interface IkePeerRow {
  conn: string;
  remote: string;
  remoteId: string;
  source: IkeSource;
  /** ESTABLISHED, ..., or PENDING: only known from the predecessor's record (renegotiation not done). */
  state: string;
  ageS: number;
  spis: string;
  children: Array<{ name: string; reqid: number; spiIn: string; spiOut: string; state: string }>;
  renegotiateMs?: number;
  error?: string;
}

export interface RenegotiationResult {
  peers: number;
  renegotiated: number;
  failed: Array<{ peer: string; error: string }>;
  refused: string[];
  tookMs: number;
}

export interface IkeOptions {
  /** How long a renegotiation may take before it counts as failed. */
  renegotiateMs?: number;
  /** How long a peer's outbound ESP stays held while its IKE_SA_INIT is unanswered, at the first attempt (see PeerHandover). */
  holdMs?: number;
  /** How long to wait for the DVIPA's address to be on this node before initiating. */
  addressMs?: number;
  addressHere?: (address: string) => boolean;
}

/**
 * The kernel's side of a peer's renegotiation. charon's IKE_AUTH carries INITIAL_CONTACT (it
 * has no IKE SA with the peer), and the peer, as it answers, destroys the predecessor's IKE SA
 * and its CHILD SAs: ESP sent on them from then on counts as state-less there. This node learns
 * the new CHILD SAs only from the answer, a round trip later. So the re-installed outbound SAs
 * stop before charon initiates (`hold`): the kernel queues what their policies match until
 * charon installs the new SAs and puts its policies over them (which re-runs the queue). A
 * hold costs the exchange's two round trips of delay, not packets (up to the kernel's 100 per
 * policy). `resume`: the held SAs carry traffic again (nothing was renegotiated).
 */
export interface PeerHandover {
  hold(peer: string): Promise<void>;
  resume(peer: string): Promise<void>;
  /** The peer's CHILD SAs are installed here: the re-installed copies go. */
  replaced(peer: string): Promise<void>;
}

/** An unanswered IKE_SA_INIT is given up after this long (charon's own first retransmission comes after 4 s). */
const HOLD_MS = 2000;
const childRow = (c: IkeChild) => ({ name: c.name, reqid: c.reqid, spiIn: c.spiIn, spiOut: c.spiOut, state: c.state });
/** Without an event, charon's SAs are listed again this often (events say what changed at once). */
const RELIST_MS = 5000;
const hasLocalAddress = (a: string) =>
  Object.values(os.networkInterfaces()).some((l) => l?.some((x) => x.address === a));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The fields of an IKE SA that make its record: a change in any of them is written. */
const recordOf = (sa: IkeSa): IkeRecord['sa'] => {
  const { uniqueId: _u, establishedS: _e, ...rest } = sa;
  return { ...rest, children: rest.children.filter((c) => c.state === 'INSTALLED') };
};

/** How a peer's IKE SA came to this node: renegotiated (in ms), or inherited (the record; why not renegotiated). */
interface PeerSource {
  source: IkeSource;
  ms?: number;
  error?: string;
  record?: IkeRecord;
}

export class IkeContinuity {
  /** Per DVIPA, per record key: what was last written. */
  private readonly written = new Map<string, Map<string, string>>();
  /** Per DVIPA, record keys in the store not written by this node (the predecessor's). */
  private readonly unknown = new Map<string, Set<string>>();
  /** Per DVIPA, per record key: how the IKE SA came here (absent: negotiated). */
  private readonly source = new Map<string, Map<string, PeerSource>>();
  private readonly results = new Map<string, RenegotiationResult & { at: string }>();
  /** Per DVIPA since this agent started: peers renegotiated and failed. */
  private readonly counts = new Map<string, { renegotiated: number; failed: number }>();
  private last = new Map<string, IkeSa[]>();
  /** Per DVIPA, when its IKE SAs were last listed; charon's events mark all stale. */
  private readonly listedAt = new Map<string, number>();

  constructor(
    readonly daemon: IkeDaemon,
    private readonly store: RecordStore,
    private readonly key: Buffer,
    private readonly node: string,
    private readonly log: Logger,
    private readonly opts: IkeOptions = {},
  ) {}

  private mineOf(sas: IkeSa[], dvipa: string): IkeSa[] {
    return sas.filter((s) => s.localHost === dvipa);
  }

  /** charon reported a change (an event): the next sync lists the SAs whenever it comes. */
  changed(): void {
    this.listedAt.clear();
  }

  /**
   * Writes the DVIPA's current IKE SAs where they changed, removes the records of those gone;
   * false: fenced off. Between charon's events, charon is asked at most every RELIST_MS.
   */
  async sync(dvipa: string, owner: OwnerRecord): Promise<boolean> {
    if (Date.now() - (this.listedAt.get(dvipa) ?? 0) < RELIST_MS) return true;
    this.listedAt.set(dvipa, Date.now());
    const all = await this.daemon.listSas();
    const mine = this.mineOf(all, dvipa);
    this.last.set(dvipa, mine);
    let written = this.written.get(dvipa);
    if (!written) this.written.set(dvipa, (written = new Map<string, string>()));
    let unknown = this.unknown.get(dvipa);
    if (!unknown) {
      const w = written;
      unknown = new Set([...(await this.store.getBlobs(ikePrefix(dvipa))).keys()].filter((k) => !w.has(k)));
      this.unknown.set(dvipa, unknown);
    }
    // Of several IKE SAs with one peer (a re-key's overlap), the newest.
    const current = new Map<string, IkeSa>();
    for (const sa of mine) {
      if (sa.state !== 'ESTABLISHED') continue;
      const k = ikeKey(dvipa, sa);
      const had = current.get(k);
      if (!had || sa.establishedS < had.establishedS) current.set(k, sa);
    }
    const sources = this.source.get(dvipa);
    const writes: Array<[string, Buffer, string]> = [];
    for (const [k, sa] of current) {
      const body = JSON.stringify(recordOf(sa));
      if (written.get(k) === body) continue;
      const source = sources?.get(k)?.source === 'renegotiated' ? 'renegotiated' : 'negotiated';
      const savedAt = new Date().toISOString();
      const r: IkeRecord = { dvipa, epoch: owner.epoch, owner: this.node, savedAt, source, sa: recordOf(sa) };
      writes.push([k, sealJson(this.key, k, r), body]);
    }
    if (
      writes.length &&
      !(await this.store.putBlobsFenced(
        writes.map(([k, b]) => [k, b]),
        dvipa,
        owner,
      ))
    )
      return false;
    for (const [k, , body] of writes) {
      written.set(k, body);
      unknown.delete(k);
    }
    for (const k of [...written.keys(), ...unknown]) {
      if (current.has(k) || sources?.get(k)?.source === 'inherited') continue;
      if (!(await this.store.deleteBlobsFenced(k, dvipa, owner))) return false;
      written.delete(k);
      unknown.delete(k);
    }
    return true;
  }

  /**
   * The new owner's half, once the kernel SAs are re-installed: the predecessor's IKE SAs
   * initiated again by this node's charon, each peer's outbound ESP held around it (see
   * PeerHandover); `handover.replaced(peer)` once a peer's CHILD SAs are all installed; then the
   * records rewritten at this epoch.
   */
  async takeover(dvipa: string, owner: OwnerRecord, handover: PeerHandover): Promise<RenegotiationResult> {
    const t0 = performance.now();
    const { records, refused } = readIkeRecords(this.key, await this.store.getBlobs(ikePrefix(dvipa)), owner.epoch);
    for (const e of refused) this.log.error({ dvipa, err: e.message }, 'IKE record refused');
    const sources = new Map<string, PeerSource>();
    this.source.set(dvipa, sources);
    let counts = this.counts.get(dvipa);
    if (!counts) this.counts.set(dvipa, (counts = { renegotiated: 0, failed: 0 }));
    const result: RenegotiationResult = {
      peers: records.length,
      renegotiated: 0,
      failed: [],
      refused: refused.map((e) => e.message),
      tookMs: 0,
    };
    if (!records.length) return result;
    for (const r of records) sources.set(ikeKey(dvipa, r.sa), { source: 'inherited', record: r });
    const fail = (r: IkeRecord, error: string) => {
      const k = ikeKey(dvipa, r.sa);
      sources.set(k, { ...sources.get(k)!, error });
      result.failed.push({ peer: r.sa.remoteHost, error });
      counts.failed++;
      const why = 'IKE SA not renegotiated: the re-installed SAs carry on until their lifetime ends';
      this.log.error({ dvipa, conn: r.sa.conn, peer: r.sa.remoteHost, err: error }, why);
    };
    const addressEnd = Date.now() + (this.opts.addressMs ?? 10_000);
    const here = this.opts.addressHere ?? hasLocalAddress;
    while (!here(dvipa) && Date.now() < addressEnd) await sleep(20);
    const loaded = new Set(await this.daemon.conns());
    const holdMs = this.opts.holdMs ?? HOLD_MS;
    /**
     * A peer under way: held since `heldAt` for up to `holdFor`, or let go until `retryAt` (its
     * IKE_SA_INIT went unanswered); each new attempt waits twice as long (a slow peer is not a lost one).
     */
    type Attempt = { r: IkeRecord; heldAt: number; holdFor: number; retryAt?: number };
    const attempt = async (r: IkeRecord, holdFor = holdMs): Promise<Attempt> => {
      await handover.hold(r.sa.remoteHost);
      try {
        if (!r.sa.children.length) await this.daemon.initiate(r.sa.conn);
        for (const c of r.sa.children) await this.daemon.initiate(r.sa.conn, c.name);
      } catch (e) {
        await handover.resume(r.sa.remoteHost);
        throw e;
      }
      return { r, heldAt: Date.now(), holdFor };
    };
    const pending: Attempt[] = [];
    for (const r of records) {
      if (!loaded.has(r.sa.conn)) {
        fail(r, `connection ${r.sa.conn} is not loaded in this node's charon`);
        continue;
      }
      try {
        pending.push(await attempt(r));
      } catch (e) {
        fail(r, (e as Error).message);
      }
    }
    const end = Date.now() + (this.opts.renegotiateMs ?? 30_000);
    while (pending.length) {
      const sas = this.mineOf(await this.daemon.listSas(), dvipa);
      for (const p of [...pending]) {
        const { r } = p;
        const ofPeer = sas.filter((s) => s.conn === r.sa.conn && s.remoteHost === r.sa.remoteHost);
        const up = ofPeer.find(
          (s) =>
            s.state === 'ESTABLISHED' &&
            r.sa.children.every((c) => s.children.some((n) => n.name === c.name && n.state === 'INSTALLED')),
        );
        if (up) {
          pending.splice(pending.indexOf(p), 1);
          const ms = Math.round(performance.now() - t0);
          sources.set(ikeKey(dvipa, r.sa), { source: 'renegotiated', ms });
          result.renegotiated++;
          counts.renegotiated++;
          await handover.replaced(r.sa.remoteHost);
          continue;
        }
        if (p.retryAt !== undefined) {
          if (Date.now() < p.retryAt) continue;
          try {
            Object.assign(p, await attempt(r, p.holdFor * 2), { retryAt: undefined });
          } catch (e) {
            pending.splice(pending.indexOf(p), 1);
            fail(r, (e as Error).message);
          }
          continue;
        }
        // No answer to IKE_SA_INIT yet (no responder SPI; charon would retransmit only after
        // 4 s): the peer has seen no IKE_AUTH, so it still has the SAs the hold stopped. They
        // carry traffic again, this attempt goes, and a new one starts after as long.
        const unanswered = ofPeer.every((s) => s.state !== 'ESTABLISHED' && /^0*$/.test(s.responderSpi));
        if (Date.now() - p.heldAt < p.holdFor || !unanswered) continue;
        for (const s of ofPeer) await this.daemon.forget(s.uniqueId);
        await handover.resume(r.sa.remoteHost);
        p.retryAt = Date.now() + p.holdFor;
        this.log.warn(
          { dvipa, conn: r.sa.conn, peer: r.sa.remoteHost, heldMs: p.holdFor },
          'IKE_SA_INIT unanswered while outbound ESP was held: the held SAs carry traffic again; initiating again later',
        );
      }
      if (!pending.length) break;
      if (Date.now() > end) {
        for (const p of pending.splice(0)) {
          // The first half carries on (if the peer took an IKE_AUTH, the held SAs are dead there anyway).
          if (p.retryAt === undefined) await handover.resume(p.r.sa.remoteHost);
          fail(p.r, `not established within ${this.opts.renegotiateMs ?? 30_000} ms`);
        }
        break;
      }
      await sleep(50);
    }
    result.tookMs = Math.round(performance.now() - t0);
    this.results.set(dvipa, { ...result, at: new Date().toISOString() });
    // The predecessor's records go, ours replace them (a failed peer's record stays for the display only).
    this.unknown.delete(dvipa);
    this.listedAt.delete(dvipa);
    for (const [k, s] of sources) if (s.source === 'inherited') sources.delete(k);
    await this.sync(dvipa, owner);
    for (const r of records) {
      const failed = result.failed.find((f) => f.peer === r.sa.remoteHost);
      if (failed) sources.set(ikeKey(dvipa, r.sa), { source: 'inherited', record: r, error: failed.error });
    }
    return result;
  }

  /**
   * This node no longer owns the DVIPA: its charon forgets the DVIPA's IKE SAs; how many. Only
   * once the address is gone from here, as charon's DELETE would otherwise reach the peer and
   * end the SAs the new owner carries on with. The agent gives the address up through its `ip`
   * batch, a moment after it lost the DVIPA (under load, hundreds of ms): `released` resolves
   * once it has, waited for up to `waitMs`. Still here then (the batch failed, or this node
   * owns the DVIPA again): nothing is forgotten (logged); the next acquisition forgets them
   * before it renegotiates.
   */
  async forget(dvipa: string, released: Promise<unknown> = Promise.resolve(), waitMs = 0): Promise<number> {
    // By SPIs: a move keeps them, while charon's ids start over when it restarts.
    const spis = (s: IkeSa) => `${s.initiatorSpi}_${s.responderSpi}`;
    const known = new Set((this.last.get(dvipa) ?? []).map(spis));
    this.written.delete(dvipa);
    this.unknown.delete(dvipa);
    this.source.delete(dvipa);
    this.last.delete(dvipa);
    this.listedAt.delete(dvipa);
    const here = this.opts.addressHere ?? hasLocalAddress;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([released, new Promise((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
    const all = await this.daemon.listSas();
    const mine = this.mineOf(all, dvipa);
    if (mine.length && here(dvipa)) {
      const why = "charon keeps the DVIPA's IKE SAs: the address is on this node, a DELETE would reach the peer";
      this.log.warn({ dvipa, ikeSas: mine.length }, why);
      return 0;
    }
    // With MOBIKE, charon moves an IKE SA to another address of this node once the DVIPA left
    // (and the peer follows): it is the DVIPA's all the same, and goes too; its DELETE, sent
    // from that address, does reach the peer.
    const moved = all.filter((s) => known.has(spis(s)) && s.localHost !== dvipa);
    if (moved.length) {
      const why =
        "charon moved the DVIPA's IKE SAs to this node's own address (MOBIKE): forgotten, the peer receives their DELETE; the connections need mobike = no";
      this.log.error({ dvipa, ikeSas: moved.length, to: moved[0].localHost }, why);
      mine.push(...moved);
    }
    for (const sa of mine) await this.daemon.forget(sa.uniqueId);
    const msg = "charon forgot the DVIPA's IKE SAs: the new owner renegotiates them";
    if (mine.length) this.log.info({ dvipa, ikeSas: mine.length }, msg);
    return mine.length;
  }

  /** The CHILD SAs' SPIs (hex) that this node renegotiated for the DVIPA. */
  renegotiatedSpis(dvipa: string): Set<string> {
    const sources = this.source.get(dvipa);
    const spis = new Set<string>();
    for (const sa of this.last.get(dvipa) ?? []) {
      if (sources?.get(ikeKey(dvipa, sa))?.source !== 'renegotiated') continue;
      for (const c of sa.children) for (const s of [c.spiIn, c.spiOut]) spis.add(s.padStart(8, '0'));
    }
    return spis;
  }

  lastRenegotiation(dvipa: string): (RenegotiationResult & { at: string }) | undefined {
    return this.results.get(dvipa);
  }

  totals(dvipa: string): { renegotiated: number; failed: number } {
    return { ...(this.counts.get(dvipa) ?? { renegotiated: 0, failed: 0 }) };
  }

  /** Per peer of the DVIPA: its IKE SA here (as of the last scan), how it came, and its CHILD SAs. */
  rows(dvipa: string): IkePeerRow[] {
    const sources = this.source.get(dvipa);
    const rows: IkePeerRow[] = (this.last.get(dvipa) ?? []).map((sa) => {
      const s = sources?.get(ikeKey(dvipa, sa));
      return {
        conn: sa.conn,
        remote: sa.remoteHost,
        remoteId: sa.remoteId,
        source: s?.source === 'renegotiated' ? 'renegotiated' : 'negotiated',
        state: sa.state,
        ageS: sa.establishedS,
        spis: `${sa.initiatorSpi}_i ${sa.responderSpi}_r`,
        children: sa.children.map(childRow),
        ...(s?.ms !== undefined ? { renegotiateMs: s.ms } : {}),
      };
    });
    for (const s of sources?.values() ?? []) {
      if (s.source !== 'inherited' || !s.record) continue;
      const r = s.record.sa;
      rows.push({
        conn: r.conn,
        remote: r.remoteHost,
        remoteId: r.remoteId,
        source: 'inherited',
        state: 'PENDING',
        ageS: Math.round((Date.now() - Date.parse(s.record.savedAt)) / 1000),
        spis: `${r.initiatorSpi}_i ${r.responderSpi}_r`,
        children: r.children.map(childRow),
        ...(s.error ? { error: s.error } : {}),
      });
    }
    return rows.sort((a, b) => a.remote.localeCompare(b.remote) || a.conn.localeCompare(b.conn));
  }
}
