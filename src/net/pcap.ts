/*
 * Classic pcap files (libpcap format), Ethernet link type: both byte orders, microsecond
 * and nanosecond timestamps. Errors say which record and byte offset went wrong.
 */
import { DvipaError, EXIT } from '../errors.js';
import * as fs from 'node:fs';

const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
const PCAPNG = 0x0a0d0d0a;
const LINKTYPE_ETHERNET = 1;

export class PcapError extends DvipaError {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`, EXIT.usage);
  }
}

/** The frames of a pcap file, in order. */
export function parsePcap(buf: Buffer, file = '<pcap>'): Buffer[] {
  if (buf.length < 24) throw new PcapError(file, `not a pcap file (${buf.length} bytes, a header needs 24)`);
  const magicLE = buf.readUInt32LE(0);
  if (magicLE === PCAPNG)
    throw new PcapError(
      file,
      'pcapng is not supported; convert it with `tshark -F pcap -r IN -w OUT` or `editcap -F pcap IN OUT`',
    );
  let le: boolean;
  if (magicLE === MAGIC_US || magicLE === MAGIC_NS) le = true;
  else if (buf.readUInt32BE(0) === MAGIC_US || buf.readUInt32BE(0) === MAGIC_NS) le = false;
  else throw new PcapError(file, `not a pcap file (magic 0x${magicLE.toString(16)})`);
  const u32 = (off: number) => (le ? buf.readUInt32LE(off) : buf.readUInt32BE(off));
  const linktype = u32(20) & 0x0fffffff;
  if (linktype !== LINKTYPE_ETHERNET)
    throw new PcapError(file, `link type ${linktype} is not Ethernet (1); capture on an Ethernet interface`);
  const snaplen = u32(16);

  const frames: Buffer[] = [];
  let off = 24;
  while (off < buf.length) {
    const index = frames.length + 1;
    if (off + 16 > buf.length) throw new PcapError(file, `record ${index} at offset ${off}: header truncated`);
    const incl = u32(off + 8);
    if (incl > Math.max(snaplen, 262144))
      throw new PcapError(
        file,
        `record ${index} at offset ${off}: captured length ${incl} exceeds the snap length ${snaplen}`,
      );
    if (off + 16 + incl > buf.length)
      throw new PcapError(
        file,
        `record ${index} at offset ${off}: ${incl} bytes announced, ${buf.length - off - 16} present`,
      );
    frames.push(Buffer.from(buf.subarray(off + 16, off + 16 + incl)));
    off += 16 + incl;
  }
  return frames;
}

export function readPcap(file: string): Buffer[] {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new PcapError(file, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message);
  }
  return parsePcap(buf, file);
}

/** A little-endian, microsecond pcap of Ethernet frames, one per millisecond from t=0. */
export function formatPcap(frames: readonly Buffer[]): Buffer {
  const header = Buffer.alloc(24);
  header.writeUInt32LE(MAGIC_US, 0);
  header.writeUInt16LE(2, 4);
  header.writeUInt16LE(4, 6);
  header.writeUInt32LE(262144, 16);
  header.writeUInt32LE(LINKTYPE_ETHERNET, 20);
  const records = frames.map((f, i) => {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(Math.floor(i / 1000), 0);
    h.writeUInt32LE((i % 1000) * 1000, 4);
    h.writeUInt32LE(f.length, 8);
    h.writeUInt32LE(f.length, 12);
    return Buffer.concat([h, f]);
  });
  return Buffer.concat([header, ...records]);
}

export function writePcap(file: string, frames: readonly Buffer[]): void {
  fs.writeFileSync(file, formatPcap(frames));
}
