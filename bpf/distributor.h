/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The routing node's per-packet logic, shared by the distributor program and the
 * benchmark harness so both run the very same code.
 *
 * Verdicts (each counted in `reasons`, and per service in `svc_stats`); IPv6 has its own
 * path with the same verdicts, in distributor6.h:
 *  - neither IPv4 nor IPv6, not a distributed DVIPA:port, unparsable L2/L3: XDP_PASS untouched;
 *  - TCP/UDP to a distributed service: encapsulated IPv4-in-IPv4 to the target's cluster
 *    address and sent on (XDP_TX or redirect), or dropped with a reason; when the target is
 *    this node itself, passed to its own stack, which holds the DVIPA;
 *  - fragments to a distributed DVIPA: dropped (a non-first fragment has no ports, so it
 *    cannot be matched to its connection; TCP avoids fragments with PMTU discovery);
 *  - too big once encapsulated: ICMP fragmentation needed back to the client if DF is
 *    set, else dropped (XDP cannot fragment);
 *  - ARP requests for a DVIPA and IPv4 to it, any protocol, once its fencing deadline has
 *    passed (map `fence`): dropped, so that a node whose agent can no longer prove it owns
 *    the DVIPA stops answering for it before a backup takes it over; ARP requests for a
 *    DVIPA this node is handing over (DVIPA_FENCE_DRAIN), dropped while its IPv4 traffic is
 *    still forwarded.
 */
#ifndef DVIPA_DISTRIBUTOR_H
#define DVIPA_DISTRIBUTOR_H

#include "parse.h"
#include "maps_router.h"
#include "flowhash.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_ALEN 6
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ENCAP_LEN ((int)sizeof(struct iphdr))
/* ICMP quotes the original IP header (at most 60 bytes) and 8 bytes of its payload. */
#define ICMP_QUOTE_MAX_WORDS ((8 + 60 + 8) / 2)

static __always_inline int drop(struct dvipa_svc_stats *st, __u32 reason)
{
	st->dropped++;
	return verdict(XDP_DROP, reason);
}

/*
 * Turn the too-big packet into an ICMP "fragmentation needed" to its sender, quoting the
 * original IP header and 8 bytes, from the DVIPA the client was talking to.
 */
static __always_inline int frag_needed(struct xdp_md *ctx, int l2len, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr eth_orig;
	struct iphdr *orig, *ip;
	struct icmphdr *icmp;
	__be32 client, vip;
	int quote, reply_len;
	__u16 *w;
	__u32 sum = 0;

	if (l2len != sizeof(struct ethhdr) && l2len != sizeof(struct ethhdr) + sizeof(struct vlan_hdr))
		return XDP_DROP;
	if (data + l2len + sizeof(struct iphdr) > data_end)
		return XDP_DROP;
	orig = data + l2len;
	client = orig->saddr;
	vip = orig->daddr;
	quote = orig->ihl * 4 + 8;
	__builtin_memcpy(&eth_orig, data, sizeof(eth_orig));

	/* Cut to L2 + quote, then prepend the new IP and ICMP headers. */
	/* The whole frame's length: a jumbo frame's fragments go too. */
	if (bpf_xdp_adjust_tail(ctx, (l2len + quote) - (int)bpf_xdp_get_buff_len(ctx)))
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(*ip) + sizeof(*icmp))))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	/* Move L2 to the new front; a VLAN tag, if any, stays as it was. */
	if (l2len == sizeof(struct ethhdr)) {
		if (data + sizeof(struct ethhdr) + sizeof(*ip) + sizeof(*icmp) > data_end)
			return XDP_DROP;
	} else {
		if (data + sizeof(struct ethhdr) + sizeof(struct vlan_hdr) + sizeof(*ip) + sizeof(*icmp) >
		    data_end)
			return XDP_DROP;
		__builtin_memcpy(data + sizeof(struct ethhdr),
				 data + sizeof(struct ethhdr) + sizeof(*ip) + sizeof(*icmp),
				 sizeof(struct vlan_hdr));
	}
	__builtin_memcpy(((struct ethhdr *)data)->h_dest, eth_orig.h_source, ETH_ALEN);
	__builtin_memcpy(((struct ethhdr *)data)->h_source, eth_orig.h_dest, ETH_ALEN);
	((struct ethhdr *)data)->h_proto = eth_orig.h_proto;

	ip = data + l2len;
	icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) > data_end)
		return XDP_DROP;
	reply_len = sizeof(*ip) + sizeof(*icmp) + quote;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0xc0; /* network control, as Linux uses for ICMP errors */
	ip->tot_len = bpf_htons(reply_len);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->saddr = vip;
	ip->daddr = client;
	ipv4_set_csum(ip);

	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->un.frag.__unused = 0;
	icmp->un.frag.mtu = bpf_htons(mtu);
	w = (__u16 *)icmp;
	for (int i = 0; i < ICMP_QUOTE_MAX_WORDS; i++) {
		if (i >= (int)(sizeof(*icmp) + quote) / 2 || (void *)(w + 1) > data_end)
			break;
		sum += *w++;
	}
	icmp->checksum = csum_fold(sum);
	return XDP_TX;
}

