/*
 * VICI, strongSwan's control protocol (charon's vici plugin, a unix socket): the codec and a
 * small client. There is no maintained npm client, and dvipa needs only a few commands and
 * events, so this is written from the protocol's description:
 *
 *   frame   = length (u32 BE, what follows) packet
 *   packet  = type (u8) [name (u8 length, text): the named types] [message]
 *   message = elements: SECTION_START name .. SECTION_END, KEY_VALUE key value (u16 length),
 *             LIST_START name, LIST_ITEM value .. LIST_END
 *
 * Requests are answered in order, one at a time per connection; events come in between. A
 * streamed command (list-sas) sends its items as events of a name registered around it.
 * Everything charon sends is bounded (frame size, nesting) and checked: a malformed answer
 * closes the connection with a ViciError, never a crash or a half-read state.
 */
import * as net from 'node:net';
import { DvipaError } from '../errors.js';

export const enum PacketType {
  CmdRequest = 0,
  CmdResponse = 1,
  CmdUnknown = 2,
  EventRegister = 3,
  EventUnregister = 4,
  EventConfirm = 5,
  EventUnknown = 6,
  Event = 7,
}
const NAMED = new Set([PacketType.CmdRequest, PacketType.EventRegister, PacketType.EventUnregister, PacketType.Event]);

const enum Element {
  SectionStart = 1,
  SectionEnd = 2,
  KeyValue = 3,
  ListStart = 4,
  ListItem = 5,
  ListEnd = 6,
}

/** A VICI message: values are text (charon's are), lists of text, or sections. */
export interface ViciMessage {
  [key: string]: ViciValue;
}
export type ViciValue = string | string[] | ViciMessage;

export interface Packet {
  type: PacketType;
  name?: string;
  message?: ViciMessage;
}

/** charon's own limit on a message (vici_message.h: 512 KiB). */
export const MAX_FRAME = 512 * 1024;
/** Deeper than any message charon sends (list-sas: sa, child-sas, child, ...). */
const MAX_DEPTH = 16;

export type ViciErrorKind =
  'encode' | 'decode' | 'connect' | 'closed' | 'timeout' | 'unknown-command' | 'unknown-event' | 'failed';

/** What went wrong talking to charon: which kind, and charon's own words when it gave some. */
export class ViciError extends DvipaError {
  constructor(
    readonly kind: ViciErrorKind,
    message: string,
  ) {
    super(`vici: ${message}`);
  }
}

const text = (what: string, s: string, max: number): Buffer => {
  const b = Buffer.from(s, 'utf8');
  if (b.length > max) throw new ViciError('encode', `${what} of ${b.length} bytes, at most ${max}`);
  return b;
};
const name8 = (s: string): Buffer => {
  const b = text('name', s, 255);
  if (!b.length) throw new ViciError('encode', 'empty name');
  return Buffer.concat([Buffer.of(b.length), b]);
};
const value16 = (s: string): Buffer => {
  const b = text('value', s, 0xffff);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(b.length);
  return Buffer.concat([len, b]);
};

function encodeElements(m: ViciMessage, out: Buffer[], depth: number): void {
  if (depth > MAX_DEPTH) throw new ViciError('encode', `sections nested deeper than ${MAX_DEPTH}`);
  for (const [k, v] of Object.entries(m)) {
    if (typeof v === 'string') out.push(Buffer.of(Element.KeyValue), name8(k), value16(v));
    else if (Array.isArray(v)) {
      out.push(Buffer.of(Element.ListStart), name8(k));
      for (const item of v) {
        if (typeof item !== 'string') throw new ViciError('encode', `list ${k}: items are text`);
        out.push(Buffer.of(Element.ListItem), value16(item));
      }
      out.push(Buffer.of(Element.ListEnd));
    } else if (v && typeof v === 'object') {
      out.push(Buffer.of(Element.SectionStart), name8(k));
      encodeElements(v, out, depth + 1);
      out.push(Buffer.of(Element.SectionEnd));
    } else throw new ViciError('encode', `${k}: a value is text, a list of text or a section`);
  }
}

export function encodeMessage(m: ViciMessage): Buffer {
  const out: Buffer[] = [];
  encodeElements(m, out, 0);
  return Buffer.concat(out);
}

