/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The routing node's IPv6 path, included by distributor.h after the helpers both families
 * share. The verdicts are IPv4's, with these differences:
 *  - extension headers (hop-by-hop, routing, destination options) are walked, at most
 *    IPV6_EXT_MAX of them; more, or one truncated, to a distributed DVIPA: dropped as
 *    malformed;
 *  - fragments (a fragment header) to a distributed DVIPA are counted and passed to the
 *    stack (the choice for IPv6: no ports to match them to a connection);
 *  - the packet goes to the target in the target's cluster family: IPv6-in-IPv6, or
 *    IPv6-in-IPv4 (protocol 41) to an IPv4 target; IPv4 flows to IPv6 targets are
 *    IPv4-in-IPv6 (see DVIPA_SVC_V6_TARGETS);
 *  - too big once encapsulated: ICMPv6 packet too big back to the client (IPv6 routers
 *    never fragment, so there is no DF to look at);
 *  - Neighbour Solicitations for a DVIPA whose fencing deadline has passed are dropped, as
 *    ARP requests are for IPv4.
 */
#ifndef DVIPA_DISTRIBUTOR6_H
#define DVIPA_DISTRIBUTOR6_H

#define ENCAP6_LEN ((int)sizeof(struct ipv6hdr))
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_NEIGH_SOLICIT 135
#define ICMPV6_HDR_LEN 8
/*
 * RFC 4443 2.4(c): an ICMPv6 error quotes as much of the packet as fits the minimum MTU
 * (1280). A packet too big for an IPv4 egress below 1252 bytes may be shorter: it gets a
 * 512-byte quote. Both are multiples of 4, as bpf_csum_diff wants, in chunks of 512 at most.
 */
#define PTB_QUOTE (1280 - ENCAP6_LEN - ICMPV6_HDR_LEN)
#define PTB_QUOTE_SHORT 512

/* Whether this node may no longer answer for the IPv6 DVIPA (`resolve`: its Neighbour Solicitations). */
static __always_inline int fenced6(const struct dvipa_in6 *vip, int resolve)
{
	return fence_forbids(bpf_map_lookup_elem(&fence6, vip), resolve);
}

/* The address of a target index as an IPv6 CRT entry holds it (IPv4-mapped for IPv4). */
static __always_inline void target_in6(const struct dvipa_target *t, struct dvipa_in6 *out)
{
	if (t->family == AF_INET6)
		*out = t->addr6;
	else
		in6_set_v4mapped(out, t->addr);
}

/* Whether the index still holds this target (an index freed and reused under a CRT entry does not). */
static __always_inline int target_is(const struct dvipa_target *t, const struct dvipa_in6 *a)
{
	if (t->family == AF_INET6)
		return in6_eq(&t->addr6, a);
	return in6_is_v4mapped(a) && t->addr == a->w[3];
}

static __always_inline __u32 dvipa_hash_in6(const struct dvipa_in6 *a)
{
	return dvipa_hash4(bpf_ntohl(a->w[0]), bpf_ntohl(a->w[1]), bpf_ntohl(a->w[2]), bpf_ntohl(a->w[3]), 0);
}

/* The IPv6 flow hash (src/tables/flowhash.ts flowHash6): each address hashed to a word first. */
static __always_inline __u32 dvipa_flow_hash6(const struct dvipa_flow6 *f)
{
	return dvipa_hash4(dvipa_hash_in6(&f->saddr), dvipa_hash_in6(&f->daddr),
			   ((__u32)bpf_ntohs(f->sport) << 16) | bpf_ntohs(f->dport), f->proto, 0);
}

/* TIMEDAFFINITY for an IPv6 client: as affine_target. */
static __always_inline __u32 affine_target6(const struct dvipa_svc *svc, const struct dvipa_in6 *client)
{
	struct dvipa_affinity6_key k = { .svc_id = svc->id, .client = *client };
	struct dvipa_affinity6 *a = bpf_map_lookup_elem(&affinity6, &k);

	if (!a || bpf_ktime_get_coarse_ns() - a->last_ns > (__u64)svc->affinity_s * 1000000000ULL)
		return 0;
	return a->target_idx;
}

