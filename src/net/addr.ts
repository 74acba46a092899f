/* IPv4 and MAC address text forms, strictly validated (no shorthand, no leading zeros). */

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

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function parseMac(s: string): Buffer {
  if (!MAC.test(s)) throw new RangeError(`"${s}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return Buffer.from(s.replace(/:/g, ''), 'hex');
}

export function formatMac(b: Buffer): string {
  return [...b.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
