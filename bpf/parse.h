/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing for XDP. Each helper advances a cursor and proves to the verifier that
 * what it returns lies inside the packet; callers never dereference beyond a checked end.
 */
#ifndef DVIPA_PARSE_H
#define DVIPA_PARSE_H

#include "dvipa.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_ARP 0x0806
#define ARPOP_REQUEST 1
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IP_MF 0x2000
#define IP_DF 0x4000
#define IP_OFFSET 0x1FFF

/*
 * `end` is the end of the frame's first buffer. A multi-buffer (xdp.frags) frame, a jumbo
 * frame on a 9000-MTU interface, continues in fragments the program does not read: headers
 * must lie in the first buffer, lengths are checked against the whole frame.
 */
struct cursor {
	void *pos;
	void *end;
	struct xdp_md *ctx;
};

/*
 * Whether an Ethernet frame (whose header the caller has bounds-checked) is addressed to
 * `mac` or to a group (broadcast, multicast).
 */
static __always_inline int for_us(const struct ethhdr *eth, const __u8 *mac)
{
	if (eth->h_dest[0] & 1)
		return 1;
	return *(const __u32 *)eth->h_dest == *(const __u32 *)mac &&
	       *(const __u16 *)(eth->h_dest + 4) == *(const __u16 *)(mac + 4);
}

/* The body of an Ethernet/IPv4 ARP packet, after struct arphdr. */
struct arp_ipv4 {
	__u8 sha[6];
	__be32 spa;
	__u8 tha[6];
	__be32 tpa;
} __attribute__((packed));

/* The address an Ethernet/IPv4 ARP request asks for; 0 for anything else. */
static __always_inline __be32 arp_request_target(struct cursor *c)
{
	struct arphdr *arp = c->pos;
	struct arp_ipv4 *body = (void *)(arp + 1);

	if ((void *)(body + 1) > c->end)
		return 0;
	if (arp->ar_hrd != bpf_htons(1) || arp->ar_pro != bpf_htons(ETH_P_IP) || arp->ar_hln != 6 ||
	    arp->ar_pln != 4 || arp->ar_op != bpf_htons(ARPOP_REQUEST))
		return 0;
	return body->tpa;
}

/* Ethernet plus at most one 802.1Q/802.1ad tag. Returns the L2 length, or -1 if truncated. */
static __always_inline int parse_eth(struct cursor *c, __be16 *proto)
{
	struct ethhdr *eth = c->pos;
	struct vlan_hdr *vlan;

	if ((void *)(eth + 1) > c->end)
		return -1;
	*proto = eth->h_proto;
	c->pos = eth + 1;
	if (*proto != bpf_htons(ETH_P_8021Q) && *proto != bpf_htons(ETH_P_8021AD))
		return sizeof(*eth);
	vlan = c->pos;
	if ((void *)(vlan + 1) > c->end)
		return -1;
	*proto = vlan->h_vlan_encapsulated_proto;
	c->pos = vlan + 1;
	return sizeof(*eth) + sizeof(*vlan);
}

/*
 * IPv4 header with options. Rejects what the kernel's ip_rcv would reject for its shape
 * (version, IHL < 5, header or total length beyond the frame); the checksum is left to
 * whoever consumes the packet, as forwarding does not change it.
 */
/*
 * A 16-bit header field in host order, for pointer arithmetic. Verifiers before 6.3 do not
 * bound a byte swap's result (Debian 12's 6.1 refuses the packet pointer math that follows);
 * a mask the compiler cannot drop, behind a barrier, keeps the bound visible to them.
 */
static __always_inline __u32 ntohs_bounded(__be16 v)
{
	__u32 x = bpf_ntohs(v);

	asm volatile("" : "+r"(x));
	return x & 0xffff;
}

/* Whether `len` bytes from the cursor lie within the frame, fragments included. */
static __always_inline int fits_frame(const struct cursor *c, __u32 len)
{
	void *data = (void *)(long)c->ctx->data;

	if (c->pos + len <= c->end)
		return 1;
	/* Only past the first buffer: its cost is a helper call, on jumbo frames alone. */
	return (__u64)(c->pos - data) + len <= bpf_xdp_get_buff_len(c->ctx);
}