static __always_inline void touch_affinity6(const struct dvipa_svc *svc, const struct dvipa_in6 *client,
					    const struct dvipa_in6 *target, __u32 target_idx)
{
	struct dvipa_affinity6_key k = { .svc_id = svc->id, .client = *client };
	struct dvipa_affinity6 *a = bpf_map_lookup_elem(&affinity6, &k);
	struct dvipa_affinity6 fresh = {
		.target = *target, .target_idx = target_idx, .last_ns = bpf_ktime_get_coarse_ns(),
	};

	if (a && in6_eq(&a->target, target)) {
		a->last_ns = fresh.last_ns;
		return;
	}
	bpf_map_update_elem(&affinity6, &k, &fresh, BPF_ANY);
}

/* A quoted block's sum, when it lies within the packet; negative if it does not. */
static __always_inline __s64 csum_block(void *p, void *end, __u32 size, __s64 seed)
{
	if (seed < 0 || p + size > end)
		return -1;
	return bpf_csum_diff(NULL, 0, p, size, (__u32)seed);
}

/*
 * Turn the too-big IPv6 packet into an ICMPv6 packet too big to its sender, from the
 * DVIPA it was sent to, quoting the start of the packet; the checksum covers the IPv6
 * pseudo-header (RFC 8200 8.1).
 */
static __always_inline int pkt_too_big(struct xdp_md *ctx, int l2len, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct {
		struct dvipa_in6 src;
		struct dvipa_in6 dst;
		__be32 len;
		__be32 nexthdr;
	} pseudo = {};
	struct ethhdr eth_orig;
	struct ipv6hdr *ip6;
	__u8 *icmp, *quoted;
	__u32 total, quote;
	__s64 sum;

	if (l2len != sizeof(struct ethhdr) && l2len != sizeof(struct ethhdr) + sizeof(struct vlan_hdr))
		return XDP_DROP;
	if (data + l2len + sizeof(*ip6) > data_end)
		return XDP_DROP;
	ip6 = data + l2len;
	__builtin_memcpy(&pseudo.dst, &ip6->saddr, sizeof(pseudo.dst));
	__builtin_memcpy(&pseudo.src, &ip6->daddr, sizeof(pseudo.src));
	__builtin_memcpy(&eth_orig, data, sizeof(eth_orig));
	total = bpf_xdp_get_buff_len(ctx) - l2len;
	if (total >= PTB_QUOTE)
		quote = PTB_QUOTE;
	else if (total >= PTB_QUOTE_SHORT)
		quote = PTB_QUOTE_SHORT;
	else
		return XDP_DROP;

	/* Cut to L2 + quote (a jumbo frame's fragments go too), then make room for IPv6 + ICMPv6. */
	if (bpf_xdp_adjust_tail(ctx, (int)(l2len + quote) - (int)bpf_xdp_get_buff_len(ctx)))
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, -(ENCAP6_LEN + ICMPV6_HDR_LEN)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	/* Move L2 to the new front; a VLAN tag, if any, stays as it was. */
	if (l2len == sizeof(struct ethhdr)) {
		if (data + sizeof(struct ethhdr) + ENCAP6_LEN + ICMPV6_HDR_LEN > data_end)
			return XDP_DROP;
	} else {
		if (data + sizeof(struct ethhdr) + sizeof(struct vlan_hdr) + ENCAP6_LEN + ICMPV6_HDR_LEN > data_end)
			return XDP_DROP;
		__builtin_memcpy(data + sizeof(struct ethhdr),
				 data + sizeof(struct ethhdr) + ENCAP6_LEN + ICMPV6_HDR_LEN, sizeof(struct vlan_hdr));
	}
	__builtin_memcpy(((struct ethhdr *)data)->h_dest, eth_orig.h_source, ETH_ALEN);
	__builtin_memcpy(((struct ethhdr *)data)->h_source, eth_orig.h_dest, ETH_ALEN);
	((struct ethhdr *)data)->h_proto = eth_orig.h_proto;

	ip6 = data + l2len;
	icmp = (void *)(ip6 + 1);
	if ((void *)(icmp + ICMPV6_HDR_LEN) > data_end)
		return XDP_DROP;
	*(__be32 *)ip6 = bpf_htonl(0x60000000); /* version 6, traffic class and flow label 0 */
	ip6->payload_len = bpf_htons(ICMPV6_HDR_LEN + quote);
	ip6->nexthdr = NEXTHDR_ICMPV6;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, &pseudo.src, sizeof(pseudo.src));
	__builtin_memcpy(&ip6->daddr, &pseudo.dst, sizeof(pseudo.dst));

	icmp[0] = ICMPV6_PKT_TOOBIG;
	icmp[1] = 0;
	*(__u16 *)(icmp + 2) = 0;
	*(__be32 *)(icmp + 4) = bpf_htonl(mtu);
	pseudo.len = bpf_htonl(ICMPV6_HDR_LEN + quote);
	pseudo.nexthdr = bpf_htonl(NEXTHDR_ICMPV6);

	sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	sum = csum_block(icmp, data_end, ICMPV6_HDR_LEN, sum);
	quoted = icmp + ICMPV6_HDR_LEN;
	if (quote == PTB_QUOTE) {
		sum = csum_block(quoted, data_end, 512, sum);
		sum = csum_block(quoted + 512, data_end, 512, sum);
		sum = csum_block(quoted + 1024, data_end, PTB_QUOTE - 1024, sum);
	} else {
		sum = csum_block(quoted, data_end, PTB_QUOTE_SHORT, sum);
	}
	if (sum < 0)
		return XDP_DROP;
	*(__u16 *)(icmp + 2) = csum_fold((__u32)sum);
	return XDP_TX;
}

