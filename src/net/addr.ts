/*
 * IPv4, IPv6 and MAC address text forms, strictly validated (IPv4: no shorthand, no leading
 * zeros). IPv6 is read in any RFC 4291 text form and written in RFC 5952's canonical one, so
 * that one address has one spelling wherever it is a key (configuration, etcd, maps).
 */

/** Dotted quad (no leading zeros, no shorthand) to a host-order uint32; NaN if it is not one. */
function dottedQuad(s: string): number {
  let value = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) return NaN;
      value = value * 256 + octet;
      octet = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return NaN; // leading zero
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return NaN;
    } else {
      return NaN;
    }
  }
  return dots === 3 && digits > 0 ? value * 256 + octet : NaN;
}

/** Dotted quad to a host-order uint32. Called per CRT entry in batches, hence no regex. */
export function parseIpv4(s: string): number {
  const v = typeof s === 'string' ? dottedQuad(s) : NaN;
  if (Number.isNaN(v)) throw new RangeError(`"${String(s)}" is not an IPv4 address (a.b.c.d)`);
  return v;
}

export function formatIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** The 16 bytes of an IPv6 text form (RFC 4291: `::` once, an IPv4 tail); undefined if it is not one. */
function ipv6Bytes(s: string): Buffer | undefined {
  if (s.length > 45 || !/^[\da-fA-F:.]+$/.test(s)) return undefined;
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    const parts = h.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i === parts.length - 1 && p.includes('.')) {
        const v4 = dottedQuad(p);
        if (Number.isNaN(v4)) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else if (/^[\da-fA-F]{1,4}$/.test(p)) out.push(parseInt(p, 16));
      else return undefined;
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return undefined;
  // An IPv4 tail is the last 32 bits only.
  if (halves.length === 2 && halves[0].includes('.')) return undefined;
  const n = head.length + tail.length;
  if (halves.length === 1 ? n !== 8 : n > 7) return undefined;
  const all = [...head, ...new Array<number>(8 - n).fill(0), ...tail];
  const b = Buffer.alloc(16);
  all.forEach((g, i) => b.writeUInt16BE(g, i * 2));
  return b;
}

/** An IPv6 address's 16 bytes (network order). */
export function parseIpv6(s: string): Buffer {
  const b = typeof s === 'string' ? ipv6Bytes(s) : undefined;
  if (!b) throw new RangeError(`"${String(s)}" is not an IPv6 address (such as 2001:db8::10)`);
  return b;
}

/** RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups as `::` (the first if tied). */
export function formatIpv6(b: Uint8Array): string {
  const g = Array.from({ length: 8 }, (_, i) => (b[i * 2] << 8) | b[i * 2 + 1]);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  return best < 0 ? hex(g) : `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** The canonical text of an IPv6 address, or undefined if `s` is not one. */
export function canonicalIpv6(s: string): string | undefined {
  const b = ipv6Bytes(s);
  return b && formatIpv6(b);
}

/**
 * Why an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is refused, naming the IPv4 address to
 * write; undefined for any other address. The data plane holds IPv4 addresses in IPv6 fields
 * that way (bpf/dvipa.h), so such an address given as IPv6 would be IPv4 there. One message
 * for every configuration syntax.
 */
export function ipv4MappedProblem(s: string): string | undefined {
  const b = ipv6Bytes(s);
  if (!b || !b.subarray(0, 10).every((x) => x === 0) || b.readUInt16BE(10) !== 0xffff) return undefined;
  return `${s}: an IPv4-mapped IPv6 address is IPv4 to dvipa: write ${formatIpv4(b.readUInt32BE(12))}`;
}

/** 4 or 6 by the address's text form (IPv4 strictly, IPv6 in any form); undefined if it is neither. */
export function ipFamily(s: string): 4 | 6 | undefined {
  if (typeof s !== 'string') return undefined;
  if (!Number.isNaN(dottedQuad(s))) return 4;
  return ipv6Bytes(s) ? 6 : undefined;
}

/** An IPv4 (strict) or IPv6 address in its one spelling (RFC 5952 for IPv6). */
export function canonicalIp(s: string): string {
  const family = ipFamily(s);
  if (family === undefined) throw new RangeError(`"${String(s)}" is not an IPv4 or IPv6 address`);
  return family === 4 ? s : canonicalIpv6(s)!;
}

/** Whether the IPv6 address `a` is inside `base`/`bits` (both 16-byte buffers). */
export function inPrefix6(a: Uint8Array, base: Uint8Array, bits: number): boolean {
  for (let i = 0; i < 16 && bits > 0; i++, bits -= 8) {
    const m = bits >= 8 ? 0xff : (0xff00 >> bits) & 0xff;
    if ((a[i] & m) !== (base[i] & m)) return false;
  }
  return true;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function parseMac(s: string): Buffer {
  if (!MAC.test(s)) throw new RangeError(`"${s}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return Buffer.from(s.replace(/:/g, ''), 'hex');
}

export function formatMac(b: Buffer): string {
  return [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