/** A frame: the length, the type, the name where the type has one, the message. */
export function encodePacket(p: Packet): Buffer {
  if (NAMED.has(p.type) !== (p.name !== undefined)) {
    throw new ViciError('encode', `packet type ${p.type} ${p.name === undefined ? 'needs' : 'has no'} name`);
  }
  const none = Buffer.alloc(0);
  const body = Buffer.concat([
    Buffer.of(p.type),
    p.name !== undefined ? name8(p.name) : none,
    p.message ? encodeMessage(p.message) : none,
  ]);
  if (body.length > MAX_FRAME) throw new ViciError('encode', `packet of ${body.length} bytes, at most ${MAX_FRAME}`);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

/** Reads a message's elements, checking every length against what is there. */
class Reader {
  private at = 0;
  constructor(private readonly b: Buffer) {}
  get done(): boolean {
    return this.at >= this.b.length;
  }
  private take(n: number, what: string): Buffer {
    if (this.at + n > this.b.length) throw new ViciError('decode', `truncated ${what} at byte ${this.at}`);
    const s = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return s;
  }
  u8(what: string): number {
    return this.take(1, what)[0];
  }
  name(): string {
    const n = this.u8('name length');
    if (!n) throw new ViciError('decode', `empty name at byte ${this.at - 1}`);
    return this.take(n, 'name').toString('utf8');
  }
  value(): string {
    return this.take(this.take(2, 'value length').readUInt16BE(0), 'value').toString('utf8');
  }
}

function put(m: ViciMessage, k: string, v: ViciValue): void {
  // A duplicate would silently drop one of charon's values; none of its messages has one.
  if (Object.prototype.hasOwnProperty.call(m, k)) throw new ViciError('decode', `duplicate key ${JSON.stringify(k)}`);
  // Defined, not assigned: a key named __proto__ stays a key.
  Object.defineProperty(m, k, { value: v, enumerable: true, writable: true, configurable: true });
}

export function decodeMessage(b: Buffer): ViciMessage {
  const r = new Reader(b);
  const root: ViciMessage = {};
  const stack: ViciMessage[] = [root];
  while (!r.done) {
    const type = r.u8('element') as Element;
    const top = stack[stack.length - 1];
    switch (type) {
      case Element.SectionStart: {
        if (stack.length > MAX_DEPTH) throw new ViciError('decode', `sections nested deeper than ${MAX_DEPTH}`);
        const s: ViciMessage = {};
        put(top, r.name(), s);
        stack.push(s);
        break;
      }
      case Element.SectionEnd:
        if (stack.length === 1) throw new ViciError('decode', 'section end without a section');
        stack.pop();
        break;
      case Element.KeyValue:
        put(top, r.name(), r.value());
        break;
      case Element.ListStart: {
        const key = r.name();
        const items: string[] = [];
        for (;;) {
          const t = r.u8('list element') as Element;
          if (t === Element.ListEnd) break;
          if (t !== Element.ListItem) throw new ViciError('decode', `element ${t} inside list ${key}`);
          items.push(r.value());
        }
        put(top, key, items);
        break;
      }
      default:
        throw new ViciError('decode', `unknown element type ${type}`);
    }
  }
  if (stack.length !== 1) throw new ViciError('decode', `${stack.length - 1} section(s) not closed`);
  return root;
}

/** One packet, the frame's length already taken off. */
export function decodePacket(b: Buffer): Packet {
  if (!b.length) throw new ViciError('decode', 'empty packet');
  const type = b[0] as PacketType;
  if (type > PacketType.Event) throw new ViciError('decode', `unknown packet type ${type}`);
  if (!NAMED.has(type)) return { type, message: decodeMessage(b.subarray(1)) };
  const n = b.length > 1 ? b[1] : 0;
  if (!n || b.length < 2 + n) throw new ViciError('decode', `packet type ${type}: name missing or truncated`);
  return { type, name: b.subarray(2, 2 + n).toString('utf8'), message: decodeMessage(b.subarray(2 + n)) };
}

/** Cuts a byte stream into packets; a frame longer than `max` is refused before it is buffered. */
export class FrameSplitter {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly max = MAX_FRAME) {}

  push(chunk: Buffer): Packet[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Packet[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > this.max) throw new ViciError('decode', `frame of ${len} bytes, at most ${this.max}`);
      if (this.buf.length < 4 + len) break;
      out.push(decodePacket(this.buf.subarray(4, 4 + len)));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }

  /** Bytes of a frame begun but not complete (at close: a truncated frame). */
  get pending(): number {
    return this.buf.length;
  }
}

export interface ViciOptions {
  /** A request (or a stream) not answered in this time closes the connection. */
  timeoutMs?: number;
  maxFrame?: number;
}

type Waiter = { types: PacketType[]; resolve: (p: Packet) => void };

/**
 * A connection to charon. Operations run one after another (charon answers in order);
 * events registered with `listen` are delivered whenever they come. A timeout, a malformed
 * packet or a closed socket ends the connection: every pending operation fails with it.
 */
export class ViciClient {
  private readonly splitter: FrameSplitter;
  private waiter?: Waiter;
  private chain: Promise<unknown> = Promise.resolve();
  private failure?: ViciError;
  private readonly listeners = new Map<string, Set<(m: ViciMessage) => void>>();
  private readonly timeoutMs: number;
  private readonly closeListeners: Array<(e: ViciError) => void> = [];