/* What encap_forward6 carries: the family of the inner packet, and for IPv4 its DF bit. */
enum inner_kind {
	INNER_IPV6,
	INNER_IPV4,
	INNER_IPV4_DF,
};

/*
 * Prepend the outer header in the target's family (IPv6, or IPv4) and send the packet on,
 * or pass it to this node's own stack when the target is this node (the routing node among
 * its own targets: the DVIPA is a local address here, see dvipa_distribute). `target` is
 * the target's address (IPv4-mapped for IPv4); `t` its index's entry when it still holds
 * that target, else NULL (the FIB is then asked, and `via_routes` for a VIPAROUTE). Too
 * big: ICMPv6 packet too big for IPv6 inside, ICMP fragmentation needed (DF) or a drop for
 * IPv4 inside.
 */
static __always_inline int encap_forward6(struct xdp_md *ctx, const struct dvipa_config *cfg,
					  struct dvipa_svc_stats *st, const struct dvipa_in6 *target,
					  const struct dvipa_target *t, int l2len, __u32 inner_len, __u8 tclass,
					  enum inner_kind inner)
{
	__u8 tunnelled = inner == INNER_IPV6 ? IPPROTO_IPV6 : IPPROTO_IPIP;
	struct dvipa_target looked_up = {};
	const struct dvipa_target *nh = t;
	int v4 = in6_is_v4mapped(target);
	__be32 dst4 = target->w[3];
	int outer_len = v4 ? ENCAP_LEN : ENCAP6_LEN;
	void *data, *data_end;
	struct ethhdr *eth;

	if (v4) {
		if (dst4 == cfg->cluster_addr)
			return verdict(XDP_PASS, DVIPA_R_PASS_LOCAL_TARGET);
	} else {
		if (in6_eq(target, &cfg->cluster_addr6))
			return verdict(XDP_PASS, DVIPA_R_PASS_LOCAL_TARGET);
		/* No IPv6 cluster address to send from: an IPv6 target is out of reach. */
		if (in6_is_zero(&cfg->cluster_addr6))
			return drop(st, DVIPA_R_DROP_NO_ROUTE);
	}
	/* As encap_forward: a resolved target's entry has its next hop, and its VIPAROUTE in `via`. */
	if (!nh || !nh->ifindex) {
		int rc;

		if (v4) {
			__be32 *via = bpf_map_lookup_elem(&via_routes, &dst4);

			if (via)
				dst4 = *via;
			rc = fib_nexthop(ctx, cfg, dst4, tclass, &looked_up);
		} else {
			rc = fib_nexthop6(ctx, cfg, target, &looked_up);
		}
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return drop_fib(st, rc);
		nh = &looked_up;
	} else if (v4 && nh->via) {
		dst4 = nh->via;
	}
	if (inner_len + outer_len > nh->mtu) {
		if (inner == INNER_IPV4)
			return drop(st, DVIPA_R_DROP_TOO_BIG);
		if (inner == INNER_IPV4_DF) {
			if (frag_needed(ctx, l2len, nh->mtu - outer_len) != XDP_TX)
				return drop(st, DVIPA_R_DROP_ENCAP);
			st->frag_needed++;
			return verdict(XDP_TX, DVIPA_R_TX_FRAG_NEEDED);
		}
		if (pkt_too_big(ctx, l2len, nh->mtu - outer_len) != XDP_TX)
			return drop(st, DVIPA_R_DROP_ENCAP);
		st->frag_needed++;
		return verdict(XDP_TX, DVIPA_R_TX_PKT_TOO_BIG);
	}