static __always_inline struct iphdr *parse_ipv4(struct cursor *c)
{
	struct iphdr *iph = c->pos;
	__u32 hlen, tot;

	if ((void *)(iph + 1) > c->end)
		return NULL;
	if (iph->version != 4 || iph->ihl < 5)
		return NULL;
	hlen = iph->ihl * 4;
	if (c->pos + hlen > c->end)
		return NULL;
	tot = ntohs_bounded(iph->tot_len);
	if (tot < hlen || !fits_frame(c, tot))
		return NULL;
	c->pos += hlen;
	return iph;
}

static __always_inline int ipv4_is_fragment(const struct iphdr *iph)
{
	return (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0;
}

/* IPv6 next-header values the parser knows (IPPROTO_* of the extension headers). */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define NEXTHDR_ICMPV6 58
/*
 * Extension headers walked before the transport header: each costs a bounds check, and
 * real traffic carries one or two (hop-by-hop, a routing header, a fragment header).
 */
#define IPV6_EXT_MAX 4

/*
 * The fixed IPv6 header. Rejects what ip6_rcv would for its shape (version, payload length
 * beyond the frame); a payload length of 0 (a jumbogram's) is refused too.
 */
static __always_inline struct ipv6hdr *parse_ipv6(struct cursor *c)
{
	struct ipv6hdr *ip6 = c->pos;
	__u32 plen;

	if ((void *)(ip6 + 1) > c->end)
		return NULL;
	if (ip6->version != 6)
		return NULL;
	plen = ntohs_bounded(ip6->payload_len);
	if (!plen || !fits_frame(c, sizeof(*ip6) + plen))
		return NULL;
	c->pos = ip6 + 1;
	return ip6;
}

enum ipv6_l4 {
	IPV6_L4_FOUND = 0,  /* the cursor is at the transport header, *nexthdr says which */
	IPV6_L4_FRAGMENT,   /* a fragment header: no ports to be had */
	IPV6_L4_MALFORMED,  /* an extension header truncated, or more than IPV6_EXT_MAX of them */
};

/*
 * Walks hop-by-hop, routing and destination options headers and stops at a fragment
 * header or anything else (the transport header, ICMPv6, no next header).
 */
static __always_inline enum ipv6_l4 ipv6_skip_ext(struct cursor *c, __u8 *nexthdr)
{
	/* Most packets have no extension header: two compares, not the walk's switch. */
	if (*nexthdr == IPPROTO_TCP || *nexthdr == IPPROTO_UDP)
		return IPV6_L4_FOUND;
#pragma unroll
	for (int i = 0; i <= IPV6_EXT_MAX; i++) {
		__u8 *h = c->pos;

		switch (*nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			if (i == IPV6_EXT_MAX || (void *)(h + 2) > c->end)
				return IPV6_L4_MALFORMED;
			*nexthdr = h[0];
			c->pos += ((__u32)h[1] + 1) * 8;
			break;
		case NEXTHDR_FRAGMENT:
			return IPV6_L4_FRAGMENT;
		default:
			return IPV6_L4_FOUND;
		}
	}
	return IPV6_L4_MALFORMED; /* not reached: the last round returns */
}

static __always_inline int in6_eq(const struct dvipa_in6 *a, const struct dvipa_in6 *b)
{
	return ((a->w[0] ^ b->w[0]) | (a->w[1] ^ b->w[1]) | (a->w[2] ^ b->w[2]) | (a->w[3] ^ b->w[3])) == 0;
}

static __always_inline int in6_is_zero(const struct dvipa_in6 *a)
{
	return (a->w[0] | a->w[1] | a->w[2] | a->w[3]) == 0;
}

/* ::ffff:a.b.c.d, how a field of either family holds IPv4 (dvipa.h). */
static __always_inline void in6_set_v4mapped(struct dvipa_in6 *a, __be32 v4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0xffff);
	a->w[3] = v4;
}

static __always_inline int in6_is_v4mapped(const struct dvipa_in6 *a)
{
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0xffff);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Checksum of an option-less IPv4 header we built ourselves. */
static __always_inline void ipv4_set_csum(struct iphdr *iph)
{
	__u16 *w = (__u16 *)iph;
	__u32 sum = 0;

	iph->check = 0;
#pragma unroll
	for (int i = 0; i < (int)sizeof(*iph) / 2; i++)
		sum += w[i];
	iph->check = csum_fold(sum);
}

#endif