/*
 * The FIB's next hop for a lookup whose family, addresses and tos the caller has set, with
 * the egress MTU. Returns a BPF_FIB_LKUP_RET_* code.
 */
static __always_inline int fib_resolve(struct xdp_md *ctx, struct bpf_fib_lookup *fib, struct dvipa_target *nh)
{
	int rc;

	/* A 64 KiB packet makes the FIB tell the route's MTU (FRAG_NEEDED) ... */
	fib->tot_len = 0xffff;
	fib->ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	nh->mtu = 0xffff;
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		/* ... and then, with no length to check, the neighbour's address. */
		nh->mtu = fib->mtu_result;
		fib->tot_len = 0;
		fib->ifindex = ctx->ingress_ifindex;
		rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc;
	nh->ifindex = fib->ifindex;
	__builtin_memcpy(nh->smac, fib->smac, ETH_ALEN);
	__builtin_memcpy(nh->dmac, fib->dmac, ETH_ALEN);
	return rc;
}

/*
 * The FIB's next hop towards the IPv4 address `target` from the ingress interface.
 * The control plane makes the same lookup (xdp_resolve) for each target; the data plane
 * makes it only for a target not resolved yet.
 */
static __always_inline int fib_nexthop(struct xdp_md *ctx, const struct dvipa_config *cfg,
				       __be32 target, __u8 tos, struct dvipa_target *nh)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.family = AF_INET;
	fib.tos = tos;
	fib.l4_protocol = IPPROTO_IPIP;
	fib.ipv4_src = cfg->cluster_addr;
	fib.ipv4_dst = target;
	rc = fib_resolve(ctx, &fib, nh);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS)
		nh->addr = target;
	return rc;
}

/* The same towards an IPv6 target, from this node's IPv6 cluster address. */
static __always_inline int fib_nexthop6(struct xdp_md *ctx, const struct dvipa_config *cfg,
					const struct dvipa_in6 *target, struct dvipa_target *nh)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.family = AF_INET6;
	fib.l4_protocol = IPPROTO_IPV6;
	__builtin_memcpy(fib.ipv6_src, &cfg->cluster_addr6, sizeof(fib.ipv6_src));
	__builtin_memcpy(fib.ipv6_dst, target, sizeof(fib.ipv6_dst));
	rc = fib_resolve(ctx, &fib, nh);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		nh->family = AF_INET6;
		nh->addr6 = *target;
	}
	return rc;
}

/* The drop for a failed FIB lookup. */
static __always_inline int drop_fib(struct dvipa_svc_stats *st, int rc)
{
	switch (rc) {
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		return drop(st, DVIPA_R_DROP_NO_NEIGH);
	case BPF_FIB_LKUP_RET_FWD_DISABLED:
		return drop(st, DVIPA_R_DROP_FWD_DISABLED);
	default:
		return drop(st, DVIPA_R_DROP_NO_ROUTE);
	}
}

/* An encapsulated packet, its L2 header written, leaves towards the next hop `nh`. */
static __always_inline int send_to(struct xdp_md *ctx, struct dvipa_svc_stats *st, const struct dvipa_target *nh)
{
	if (nh->ifindex == ctx->ingress_ifindex) {
		st->forwarded++;
		return verdict(XDP_TX, DVIPA_R_FWD_TX);
	}
	/* Not in tx_ports: the helper answers XDP_DROP instead of a redirect that would fail. */
	if (bpf_redirect_map(&tx_ports, nh->ifindex, XDP_DROP) != XDP_REDIRECT)
		return drop(st, DVIPA_R_DROP_NO_EGRESS);
	st->forwarded++;
	return verdict(XDP_REDIRECT, DVIPA_R_FWD_REDIRECT);
}

/*
 * An IPv4 outer header to `dst` (option-less, DF: it fits the egress MTU), written as five
 * words and checksummed from the values in registers: no byte stores and no read-back of
 * the header (ipv4_set_csum's loop), on every forwarded packet.
 */