	/* Forwarded packets leave untagged: the new L2 header replaces Ethernet + VLAN. */
	if (bpf_xdp_adjust_head(ctx, l2len - (int)sizeof(*eth) - outer_len))
		return drop(st, DVIPA_R_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if (v4) {
		struct iphdr *outer = (void *)(eth + 1);

		if ((void *)(outer + 1) > data_end)
			return drop(st, DVIPA_R_DROP_ENCAP);
		eth->h_proto = bpf_htons(ETH_P_IP);
		write_outer4(outer, cfg, dst4, tunnelled, tclass, inner_len);
	} else {
		struct ipv6hdr *outer = (void *)(eth + 1);

		if ((void *)(outer + 1) > data_end)
			return drop(st, DVIPA_R_DROP_ENCAP);
		eth->h_proto = bpf_htons(ETH_P_IPV6);
		*(__be32 *)outer = bpf_htonl(0x60000000 | ((__u32)tclass << 20));
		outer->payload_len = bpf_htons(inner_len);
		outer->nexthdr = tunnelled;
		outer->hop_limit = 64;
		__builtin_memcpy(&outer->saddr, &cfg->cluster_addr6, sizeof(outer->saddr));
		__builtin_memcpy(&outer->daddr, target, sizeof(outer->daddr));
	}
	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	return send_to(ctx, st, nh);
}

/* The IPv6 CRT entry: confirmed connections (`crt6_est`) first, `first` packets skip them (as for IPv4). */
static __always_inline struct dvipa_crt6_entry *crt6_lookup(const struct dvipa_flow6 *flow, int first)
{
	struct dvipa_crt6_entry *e = first ? NULL : bpf_map_lookup_elem(&crt6_est, flow);

	return e ? e : bpf_map_lookup_elem(&crt6, flow);
}

static __always_inline void flow6_of4(const struct dvipa_flow *f, struct dvipa_flow6 *out)
{
	in6_set_v4mapped(&out->saddr, f->saddr);
	in6_set_v4mapped(&out->daddr, f->daddr);
	out->sport = f->sport;
	out->dport = f->dport;
	out->proto = f->proto;
}

/* An IPv4 packet on to an IPv6 target (or this node itself). */
static __always_inline int forward_4in6(struct xdp_md *ctx, const struct dvipa_config *cfg,
					struct dvipa_svc_stats *st, const struct dvipa_in6 *target,
					const struct dvipa_target *t, int l2len, const struct iphdr *iph)
{
	return encap_forward6(ctx, cfg, st, target, t, l2len, ntohs_bounded(iph->tot_len), iph->tos,
			      (iph->frag_off & bpf_htons(IP_DF)) ? INNER_IPV4_DF : INNER_IPV4);
}

/*
 * An IPv4 flow of a service with IPv6 targets, not in `crt`: forwarded if crt6_est or crt6 has its
 * entry (under the IPv4-mapped 5-tuple); -1 if it has none.
 */
static __always_inline int established_4in6(struct xdp_md *ctx, const struct dvipa_config *cfg,
					    const struct dvipa_svc *svc, struct dvipa_svc_stats *st,
					    const struct dvipa_flow *flow, int first, int l2len, const struct iphdr *iph,
					    __u32 len)
{
	struct dvipa_flow6 key = {};
	struct dvipa_crt6_entry *entry;
	const struct dvipa_target *t;
	struct dvipa_in6 target;

	flow6_of4(flow, &key);
	entry = crt6_lookup(&key, first);
	if (!entry)
		return -1;
	st->crt_hit++;
	target = entry->target;
	t = target_at(entry->target_idx);
	if (t && !target_is(t, &target))
		t = NULL;
	if (svc->affinity_s)
		touch_affinity(svc, flow->saddr, in6_is_v4mapped(&target) ? target.w[3] : 0, entry->target_idx);
	count_target(entry->target_idx, len, 0);
	return forward_4in6(ctx, cfg, st, &target, t, l2len, iph);
}

/* A new IPv4 connection (or a recovered one) placed on the IPv6 target at `idx`. */
static __always_inline int new_4in6(struct xdp_md *ctx, const struct dvipa_config *cfg,
				    const struct dvipa_svc *svc, struct dvipa_svc_stats *st,
				    const struct dvipa_flow *flow, const struct dvipa_target *t, __u32 idx, int first,
				    int guarded, __u64 now, int l2len, const struct iphdr *iph, __u32 len)
{
	struct dvipa_flow6 key = {};
	struct dvipa_crt6_entry fresh = {};
	int inserted = 0;

	flow6_of4(flow, &key);
	/* A recovered packet's target is a guess: it must not become the client's affinity (nor a guarded one). */
	if (svc->affinity_s && first && !guarded)
		touch_affinity(svc, flow->saddr, 0, idx);
	fresh.target = t->addr6;
	if (!guarded) {
		fresh.target_idx = idx;
		fresh.svc_id = svc->id;
		fresh.origin = first ? DVIPA_CRT_FIRST : DVIPA_CRT_RECOVERED;
		fresh.created_ns = now;
		inserted = !bpf_map_update_elem(&crt6, &key, &fresh, BPF_NOEXIST);
	}
	count_insert(st, idx, len, first, inserted, guarded);
	return forward_4in6(ctx, cfg, st, &fresh.target, t, l2len, iph);
}

/* An IPv6 frame, the cursor past L2: the IPv6 counterpart of the rest of dvipa_distribute. */
static __always_inline int dvipa_distribute6(struct xdp_md *ctx, const struct dvipa_config *cfg,
					     struct cursor *c, int l2len)
{
	struct dvipa_svc6_key sk = {};
	struct dvipa_flow6 flow = {};
	struct dvipa_crt6_entry *entry, fresh = {};
	const struct dvipa_in6 *target;
	const struct dvipa_target *t;
	struct dvipa_svc_stats *st;
	struct dvipa_svc *svc;
	struct ipv6hdr *ip6;
	__u32 idx, len, tclass;
	int first = 0, syn = 0, over, inserted = 0, guarded;
	__u8 nexthdr;
	__u64 now;

