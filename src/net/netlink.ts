/*
 * Netlink attributes (struct nlattr: length, type, value padded to 4 bytes), as both the XFRM
 * messages (ipsec/xfrm-codec.ts) and rtnetlink's (kernel/rtnl.ts) carry them.
 */

/** One attribute: its header and `data`, padded. */
export function nlattr(type: number, data: Buffer): Buffer {
  const len = 4 + data.length;
  const out = Buffer.alloc((len + 3) & ~3);
  out.writeUInt16LE(len, 0);
  out.writeUInt16LE(type, 2);
  data.copy(out, 4);
  return out;
}

/** The attributes from `off` on: [type, value]; a truncated one ends the walk. */
export function* nlattrs(b: Buffer, off: number): Generator<[number, Buffer]> {
  while (off + 4 <= b.length) {
    const len = b.readUInt16LE(off);
    if (len < 4 || off + len > b.length) return;
    yield [b.readUInt16LE(off + 2) & 0x3fff, b.subarray(off + 4, off + len)];
    off += (len + 3) & ~3;
  }
}
