/*
 * Frames between agents. Every frame is authenticated:
 *
 *   magic "DVPA" | version u8 | type u8 | reserved u16 | seq u64 | length u32 | payload | tag[32]
 *
 * tag = HMAC-SHA256(key, header || payload). The HELLO that opens a connection is keyed with
 * the cluster key; every later frame with the session key both HELLOs derive (both nonces),
 * so a frame recorded from another connection never verifies, and within a connection the
 * sequence numbers must rise by exactly one.
 */
import { DvipaError } from '../errors.js';
import { createHmac, timingSafeEqual } from 'node:crypto';

export const MAGIC = 0x44565041; // "DVPA"
export const VERSION = 1;
export const HEADER = 4 + 1 + 1 + 2 + 8 + 4;
export const TAG = 32;
/** Larger frames are refused before they are read: a peer cannot make us buffer more. */
export const MAX_PAYLOAD = 1 << 20;

export interface Frame { type: number; seq: bigint; payload: Buffer }

export type FrameError = 'bad_magic' | 'bad_version' | 'oversized' | 'bad_tag' | 'truncated';

export class FrameRejected extends DvipaError {
  constructor(readonly reason: FrameError, detail: string) {
    super(`${reason}: ${detail}`);
  }
}

function tag(key: Buffer, header: Buffer, payload: Buffer): Buffer {
  return createHmac('sha256', key).update(header).update(payload).digest();
}

export function encodeFrame(key: Buffer, f: Frame): Buffer {
  if (f.payload.length > MAX_PAYLOAD) throw new RangeError(`frame payload of ${f.payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  const header = Buffer.alloc(HEADER);
  header.writeUInt32BE(MAGIC, 0);
  header.writeUInt8(VERSION, 4);
  header.writeUInt8(f.type, 5);
  header.writeBigUInt64BE(f.seq, 8);
  header.writeUInt32BE(f.payload.length, 16);
  return Buffer.concat([header, f.payload, tag(key, header, f.payload)]);
}

/**
 * Splits a byte stream into verified frames, handing each to `onFrame` before verifying
 * the next, whose key `key()` may by then have changed (the HELLO sets the session key).
 * Throws FrameRejected on the first frame that fails: nothing after it can be trusted.
 */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly key: () => Buffer, private readonly onFrame: (f: Frame) => void) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= HEADER) {
      if (this.buf.readUInt32BE(0) !== MAGIC) throw new FrameRejected('bad_magic', `0x${this.buf.readUInt32BE(0).toString(16)}`);
      if (this.buf.readUInt8(4) !== VERSION) throw new FrameRejected('bad_version', `version ${this.buf.readUInt8(4)}, this agent speaks ${VERSION}`);
      const length = this.buf.readUInt32BE(16);
      if (length > MAX_PAYLOAD) throw new FrameRejected('oversized', `${length} bytes announced, at most ${MAX_PAYLOAD}`);
      if (this.buf.length < HEADER + length + TAG) return;
      const header = this.buf.subarray(0, HEADER);
      const payload = this.buf.subarray(HEADER, HEADER + length);
      const got = this.buf.subarray(HEADER + length, HEADER + length + TAG);
      if (!timingSafeEqual(got, tag(this.key(), header, payload))) throw new FrameRejected('bad_tag', 'authentication failed (wrong cluster key, or tampered)');
      const frame = { type: header.readUInt8(5), seq: header.readBigUInt64BE(8), payload: Buffer.from(payload) };
      this.buf = this.buf.subarray(HEADER + length + TAG);
      this.onFrame(frame);
    }
  }

  /** Bytes of an incomplete frame still waiting (at the end of the stream: a truncated frame). */
  buffered(): number {
    return this.buf.length;
  }
}

/** The key both sides use after the HELLOs: bound to both nonces, so to this connection only. */
export function sessionKey(clusterKey: Buffer, dialerNonce: Buffer, listenerNonce: Buffer): Buffer {
  return createHmac('sha256', clusterKey).update('dvipa/1 session').update(dialerNonce).update(listenerNonce).digest();
}
