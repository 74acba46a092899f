/* The Internet checksum (RFC 1071), and the TCP/UDP one with its IPv4 pseudo-header. */

export function sum16(buf: Buffer, initial = 0): number {
  let sum = initial;
  const even = buf.length & ~1;
  for (let i = 0; i < even; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length & 1) sum += buf[buf.length - 1] << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

/** The checksum to store: one's complement of the folded sum. */
export function checksum(buf: Buffer, initial = 0): number {
  return ~fold(sum16(buf, initial)) & 0xffff;
}

/** Checksum of a TCP or UDP segment (checksum field included as it is) with the pseudo-header. */
export function l4Checksum(src: Buffer, dst: Buffer, proto: number, segment: Buffer): number {
  const pseudo = sum16(src) + sum16(dst) + proto + segment.length;
  return checksum(segment, pseudo);
}
