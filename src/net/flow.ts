/* A connection's 5-tuple and the transport protocols dvipa distributes: the values every layer above shares. */

/** IP protocol numbers of the transports dvipa distributes. */
export const IPPROTO = { tcp: 6, udp: 17 } as const;
export type Protocol = keyof typeof IPPROTO;

/** A protocol's name from its number; numbers dvipa does not distribute stay numbers. */
export function protocolName(proto: number): string {
  return (Object.keys(IPPROTO) as Protocol[]).find((p) => IPPROTO[p] === proto) ?? String(proto);
}

export function isProtocol(p: string): p is Protocol {
  return p in IPPROTO;
}

/** A connection as the CRT keys it: addresses dotted, ports host order, `proto` an IP protocol number. */
export interface Flow {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
}