static __always_inline void write_outer4(struct iphdr *outer, const struct dvipa_config *cfg, __be32 dst,
					 __u8 proto, __u8 tos, __u32 inner_len)
{
	__be32 *w = (__be32 *)outer;
	/* version 4, IHL 5, tos, total length | id 0, DF | TTL 64, protocol, checksum 0 */
	__be32 w0 = bpf_htonl(0x45000000 | ((__u32)tos << 16) | ((inner_len + ENCAP_LEN) & 0xffff));
	__be32 w1 = bpf_htonl(IP_DF);
	__be32 w2 = bpf_htonl(0x40000000 | ((__u32)proto << 16));
	__u64 sum = (__u64)w0 + w1 + w2 + cfg->cluster_addr + dst;

	w[0] = w0;
	w[1] = w1;
	w[2] = w2;
	w[3] = cfg->cluster_addr;
	w[4] = dst;
	/* The one's complement sum of the 16-bit words is that of the 32-bit ones, folded. */
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	outer->check = csum_fold((__u32)sum);
}

/* The entry at a target index; NULL for index 0 or beyond the table. */
static __always_inline const struct dvipa_target *target_at(__u32 idx)
{
	return idx ? bpf_map_lookup_elem(&targets, &idx) : NULL;
}

/*
 * Prepend the outer IPv4 header to the target and send the packet on its way. `t` is the
 * target's entry if the caller has one: its next hop is used when resolved and still for
 * this address (an index freed and reused under a connection's CRT entry is not).
 */