	ip6 = parse_ipv6(c);
	if (!ip6)
		return verdict(XDP_PASS, DVIPA_R_PASS_MALFORMED);
	__builtin_memcpy(&flow.daddr, &ip6->daddr, sizeof(flow.daddr));
	/* The fence after the service lookup or on the way out, as for IPv4 (dvipa_distribute). */
	nexthdr = ip6->nexthdr;
	switch (ipv6_skip_ext(c, &nexthdr)) {
	case IPV6_L4_FRAGMENT:
		goto fragment;
	case IPV6_L4_MALFORMED:
		goto truncated_l4;
	default:
		break;
	}

	if (nexthdr == IPPROTO_TCP) {
		struct tcphdr *th = c->pos;

		if ((void *)(th + 1) > c->end)
			goto truncated_l4;
		flow.sport = th->source;
		flow.dport = th->dest;
		first = syn = th->syn && !th->ack;
	} else if (nexthdr == IPPROTO_UDP) {
		struct udphdr *uh = c->pos;

		if ((void *)(uh + 1) > c->end)
			goto truncated_l4;
		flow.sport = uh->source;
		flow.dport = uh->dest;
		first = 1;
	} else if (nexthdr == NEXTHDR_ICMPV6) {
		/* A Neighbour Solicitation's target follows its 4 reserved bytes. */
		__u8 *icmp = c->pos;
		struct dvipa_in6 *asked = (void *)(icmp + ICMPV6_HDR_LEN);

		if (fenced6(&flow.daddr, 0))
			return verdict(XDP_DROP, DVIPA_R_DROP_FENCED);
		if ((void *)(asked + 1) <= c->end && icmp[0] == ICMPV6_NEIGH_SOLICIT && fenced6(asked, 1))
			return verdict(XDP_DROP, DVIPA_R_DROP_FENCED_ARP);
		return verdict(XDP_PASS, DVIPA_R_PASS_NOT_SERVICE);
	} else {
		goto not_service;
	}

