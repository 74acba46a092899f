/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow hash that places connections on Maglev slots (Bob Jenkins' lookup3 mix and
 * final). It has no per-boot seed and works on host-order words, so every routing node,
 * whatever its architecture, places a flow on the same slot: after a takeover the backup
 * finds the targets of connections it has never seen. src/tables/flowhash.ts is the same
 * function for user space.
 */
#ifndef DVIPA_FLOWHASH_H
#define DVIPA_FLOWHASH_H

#define DVIPA_HASH_INIT (0xdeadbeef + (4 << 2))

static __always_inline __u32 rol32(__u32 x, int k)
{
	return (x << k) | (x >> (32 - k));
}

static __always_inline __u32 dvipa_hash4(__u32 w0, __u32 w1, __u32 w2, __u32 w3, __u32 seed)
{
	__u32 a = DVIPA_HASH_INIT + seed + w0;
	__u32 b = DVIPA_HASH_INIT + seed + w1;
	__u32 c = DVIPA_HASH_INIT + seed + w2;

	a -= c; a ^= rol32(c, 4);  c += b;
	b -= a; b ^= rol32(a, 6);  a += c;
	c -= b; c ^= rol32(b, 8);  b += a;
	a -= c; a ^= rol32(c, 16); c += b;
	b -= a; b ^= rol32(a, 19); a += c;
	c -= b; c ^= rol32(b, 4);  b += a;

	a += w3;

	c ^= b; c -= rol32(b, 14);
	a ^= c; a -= rol32(c, 11);
	b ^= a; b -= rol32(a, 25);
	c ^= b; c -= rol32(b, 16);
	a ^= c; a -= rol32(c, 4);
	b ^= a; b -= rol32(a, 14);
	c ^= b; c -= rol32(b, 24);
	return c;
}

static __always_inline __u32 dvipa_flow_hash(const struct dvipa_flow *f)
{
	return dvipa_hash4(bpf_ntohl(f->saddr), bpf_ntohl(f->daddr),
			   ((__u32)bpf_ntohs(f->sport) << 16) | bpf_ntohs(f->dport), f->proto, 0);
}

#endif