static __always_inline int encap_forward(struct xdp_md *ctx, const struct dvipa_config *cfg,
					 struct dvipa_svc_stats *st, __be32 target,
					 const struct dvipa_target *t, int l2len, const struct iphdr *inner)
{
	struct dvipa_target looked_up = {};
	const struct dvipa_target *nh = t;
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *outer;
	__u16 inner_len = ntohs_bounded(inner->tot_len);
	__u8 tos = inner->tos;
	int df = (inner->frag_off & bpf_htons(IP_DF)) != 0;
	__be32 dst = target;

	/*
	 * The control plane resolves each target's next hop, towards its VIPAROUTE address (`via`:
	 * the target reached at another of its addresses) if it has one. A target not resolved
	 * yet, or an index reused, asks the FIB per packet, and `via_routes` for its VIPAROUTE.
	 */
	if (!nh || nh->addr != target || !nh->ifindex) {
		__be32 *via = bpf_map_lookup_elem(&via_routes, &target);
		int rc;

		if (via)
			dst = *via;
		rc = fib_nexthop(ctx, cfg, dst, tos, &looked_up);
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return drop_fib(st, rc);
		nh = &looked_up;
	} else if (nh->via) {
		dst = nh->via;
	}
	if (inner_len + ENCAP_LEN > nh->mtu) {
		if (!df)
			return drop(st, DVIPA_R_DROP_TOO_BIG);
		if (frag_needed(ctx, l2len, nh->mtu - ENCAP_LEN) != XDP_TX)
			return drop(st, DVIPA_R_DROP_ENCAP);
		st->frag_needed++;
		return verdict(XDP_TX, DVIPA_R_TX_FRAG_NEEDED);
	}

	/* Forwarded packets leave untagged: the new L2 header replaces Ethernet + VLAN. */
	if (bpf_xdp_adjust_head(ctx, l2len - (int)(sizeof(*eth) + ENCAP_LEN)))
		return drop(st, DVIPA_R_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end)
		return drop(st, DVIPA_R_DROP_ENCAP);

	__builtin_memcpy(eth->h_dest, nh->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, nh->smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	write_outer4(outer, cfg, dst, IPPROTO_IPIP, tos, inner_len);
	return send_to(ctx, st, nh);
}

/*
 * Per target: every packet and its bytes; and a new connection where its CRT entry is made
 * (`inserted`), so never on an established connection's packets.
 */
static __always_inline void count_target(__u32 idx, __u32 bytes, int inserted)
{
	struct dvipa_target_stats *ts = bpf_map_lookup_elem(&target_stats, &idx);

	if (!ts)
		return;
	ts->packets++;
	ts->bytes += bytes;
	if (inserted)
		ts->conns++;
}

/* TIMEDAFFINITY: the client's target index if it used it within the service's affinity time. */
static __always_inline __u32 affine_target(const struct dvipa_svc *svc, __be32 client)
{
	struct dvipa_affinity_key k = { .svc_id = svc->id, .client = client };
	struct dvipa_affinity *a = bpf_map_lookup_elem(&affinity, &k);

	if (!a || bpf_ktime_get_coarse_ns() - a->last_ns > (__u64)svc->affinity_s * 1000000000ULL)
		return 0;
	return a->target_idx;
}

/* Every packet of the service renews the client's affinity: it runs from its last activity. */
static __always_inline void touch_affinity(const struct dvipa_svc *svc, __be32 client, __be32 target,
					   __u32 target_idx)
{
	struct dvipa_affinity_key k = { .svc_id = svc->id, .client = client };
	struct dvipa_affinity *a = bpf_map_lookup_elem(&affinity, &k);
	struct dvipa_affinity fresh = {
		.target = target, .target_idx = target_idx, .last_ns = bpf_ktime_get_coarse_ns(),
	};

	/* An IPv6 target has no IPv4 address (0): its index tells it. */
	if (a && a->target == target && (target || a->target_idx == target_idx)) {
		a->last_ns = fresh.last_ns;
		return;
	}
	bpf_map_update_elem(&affinity, &k, &fresh, BPF_ANY);
}

/* Orders the compiler's accesses around a slot's `seq` (x86 orders the CPU's: TSO). */
#define crt_barrier() asm volatile("" ::: "memory")

/*
 * Where a flow lives in `crt` (dvipa.h): a multiplicative hash of its words under the cache's
 * secret `k`, not its Maglev hash. Placement is this node's own business (another node never
 * reads this cache), so it need not be the hash every node agrees on, and an established
 * flow's every packet pays it: three independent multiplies and a final mix instead of
 * lookup3's chain of about forty dependent steps. The Maglev hash is then made only on a miss.
 * src/tables/crt-hash.ts is the same function in user space.
 */
static __always_inline __u32 crt_hash(const struct dvipa_crt_key *k, const struct dvipa_flow *f)
{
	/*
	 * The addresses in host order: consecutive clients then differ in low bits, which the
	 * multiply carries up to the bits the set comes from (loaded as they lie, they differed in
	 * the top byte: 32 % more empty sets than chance for a run of clients). Ports as they lie.
	 */
	__u32 h = (bpf_ntohl(f->saddr) * k->saddr_mul) ^ (bpf_ntohl(f->daddr) * k->daddr_mul) ^
		  (*(__u32 *)&f->sport * k->ports_mul) ^ f->proto ^ k->salt;

	h ^= h >> 16;
	h *= 0x27d4eb2fu;
	return h ^ (h >> 15);
}

/*
 * The set of flow `f`: its crt_hash reduced to [0, crt_sets) by a multiply and a shift, so any
 * number of sets works. NULL while user space has not said how many sets there are or written
 * the cache's secret (its multipliers are odd, never 0).
 */
static __always_inline struct dvipa_crt_set *crt_set(const struct dvipa_config *cfg, const struct dvipa_flow *f)
{
	__u32 zero = 0, i;
	const struct dvipa_crt_key *k = bpf_map_lookup_elem(&crt_key, &zero);

	if (!k || !k->saddr_mul || !cfg->crt_sets)
		return NULL;
	i = ((__u64)crt_hash(k, f) * cfg->crt_sets) >> 32;
	return bpf_map_lookup_elem(&crt, &i);
}

/*
 * Whether the slot holds the flow; if so its entry is copied to *e and the slot marked used.
 * A slot being written (odd `seq`), or written while it was read, holds nothing.
 */
static __always_inline int crt_slot_read(struct dvipa_crt_slot *s, const struct dvipa_flow *f, struct dvipa_crt_entry *e)
{
	__u32 seq = *(volatile __u32 *)&s->seq;

	if (seq & 1)
		return 0;
	crt_barrier();
	if (s->saddr != f->saddr || s->daddr != f->daddr || *(__u32 *)&s->sport != *(__u32 *)&f->sport ||
	    s->proto != f->proto)
		return 0;
	e->target = s->target;
	e->target_idx = s->target_idx;
	e->svc_id = s->svc_id;
	e->origin = s->origin;
	crt_barrier();
	if (*(volatile __u32 *)&s->seq != seq)
		return 0;
	if (!s->ref)
		s->ref = 1;
	return 1;
}

/* Whether the set holds the flow (its entry then in *e). */
static __always_inline int crt_find(struct dvipa_crt_set *set, const struct dvipa_flow *f, struct dvipa_crt_entry *e)
{
	for (int w = 0; w < DVIPA_CRT_WAYS; w++)
		if (crt_slot_read(&set->way[w], f, e))
			return 1;
	return 0;
}

/*
 * Inserts the flow with entry *e into its set unless it is there. Returns 1 if inserted; 0 if
 * the flow was there (its entry then in *e); -1 if the slot it would take was being written
 * (by another CPU or user space): not inserted. The slot taken: the first empty one, else,
 * from the set's hand on, the first no packet used since the hand last passed over it,
 * clearing the `ref` bits of those it passes (CLOCK); all used: the one at the hand. The hand
 * then points past the slot taken. A new slot starts unused, so a flood of first packets that
 * are never followed takes the slots of its own kind before any a connection keeps using; and
 * as the hand goes round, the unused slot taken is the one filled longest ago: a new flow
 * keeps its slot over the next DVIPA_CRT_WAYS - 1 inserts into its set, the time its client
 * has to send a second packet. (A start drawn from each new flow's hash, as before, let
 * the very next new flow into the set take it.) The hand is a hint: two CPUs inserting into a
 * set at once may both move it (user space's writes keep it: src/dataplane/flow-cache.ts).
 */
static __always_inline int crt_insert(struct dvipa_crt_set *set, const struct dvipa_flow *f, struct dvipa_crt_entry *e,
				      __u32 now_s)
{
	struct dvipa_crt_slot *s = NULL;
	__u32 seq, at = 0, hand = set->way[0].hand;
	int w;

	if (crt_find(set, f, e))
		return 0;
	for (w = 0; w < DVIPA_CRT_WAYS && !s; w++)
		if (!set->way[w].proto) {
			at = w;
			s = &set->way[w];
		}
	for (w = 0; w < DVIPA_CRT_WAYS && !s; w++) {
		at = (hand + w) & (DVIPA_CRT_WAYS - 1);
		if (!set->way[at].ref)
			s = &set->way[at];
		else
			set->way[at].ref = 0;
	}
	if (!s) {
		at = hand & (DVIPA_CRT_WAYS - 1);
		s = &set->way[at];
	}
	seq = *(volatile __u32 *)&s->seq;
	if ((seq & 1) || __sync_val_compare_and_swap(&s->seq, seq, seq + 1) != seq)
		return -1;
	s->saddr = f->saddr;
	s->daddr = f->daddr;
	s->sport = f->sport;
	s->dport = f->dport;
	s->proto = f->proto;
	s->origin = e->origin;
	s->target_idx = e->target_idx;
	s->target = e->target;
	s->svc_id = e->svc_id;
	s->ref = 0;
	s->created_s = now_s;
	__sync_fetch_and_add(&s->seq, 1);
	set->way[0].hand = (at + 1) & (DVIPA_CRT_WAYS - 1);
	return 1;
}

/*
 * The per-CPU new-flow rate guard: whether this new flow is over this CPU's budget of
 * `max_new_flows` in the current one-second window (then it is hashed, not inserted). Fixed
 * windows on the coarse clock: a burst straddling two windows may get up to twice the budget.
 */
static __always_inline int new_flow_guarded(const struct dvipa_config *cfg, __u64 now)
{
	struct dvipa_flow_rate *r;
	__u32 zero = 0;

	if (!cfg->max_new_flows)
		return 0;
	r = bpf_map_lookup_elem(&flow_rate, &zero);
	if (!r)
		return 0;
	if (now - r->window_ns >= 1000000000ULL) {
		r->window_ns = now;
		r->count = 0;
	}
	return ++r->count > cfg->max_new_flows;
}

/*
 * Whether a SYN comes while this CPU is over its new-flow budget (the current window's count
 * already at `max_new_flows`). Such a SYN is hashed without an insert whatever it is, so it
 * skips the CRT lookup too: that cold miss in a table of a million was most of what a flood
 * over the rate cost per packet. A retransmitted SYN of a connection inserted before still
 * hashes to the target it has, unless the Maglev table changed in between. Not UDP: every
 * datagram is a first one, and flows with entries must keep them through a flood.
 */
static __always_inline int syn_over_budget(const struct dvipa_config *cfg, int syn)
{
	struct dvipa_flow_rate *r;
	__u32 zero = 0;

	if (!syn || !cfg->max_new_flows)
		return 0;
	r = bpf_map_lookup_elem(&flow_rate, &zero);
	return r && bpf_ktime_get_coarse_ns() - r->window_ns < 1000000000ULL && r->count >= cfg->max_new_flows;
}

/*
 * Whether a fence entry forbids: a deadline passed or, for an ARP request or a Neighbour
 * Solicitation (`resolve`), a drain (DVIPA_FENCE_DRAIN). No entry: never.
 */
static __always_inline int fence_forbids(const __u64 *deadline, int resolve)
{
	if (!deadline)
		return 0;
	if (resolve && (*deadline & DVIPA_FENCE_DRAIN))
		return 1;
	return bpf_ktime_get_ns() > (*deadline & ~DVIPA_FENCE_DRAIN);
}

/* Whether this node may no longer answer for `vip` (`resolve`: its ARP requests). */
static __always_inline int fenced(__be32 vip, int resolve)
{
	return fence_forbids(bpf_map_lookup_elem(&fence, &vip), resolve);
}

/*
 * The same for a packet of a service of the DVIPA, in either family's fence map: no lookup
 * for a DVIPA without a deadline (DVIPA_SVC_UNFENCED).
 */
static __always_inline int fenced_service(const struct dvipa_svc *svc, void *fence_map, const void *vip)
{
	return !(svc->flags & DVIPA_SVC_UNFENCED) && fence_forbids(bpf_map_lookup_elem(fence_map, vip), 0);
}

/*
 * A packet to an address that no service takes, in either family's maps: dropped if it is a
 * DVIPA past its deadline; else, if the address is a distributed DVIPA, `action` for `reason`
 * (a fragment, a truncated transport header); else passed. Inlined with constants at each
 * exit, so that a passed packet pays the fence lookup alone.
 */
static __always_inline int not_served(void *fence_map, void *routed_map, const void *vip, int action, __u32 reason)
{
	if (fence_forbids(bpf_map_lookup_elem(fence_map, vip), 0))
		return verdict(XDP_DROP, DVIPA_R_DROP_FENCED);
	if (reason != DVIPA_R_PASS_NOT_SERVICE && bpf_map_lookup_elem(routed_map, vip))
		return verdict(action, reason);
	return verdict(XDP_PASS, DVIPA_R_PASS_NOT_SERVICE);
}

/* Whether a target index holds a target (a free index holds zeros). */
static __always_inline int target_live(const struct dvipa_target *t)
{
	return t->family == AF_INET6 ? !in6_is_zero(&t->addr6) : t->addr != 0;
}

/*
 * Counts a new flow: inserted in the CRT, or over the new-flow rate guard (`guarded`: hashed
 * alone, not inserted, but a first packet's connection still counts towards TOTALCONN).
 */
static __always_inline void count_insert(struct dvipa_svc_stats *st, __u32 idx, __u32 len, int first, int inserted,
					 int guarded)
{
	if (guarded)
		st->crt_guarded++;
	else if (first)
		st->crt_new++;
	else
		st->recovered++;
	count_target(idx, len, first && (inserted || guarded));
}

/*
 * Where a service key's probe starts in its family's index (dvipa.h): a multiplicative hash
 * of the key's `words` 32-bit words as they lie in memory. src/tables/svc-index.ts places
 * the keys with the same function.
 */
static __always_inline __u32 svc_hash(const __u32 *w, int words)
{
	__u32 h = 0;

	for (int i = 0; i < words; i++) {
		h = (h ^ w[i]) * 0x9e3779b1;
		h ^= h >> 16;
	}
	return h;
}

/*
 * The service of a key of `words` 32-bit words in the index `outer` holds (svc_index or
 * svc_index6), else NULL. A slot is the key's words, then its struct dvipa_svc (struct
 * dvipa_svc_slot, dvipa_svc6_slot); a key's last word holds its protocol, never 0, so a
 * slot whose last key word is 0 is empty.
 */
static __always_inline struct dvipa_svc *svc_probe(void *outer, const __u32 *key, int words)
{
	__u32 zero = 0, start, at;
	void *table = bpf_map_lookup_elem(outer, &zero);

	if (!table)
		return NULL;
	start = svc_hash(key, words);
	for (int i = 0; i < DVIPA_SVC_PROBES; i++) {
		__u32 *slot;
		int w;

		at = (start + i) & (DVIPA_SVC_SLOTS - 1);
		slot = bpf_map_lookup_elem(table, &at);
		if (!slot || !slot[words - 1])
			return NULL;
		for (w = 0; w < words && slot[w] == key[w]; w++)
			;
		if (w == words)
			return (struct dvipa_svc *)(slot + words);
	}
	return NULL;
}

/*
 * The service of a DVIPA:port:proto key (`port` points into it), else of the DVIPA's every
 * port (port 0) if `any_port` says it may have one; NULL if neither is distributed. Either
 * family's index and key.
 */
static __always_inline struct dvipa_svc *find_service(void *index, void *key, int words, __be16 *port, int any_port)
{
	struct dvipa_svc *svc = svc_probe(index, key, words);

	if (svc || !any_port)
		return svc;
	*port = 0;
	return svc_probe(index, key, words);
}

/* The service's counters, with this packet of `bytes` (L2 included) counted; NULL if missing. */
static __always_inline struct dvipa_svc_stats *count_service(const struct dvipa_svc *svc, __u32 bytes)
{
	struct dvipa_svc_stats *st = bpf_map_lookup_elem(&svc_stats, &svc->id);

	if (st) {
		st->packets++;
		st->bytes += bytes;
	}
	return st;
}

/*
 * A new flow's Maglev slot: the index of its target. Looked up first on a CRT miss: the
 * load of a random slot of a 256 KiB table then overlaps the work before its use.
 */
static __always_inline const __u32 *maglev_slot(const struct dvipa_svc *svc, __u32 hash)
{
	__u32 slot = hash % DVIPA_MAGLEV_SIZE;
	void *table = bpf_map_lookup_elem(&maglev, &svc->id);

	return table ? bpf_map_lookup_elem(table, &slot) : NULL;
}

/*
 * A new flow's target: the client's affinity `*idx` (0: none) if its index still holds a
 * live target of this service, else the flow's Maglev slot's; `*idx` is set to the index
 * chosen. NULL: the slot has no live target.
 */
static __always_inline const struct dvipa_target *pick_target(const struct dvipa_svc *svc, const __u32 *slot_idx,
							       __u32 *idx)
{
	const struct dvipa_target *t = target_at(*idx);

	/* An affinity to an index freed since (its target left) is no affinity. */
	if (t && t->svc_id == svc->id && target_live(t))
		return t;
	*idx = slot_idx ? *slot_idx : 0;
	t = target_at(*idx);
	return t && target_live(t) ? t : NULL;
}

#include "distributor6.h"

static __always_inline int dvipa_distribute(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct cursor c = { data, data_end, ctx };
	struct dvipa_svc_key sk = {};
	struct dvipa_flow flow = {};
	struct dvipa_crt_entry *entry, fresh = {}, found;
	struct dvipa_crt_set *set = NULL;
	struct dvipa_svc_stats *st;
	struct dvipa_config *cfg;
	struct dvipa_svc *svc;
	struct iphdr *iph;
	const struct dvipa_target *t;
	__be32 target;
	__be16 proto;
	int l2len, first = 0, syn = 0, over, lookup, inserted = 0, guarded, rc;
	__u32 zero = 0, idx, len;
	__u64 now;

	cfg = bpf_map_lookup_elem(&node_config, &zero);
	if (!cfg || !cfg->enabled)
		return verdict(XDP_PASS, DVIPA_R_PASS_DISABLED);

	l2len = parse_eth(&c, &proto);
	if (l2len < 0)
		return verdict(XDP_PASS, DVIPA_R_PASS_MALFORMED);
	if (cfg->ext_ifindex == ctx->ingress_ifindex && !for_us(data, cfg->ext_mac))
		return verdict(XDP_PASS, DVIPA_R_PASS_OTHER_HOST);
	if (proto == bpf_htons(ETH_P_ARP)) {
		__be32 asked = arp_request_target(&c);

		if (asked && fenced(asked, 1))
			return verdict(XDP_DROP, DVIPA_R_DROP_FENCED_ARP);
		return verdict(XDP_PASS, DVIPA_R_PASS_NOT_IPV4);
	}
	if (proto != bpf_htons(ETH_P_IP)) {
		if (proto == bpf_htons(ETH_P_IPV6))
			return dvipa_distribute6(ctx, cfg, &c, l2len);
		return verdict(XDP_PASS, DVIPA_R_PASS_NOT_IPV4);
	}
	iph = parse_ipv4(&c);
	if (!iph)
		return verdict(XDP_PASS, DVIPA_R_PASS_MALFORMED);
	/*
	 * Anything to a DVIPA past its deadline is dropped. A service's packets check that after
	 * the service lookup (fenced_service), every other packet on its way out (not_service,
	 * fragment, truncated_l4): the verdicts are the same, and a service's entry can tell that
	 * its DVIPA has no deadline to look up.
	 */
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		goto not_service;
	if (ipv4_is_fragment(iph))
		goto fragment;

	if (iph->protocol == IPPROTO_TCP) {
		struct tcphdr *th = c.pos;

		if ((void *)(th + 1) > data_end)
			goto truncated_l4;
		flow.sport = th->source;
		flow.dport = th->dest;
		first = syn = th->syn && !th->ack;
	} else {
		struct udphdr *uh = c.pos;

		if ((void *)(uh + 1) > data_end)
			goto truncated_l4;
		flow.sport = uh->source;
		flow.dport = uh->dest;
		first = 1;
	}

	sk.vip = iph->daddr;
	sk.port = flow.dport;
	sk.proto = iph->protocol;
	svc = find_service(&svc_index, &sk, sizeof(sk) / 4, &sk.port, cfg->any_port & any_port_bit(iph->daddr));
	if (!svc)
		goto not_service;
	if (fenced_service(svc, &fence, &iph->daddr))
		return verdict(XDP_DROP, DVIPA_R_DROP_FENCED);
	/* The IP length, checked against the whole frame: the first buffer of a jumbo frame is not all of it. */
	len = l2len + ntohs_bounded(iph->tot_len);
	st = count_service(svc, len);
	if (!st)
		return verdict(XDP_DROP, DVIPA_R_DROP_NO_TARGET);

	flow.saddr = iph->saddr;
	flow.daddr = iph->daddr;
	flow.proto = iph->protocol;
	over = syn_over_budget(cfg, syn);
	/*
	 * A SYN (to IPv4 targets) skips the lookup: it is a new connection, or the retransmission
	 * of one whose entry the insert below then finds (EEXIST). The insert walks the bucket
	 * anyway, and a lookup that misses costs a helper call and the calls inside it, each
	 * returning through the CPU's mitigation thunk (SRSO "Safe RET" on AMD).
	 */
	lookup = !over && !(syn && !(svc->flags & DVIPA_SVC_V6_TARGETS));
	/*
	 * A connection its target confirmed (`crt_est`, which packets cannot evict) first, else
	 * an unconfirmed flow in the cache. A `first` packet skips `crt_est`: targets confirm TCP
	 * connections that finished their handshake, so a SYN is a new connection or a
	 * retransmission of an unconfirmed one, and UDP (every packet `first`: no handshake) is
	 * never confirmed.
	 */
	entry = lookup && !first ? bpf_map_lookup_elem(&crt_est, &flow) : NULL;
	if (!entry) {
		set = over ? NULL : crt_set(cfg, &flow);
		if (lookup && set && crt_find(set, &flow, &found))
			entry = &found;
	}
again:
	if (entry) {
		st->crt_hit++;
		target = entry->target;
		idx = entry->target_idx;
		t = target_at(idx);
		if (svc->affinity_s)
			touch_affinity(svc, iph->saddr, target, idx);
		count_target(idx, len, 0);
	} else {
		const __u32 *slot_idx = maglev_slot(svc, dvipa_flow_hash(&flow));

		if ((svc->flags & DVIPA_SVC_V6_TARGETS) && !over) {
			int established = established_4in6(ctx, cfg, svc, st, &flow, first, l2len, iph, len);

			if (established >= 0)
				return established;
		}
		st->crt_miss++;
		now = bpf_ktime_get_coarse_ns();
		guarded = over || new_flow_guarded(cfg, now);
		idx = first && svc->affinity_s ? affine_target(svc, iph->saddr) : 0;
		t = pick_target(svc, slot_idx, &idx);
		if (!t)
			return drop(st, DVIPA_R_DROP_NO_TARGET);
		if (t->family == AF_INET6)
			return new_4in6(ctx, cfg, svc, st, &flow, t, idx, first, guarded, now, l2len, iph, len);
		target = t->addr;
		/*
		 * A recovered packet's target is a guess: it must not become the client's affinity.
		 * Over the rate guard, no LRU write either: a flood must not age out affinities.
		 */
		if (svc->affinity_s && first && !guarded)
			touch_affinity(svc, iph->saddr, target, idx);
		/* Guarded: hashed alone, the connection stays where Maglev puts it until its target confirms it. */
		if (!guarded) {
			fresh.target = target;
			fresh.target_idx = idx;
			fresh.svc_id = svc->id;
			fresh.origin = first ? DVIPA_CRT_FIRST : DVIPA_CRT_RECOVERED;
			/* Another CPU may have raced us to it: its entry is as good as ours, and it counts it. */
			rc = set ? crt_insert(set, &flow, &fresh, now >> 30) : -1;
			inserted = rc > 0;
			/* A retransmitted SYN keeps the target its first one got: a hit, not the miss counted above. */
			if (!rc && syn) {
				found = fresh;
				entry = &found;
				st->crt_miss--;
				goto again;
			}
			/* Its slot busy: hashed alone, as over the guard. */
			guarded = rc < 0;
		}
		count_insert(st, idx, len, first, inserted, guarded);
	}
	/* The routing node among its own targets: the DVIPA is a local address here, so its
	 * stack serves the flow, as z/OS's distributing stack does when it is a target. An IPIP
	 * packet to our own address would find no route. The CRT entry above keeps it here. */
	if (target == cfg->cluster_addr)
		return verdict(XDP_PASS, DVIPA_R_PASS_LOCAL_TARGET);
	return encap_forward(ctx, cfg, st, target, t, l2len, iph);

not_service:
	return not_served(&fence, &routed, &iph->daddr, XDP_PASS, DVIPA_R_PASS_NOT_SERVICE);
truncated_l4:
	return not_served(&fence, &routed, &iph->daddr, XDP_DROP, DVIPA_R_DROP_MALFORMED_L4);
fragment:
	return not_served(&fence, &routed, &iph->daddr, XDP_DROP, DVIPA_R_DROP_FRAGMENT);
}

#endif
