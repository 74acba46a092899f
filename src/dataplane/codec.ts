/*
 * Encoders/decoders for the C structs of bpf/dvipa.h. Offsets follow the C rules
 * (natural alignment, size rounded to the largest member), and test/kernel/layout.test.ts
 * checks every struct against the BTF of the compiled objects, so a layout can only
 * change in both places at once.
 */
import { formatIpv4, formatMac, parseIpv4, parseMac } from '../net/addr.js';

export type FieldType = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32' | 'ipv4' | 'mac' | { pad: number };

type FieldValue<T extends FieldType> = T extends 'u64'
  ? bigint
  : T extends 'ipv4' | 'mac'
    ? string
    : T extends { pad: number }
      ? never
      : number;

const SIZE: Record<Exclude<FieldType, { pad: number }>, number> = {
  u8: 1,
  u16: 2,
  u32: 4,
  u64: 8,
  be16: 2,
  be32: 4,
  ipv4: 4,
  mac: 6,
};

export interface FieldLayout {
  name: string;
  offset: number;
  size: number;
}

export interface Struct<T> {
  readonly cName: string;
  readonly size: number;
  readonly fields: readonly FieldLayout[];
  encode(value: T, into?: Buffer, offset?: number): Buffer;
  decode(buf: Buffer, offset?: number): T;
}

function fieldSize(t: FieldType): number {
  return typeof t === 'object' ? t.pad : SIZE[t];
}

function fieldAlign(t: FieldType): number {
  return typeof t === 'object' || t === 'mac' ? 1 : SIZE[t];
}

/**
 * Declares a C struct. Fields are [name, type]; `pad` fields are written as zeros and
 * left out of decoded values.
 */
export function struct<T>(cName: string, spec: ReadonlyArray<readonly [string, FieldType]>): Struct<T> {
  let offset = 0;
  let align = 1;
  const fields: (FieldLayout & { type: FieldType })[] = [];
  for (const [name, type] of spec) {
    const a = fieldAlign(type);
    offset = Math.ceil(offset / a) * a;
    fields.push({ name, offset, size: fieldSize(type), type });
    offset += fieldSize(type);
    align = Math.max(align, a);
  }
  const size = Math.ceil(offset / align) * align;
  // Each field's reader and writer is chosen once here: codecs run per CRT entry in batches.
  const data = fields.filter((f) => typeof f.type !== 'object');
  const writers = data.map((f) => writer(f.type as Scalar, f.offset, `${cName}.${f.name}`));
  const readers = data.map((f) => reader(f.type as Scalar, f.offset));
  const names = data.map((f) => f.name);

  return {
    cName,
    size,
    fields: fields.map(({ name, offset: o, size: s }) => ({ name, offset: o, size: s })),
    encode(value: T, into = Buffer.alloc(size), base = 0): Buffer {
      into.fill(0, base, base + size);
      const v = value as Record<string, unknown>;
      for (let i = 0; i < writers.length; i++) {
        const x = v[names[i]];
        if (x === undefined) throw new TypeError(`${cName}.${names[i]} is missing`);
        writers[i](into, base, x);
      }
      return into;
    },
    decode(buf: Buffer, base = 0): T {
      if (buf.length < base + size)
        throw new RangeError(`${cName}: need ${size} bytes at offset ${base}, have ${buf.length - base}`);
      const out: Record<string, unknown> = {};
      for (let i = 0; i < readers.length; i++) out[names[i]] = readers[i](buf, base);
      return out as T;
    },
  };
}

type Scalar = Exclude<FieldType, { pad: number }>;

function writer(type: Scalar, off: number, what: string): (buf: Buffer, base: number, x: unknown) => void {
  switch (type) {
    case 'ipv4':
      return (buf, base, x) => {
        if (typeof x !== 'string') throw new TypeError(`${what}: expected an IPv4 address string`);
        buf.writeUInt32BE(parseIpv4(x), base + off);
      };
    case 'mac':
      return (buf, base, x) => {
        if (typeof x !== 'string') throw new TypeError(`${what}: expected a MAC address string`);
        parseMac(x).copy(buf, base + off);
      };
    case 'u64':
      return (buf, base, x) => {
        if (typeof x !== 'bigint') throw new TypeError(`${what}: expected a bigint`);
        buf.writeBigUInt64LE(x, base + off);
      };
  }
  const limit = 2 ** (8 * SIZE[type]);
  const write = {
    u8: (b: Buffer, v: number, o: number) => b.writeUInt8(v, o),
    u16: (b: Buffer, v: number, o: number) => b.writeUInt16LE(v, o),
    u32: (b: Buffer, v: number, o: number) => b.writeUInt32LE(v, o),
    be16: (b: Buffer, v: number, o: number) => b.writeUInt16BE(v, o),
    be32: (b: Buffer, v: number, o: number) => b.writeUInt32BE(v, o),
  }[type];
  return (buf, base, x) => {
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x >= limit)
      throw new RangeError(`${what}: ${String(x)} does not fit ${type}`);
    write(buf, x, base + off);
  };
}

function reader(type: Scalar, off: number): (buf: Buffer, base: number) => unknown {
  switch (type) {
    case 'u8':
      return (b, base) => b.readUInt8(base + off);
    case 'u16':
      return (b, base) => b.readUInt16LE(base + off);
    case 'u32':
      return (b, base) => b.readUInt32LE(base + off);
    case 'u64':
      return (b, base) => b.readBigUInt64LE(base + off);
    case 'be16':
      return (b, base) => b.readUInt16BE(base + off);
    case 'be32':
      return (b, base) => b.readUInt32BE(base + off);
    case 'ipv4':
      return (b, base) => formatIpv4(b.readUInt32BE(base + off));
    case 'mac':
      return (b, base) => formatMac(b.subarray(base + off, base + off + 6));
  }
}

/** A scalar map key or value (an array index, a byte flag, an address). */
export function scalar<T extends Scalar>(cName: string, type: T): Struct<FieldValue<T>> {
  const s = struct<{ v: FieldValue<T> }>(cName, [['v', type]]);
  return {
    cName,
    size: s.size,
    fields: s.fields,
    encode: (v, into, off) => s.encode({ v }, into, off),
    decode: (buf, off) => s.decode(buf, off).v,
  };
}
