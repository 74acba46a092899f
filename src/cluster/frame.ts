/*
 * Frames between agents. Every frame is authenticated:
 *
 *   magic "DVPA" | version u8 | type u8 | reserved u16 | seq u64 | length u32 | payload | tag[32]
 *
 * tag = HMAC-SHA256(key, header || payload). The handshake frames (handshake.ts) are keyed
 * with the cluster key, so a stranger's bytes fail at the first tag; every later frame with
 * the session key of that connection, so a frame recorded from another connection never
 * verifies, and within a connection the sequence numbers must rise by exactly one.
 */
import { DvipaError } from '../errors.js';
import { createHmac, timingSafeEqual } from 'node:crypto';

export const MAGIC = 0x44565041; // "DVPA"
/** 2: challenge-response handshake (HELLO, AUTH each way), per-node identities. 3: HELLO names the agent's run. */
export const VERSION = 3;
export const HEADER = 4 + 1 + 1 + 2 + 8 + 4;
export const TAG = 32;
/** Larger frames are refused before they are read: a peer cannot make us buffer more. */
export const MAX_PAYLOAD = 1 << 20;
/** Before a connection is authenticated, frames (HELLO, AUTH) are small: a stranger gets no more. */
export const MAX_HANDSHAKE_PAYLOAD = 1024;

export interface Frame {
  type: number;
  seq: bigint;
  payload: Buffer;
}

export type FrameError = 'bad_magic' | 'bad_version' | 'oversized' | 'bad_tag' | 'truncated';

export class FrameRejected extends DvipaError {
  constructor(
    readonly reason: FrameError,
    detail: string,
  ) {
    super(`${reason}: ${detail}`);
  }
}

function tag(key: Buffer, header: Buffer, payload: Buffer): Buffer {
  return createHmac('sha256', key).update(header).update(payload).digest();
}

export function encodeFrame(key: Buffer, f: Frame): Buffer {
  if (f.payload.length > MAX_PAYLOAD) {
    throw new RangeError(`frame payload of ${f.payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  }
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
 * the next, whose key `key()` and size limit `limit()` may by then have changed (the
 * handshake sets the session key and lifts the limit). Chunks are kept as they came and
 * joined once per frame, so a frame that arrives a byte at a time costs linear time.
 * Throws FrameRejected on the first frame that fails: nothing after it can be trusted.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private length = 0;

  constructor(
    private readonly key: () => Buffer,
    private readonly onFrame: (f: Frame) => void,
    private readonly limit: () => number = () => MAX_PAYLOAD,
  ) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
    while (this.length >= HEADER) {
      const header = this.take(HEADER, false);
      const magic = header.readUInt32BE(0);
      const version = header.readUInt8(4);
      if (magic !== MAGIC) throw new FrameRejected('bad_magic', `0x${magic.toString(16)}`);
      if (version !== VERSION) {
        throw new FrameRejected('bad_version', `version ${version}, this agent speaks ${VERSION}`);
      }
      const length = header.readUInt32BE(16);
      const limit = this.limit();
      if (length > limit) throw new FrameRejected('oversized', `${length} bytes announced, at most ${limit} now`);
      if (this.length < HEADER + length + TAG) return;
      const whole = this.take(HEADER + length + TAG, true);
      const payload = whole.subarray(HEADER, HEADER + length);
      const got = whole.subarray(HEADER + length);
      if (!timingSafeEqual(got, tag(this.key(), whole.subarray(0, HEADER), payload))) {
        throw new FrameRejected('bad_tag', 'authentication failed (wrong cluster key, or tampered)');
      }
      this.onFrame({ type: header.readUInt8(5), seq: header.readBigUInt64BE(8), payload: Buffer.from(payload) });
    }
  }

  /** The first `n` buffered bytes as one buffer (n <= length), removed from the buffer if `consume`. */
  private take(n: number, consume: boolean): Buffer {
    if (this.chunks[0].length < n) {
      // Joins just enough chunks: at most once per frame for its body, a few bytes for a header.
      let k = 0;
      for (let have = 0; have < n; k++) have += this.chunks[k].length;
      this.chunks.splice(0, k, Buffer.concat(this.chunks.slice(0, k)));
    }
    const first = this.chunks[0];
    const out = first.subarray(0, n);
    if (consume) {
      this.length -= n;
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    }
    return out;
  }

  /** Bytes of an incomplete frame still waiting (at the end of the stream: a truncated frame). */
  buffered(): number {
    return this.length;
  }
}
