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
/** The largest record this reads (libpcap's own largest snap length), whatever a header says. */
export const PCAP_MAX_RECORD = 262144;

export class PcapError extends DvipaError {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`, EXIT.usage);
  }
}

/** One record: the bytes captured, and the frame's length on the wire (without any FCS). */
export interface PcapRecord {
  frame: Buffer;
  wireLength: number;
}

/** The records of a pcap file, in order. */
export function parsePcap(buf: Buffer, file = '<pcap>'): PcapRecord[] {
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
  const linkWord = u32(20);
  const linktype = linkWord & 0x0fffffff;
  if (linktype !== LINKTYPE_ETHERNET)
    throw new PcapError(file, `link type ${linktype} is not Ethernet (1); capture on an Ethernet interface`);
  // The link type's top bits: whether frames end with their FCS (bit 28), and its 16-bit words.
  const fcs = (linkWord >>> 28) & 1 ? ((linkWord >>> 29) & 7) * 2 : 0;
  const snaplen = u32(16);

  const records: PcapRecord[] = [];
  let off = 24;
  while (off < buf.length) {
    const at = `record ${records.length + 1} at offset ${off}`;
    if (off + 16 > buf.length) throw new PcapError(file, `${at}: header truncated`);
    const incl = u32(off + 8);
    const orig = u32(off + 12);
    if (incl > Math.max(snaplen, PCAP_MAX_RECORD))
      throw new PcapError(file, `${at}: captured length ${incl} exceeds the snap length ${snaplen}`);
    if (incl > orig) throw new PcapError(file, `${at}: captured length ${incl} exceeds the frame's length ${orig}`);
    if (off + 16 + incl > buf.length)
      throw new PcapError(file, `${at}: ${incl} bytes announced, ${buf.length - off - 16} present`);
    const wireLength = Math.max(0, orig - fcs);
    records.push({ frame: Buffer.from(buf.subarray(off + 16, off + 16 + Math.min(incl, wireLength))), wireLength });
    off += 16 + incl;
  }
  return records;
}

export function readPcap(file: string): PcapRecord[] {
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
  header.writeUInt32LE(PCAP_MAX_RECORD, 16);
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