	sk.vip = flow.daddr;
	sk.port = flow.dport;
	sk.proto = nexthdr;
	svc = find_service(&svc_index6, &sk, sizeof(sk) / 4, &sk.port, cfg->any_port & any_port_bit6(&flow.daddr));
	if (!svc)
		goto not_service;
	if (fenced_service(svc, &fence6, &flow.daddr))
		return verdict(XDP_DROP, DVIPA_R_DROP_FENCED);
	/* The IP length, checked against the whole frame: the first buffer of a jumbo frame is not all of it. */
	len = sizeof(*ip6) + ntohs_bounded(ip6->payload_len);
	st = count_service(svc, l2len + len);
	if (!st)
		return verdict(XDP_DROP, DVIPA_R_DROP_NO_TARGET);
	tclass = (bpf_ntohl(*(__be32 *)ip6) >> 20) & 0xff;

	__builtin_memcpy(&flow.saddr, &ip6->saddr, sizeof(flow.saddr));
	flow.proto = nexthdr;
	over = syn_over_budget(cfg, syn);
	entry = over ? NULL : crt6_lookup(&flow, first);
	if (entry) {
		st->crt_hit++;
		target = &entry->target;
		idx = entry->target_idx;
		t = target_at(idx);
		if (t && !target_is(t, target))
			t = NULL;
		if (svc->affinity_s)
			touch_affinity6(svc, &flow.saddr, target, idx);
		count_target(idx, l2len + len, 0);
	} else {
		const __u32 *slot_idx = maglev_slot(svc, dvipa_flow_hash6(&flow));

		st->crt_miss++;
		now = bpf_ktime_get_coarse_ns();
		guarded = over || new_flow_guarded(cfg, now);
		idx = first && svc->affinity_s ? affine_target6(svc, &flow.saddr) : 0;
		t = pick_target(svc, slot_idx, &idx);
		if (!t)
			return drop(st, DVIPA_R_DROP_NO_TARGET);
		target_in6(t, &fresh.target);
		target = &fresh.target;
		/*
		 * A recovered packet's target is a guess: it must not become the client's affinity.
		 * Over the rate guard, no write at all: hashed alone, as for IPv4.
		 */
		if (svc->affinity_s && first && !guarded)
			touch_affinity6(svc, &flow.saddr, target, idx);
		if (!guarded) {
			fresh.target_idx = idx;
			fresh.svc_id = svc->id;
			fresh.origin = first ? DVIPA_CRT_FIRST : DVIPA_CRT_RECOVERED;
			fresh.created_ns = now;
			/* Another CPU may have raced us to it: its entry is as good as ours, and it counts it. */
			inserted = !bpf_map_update_elem(&crt6, &flow, &fresh, BPF_NOEXIST);
		}
		count_insert(st, idx, l2len + len, first, inserted, guarded);
	}
	return encap_forward6(ctx, cfg, st, target, t, l2len, len, tclass, INNER_IPV6);

not_service:
	return not_served(&fence6, &routed6, &flow.daddr, XDP_PASS, DVIPA_R_PASS_NOT_SERVICE);
truncated_l4:
	return not_served(&fence6, &routed6, &flow.daddr, XDP_DROP, DVIPA_R_DROP_MALFORMED_L4);
fragment:
	return not_served(&fence6, &routed6, &flow.daddr, XDP_PASS, DVIPA_R_PASS_FRAGMENT6);
}

#endif