  private constructor(
    private readonly sock: net.Socket,
    opts: ViciOptions,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.splitter = new FrameSplitter(opts.maxFrame ?? MAX_FRAME);
    sock.on('data', (chunk: Buffer) => {
      let packets: Packet[];
      try {
        packets = this.splitter.push(chunk);
      } catch (e) {
        return this.fail(e as ViciError);
      }
      for (const p of packets) this.dispatch(p);
    });
    sock.on('error', (e) => this.fail(new ViciError('closed', `socket: ${e.message}`)));
    sock.on('close', () => {
      const how = this.splitter.pending ? 'connection closed inside a frame' : 'connection closed by charon';
      this.fail(new ViciError('closed', how));
    });
  }

  static connect(path: string, opts: ViciOptions = {}): Promise<ViciClient> {
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new ViciError('timeout', `no connection to ${path} in ${opts.timeoutMs ?? 10_000} ms`));
      }, opts.timeoutMs ?? 10_000);
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(new ViciError('connect', `${path}: ${e.message}`));
      });
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new ViciClient(sock, opts));
      });
    });
  }

  get closed(): boolean {
    return !!this.failure;
  }

  close(): void {
    this.fail(new ViciError('closed', 'closed by dvipa'));
  }

  /** Called once when the connection ends, for whatever reason. */
  onClose(fn: (e: ViciError) => void): void {
    if (this.failure) fn(this.failure);
    else this.closeListeners.push(fn);
  }

  private fail(e: ViciError): void {
    if (this.failure) return;
    this.failure = e;
    this.sock.destroy();
    const w = this.waiter;
    this.waiter = undefined;
    w?.resolve({ type: -1 as PacketType });
    for (const fn of this.closeListeners.splice(0)) fn(e);
  }

  private dispatch(p: Packet): void {
    if (p.type === PacketType.Event) {
      for (const fn of this.listeners.get(p.name!) ?? []) fn(p.message!);
      return;
    }
    const w = this.waiter;
    if (!w || !w.types.includes(p.type)) return this.fail(new ViciError('decode', `unexpected packet type ${p.type}`));
    this.waiter = undefined;
    w.resolve(p);
  }

  /** Sends a packet and waits for the answer of one of `types`; runs after the operations before it. */
  private exchange(p: Packet, types: PacketType[], timeoutMs: number): Promise<Packet> {
    const run = () =>
      new Promise<Packet>((resolve, reject) => {
        if (this.failure) return reject(this.failure);
        const late = new ViciError('timeout', `${p.name ?? p.type}: no answer in ${timeoutMs} ms`);
        const timer = setTimeout(() => this.fail(late), timeoutMs);
        this.waiter = {
          types,
          resolve: (answer) => {
            clearTimeout(timer);
            if (this.failure) reject(this.failure);
            else resolve(answer);
          },
        };
        try {
          this.sock.write(encodePacket(p));
        } catch (e) {
          clearTimeout(timer);
          this.waiter = undefined;
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    const next = this.chain.then(run, run);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async register(event: string, on: boolean, timeoutMs: number): Promise<void> {
    const type = on ? PacketType.EventRegister : PacketType.EventUnregister;
    const p = await this.exchange({ type, name: event }, [PacketType.EventConfirm, PacketType.EventUnknown], timeoutMs);
    if (p.type === PacketType.EventUnknown) throw new ViciError('unknown-event', `charon has no event ${event}`);
  }

  /** A command and its answer; charon's `success = no` becomes a ViciError with its errmsg. */
  async request(command: string, message: ViciMessage = {}, timeoutMs = this.timeoutMs): Promise<ViciMessage> {
    const answers = [PacketType.CmdResponse, PacketType.CmdUnknown];
    const p = await this.exchange({ type: PacketType.CmdRequest, name: command, message }, answers, timeoutMs);
    if (p.type === PacketType.CmdUnknown) throw new ViciError('unknown-command', `charon has no command ${command}`);
    const m = p.message!;
    if (m.success === 'no') {
      throw new ViciError('failed', `${command}: ${typeof m.errmsg === 'string' ? m.errmsg : 'failed'}`);
    }
    return m;
  }

  /** A streamed command: its items (events named `event`) and its final answer. */
  async stream(
    command: string,
    event: string,
    message: ViciMessage = {},
    timeoutMs = this.timeoutMs,
  ): Promise<{ items: ViciMessage[]; answer: ViciMessage }> {
    const items: ViciMessage[] = [];
    const collect = (m: ViciMessage) => items.push(m);
    this.on(event, collect);
    try {
      await this.register(event, true, timeoutMs);
      try {
        return { items, answer: await this.request(command, message, timeoutMs) };
      } finally {
        if (!this.failure) await this.register(event, false, timeoutMs);
      }
    } finally {
      this.listeners.get(event)?.delete(collect);
    }
  }

  /** Registers for events (ike-updown, child-updown, ike-rekey, child-rekey, ...). */
  async listen(events: string[], fn: (event: string, m: ViciMessage) => void): Promise<void> {
    for (const e of events) {
      this.on(e, (m) => fn(e, m));
      await this.register(e, true, this.timeoutMs);
    }
  }

  private on(event: string, fn: (m: ViciMessage) => void): void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
  }
}
