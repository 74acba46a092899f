// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * XDP program for a target node's cluster interface. Packets the routing node
 * encapsulated to this node's cluster address (IPv4 or IPv6, either inner family), whose inner destination is a DVIPA this
 * node serves, lose their outer header and go up the stack to the application listening
 * on the DVIPA (bound on lo, not advertised). Replies leave directly for the client.
 * Such packets from anyone but a routing node of ours, or to a DVIPA:port not distributed
 * here, are dropped and counted. Everything else passes untouched.
 */
/* UAPI structs only: no CO-RE relocations, as in distributor.bpf.c. */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"
#include "maps_node.h"
#include "maps_target.h"

#define VLAN_ETH_HLEN ((int)(sizeof(struct ethhdr) + sizeof(struct vlan_hdr)))

/* Into served_stats or served_stats6 (the key of its family). */
static __always_inline void count_served(void *stats, const void *key, __u32 len)
{
	struct dvipa_served_stats *st = bpf_map_lookup_elem(stats, key);

	if (!st) {
		struct dvipa_served_stats fresh = {};

		/* Full (more ports than DVIPA_MAX_SERVED_PORTS): this one goes uncounted. */
		bpf_map_update_elem(stats, key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(stats, key);
		if (!st)
			return;
	}
	st->packets++;
	st->bytes += len;
}

/* The destination port of a TCP/UDP header at `l4`, 0 if none can be had. */
static __always_inline __be16 dest_port(__u8 proto, void *l4, void *data_end)
{
	/* Source and destination ports lead both headers. */
	__be16 *ports = l4;

	if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || (void *)(ports + 2) > data_end)
		return 0;
	return ports[1];
}

/*
 * The inner IPv4 packet at the cursor: what it may be, or a verdict. A routing node
 * tunnels neither fragments nor anything but TCP and UDP: those find no port and are
 * dropped. `router` says whether the outer source is one of our routing nodes. Returns
 * -1 for a packet to decapsulate, else the verdict.
 */
static __always_inline int check_inner4(struct cursor *c, int router)
{
	struct dvipa_svc_key key = {}, any_port = {};
	struct iphdr *inner = parse_ipv4(c);

	if (!inner)
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_MALFORMED);
	if (!bpf_map_lookup_elem(&served, &inner->daddr))
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_NOT_OURS);
	if (!router)
		return verdict(XDP_DROP, DVIPA_R_DECAP_DROP_NOT_ROUTER);
	key.vip = inner->daddr;
	key.proto = inner->protocol;
	if (!ipv4_is_fragment(inner))
		key.port = dest_port(inner->protocol, c->pos, c->end);
	/* The port itself, else every port of the DVIPA (port 0). */
	any_port.vip = key.vip;
	any_port.proto = key.proto;
	if (!key.port ||
	    (!bpf_map_lookup_elem(&decap_services, &key) && !bpf_map_lookup_elem(&decap_services, &any_port)))
		return verdict(XDP_DROP, DVIPA_R_DECAP_DROP_NOT_SERVICE);
	count_served(&served_stats, &key, ntohs_bounded(inner->tot_len));
	return -1;
}

/* The inner IPv6 packet at the cursor, as check_inner4 (extension headers walked, fragments dropped). */
static __always_inline int check_inner6(struct cursor *c, int router)
{
	struct dvipa_svc6_key key = {}, any_port = {};
	struct ipv6hdr *inner = parse_ipv6(c);
	__u8 nexthdr;

	if (!inner)
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_MALFORMED);
	__builtin_memcpy(&key.vip, &inner->daddr, sizeof(key.vip));
	if (!bpf_map_lookup_elem(&served6, &key.vip))
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_NOT_OURS);
	if (!router)
		return verdict(XDP_DROP, DVIPA_R_DECAP_DROP_NOT_ROUTER);
	nexthdr = inner->nexthdr;
	if (ipv6_skip_ext(c, &nexthdr) == IPV6_L4_FOUND)
		key.port = dest_port(nexthdr, c->pos, c->end);
	key.proto = nexthdr;
	any_port.vip = key.vip;
	any_port.proto = key.proto;
	if (!key.port ||
	    (!bpf_map_lookup_elem(&decap_services6, &key) && !bpf_map_lookup_elem(&decap_services6, &any_port)))
		return verdict(XDP_DROP, DVIPA_R_DECAP_DROP_NOT_SERVICE);
	count_served(&served_stats6, &key, sizeof(*inner) + ntohs_bounded(inner->payload_len));
	return -1;
}

/*
 * Tunnelled packets in all four forms (IPv4 or IPv6 in IPv4 or IPv6): the outer header
 * must be to one of our cluster addresses (or a VIPAROUTE address), from a routing node of
 * ours (decap_routers for IPv4 outer sources, decap_routers6 for IPv6 ones), the inner one
 * to a DVIPA:port distributed here in the inner family's maps.
 */
/* xdp.frags: attaches to 9000-MTU interfaces; a jumbo frame's headers are in its first buffer. */
SEC("xdp.frags")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct cursor c = { data, data_end, ctx };
	struct dvipa_config *cfg;
	__u8 l2[VLAN_ETH_HLEN];
	__be16 proto, inner_proto;
	int l2len, outer_len, router, rc;
	__u8 tunnelled;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&node_config, &zero);
	if (!cfg || !cfg->enabled)
		return verdict(XDP_PASS, DVIPA_R_PASS_DISABLED);
	l2len = parse_eth(&c, &proto);
	if (l2len < 0)
		return verdict(XDP_PASS, DVIPA_R_PASS_MALFORMED);
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *outer = parse_ipv4(&c);

		if (!outer)
			return verdict(XDP_PASS, DVIPA_R_PASS_MALFORMED);
		tunnelled = outer->protocol;
		if ((tunnelled != IPPROTO_IPIP && tunnelled != IPPROTO_IPV6) || ipv4_is_fragment(outer) ||
		    (outer->daddr != cfg->cluster_addr && !bpf_map_lookup_elem(&decap_addrs, &outer->daddr)))
			return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_NOT_OURS);
		router = bpf_map_lookup_elem(&decap_routers, &outer->saddr) != NULL;
		outer_len = outer->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *outer = parse_ipv6(&c);
		struct dvipa_in6 dst;

		if (!outer)
			return verdict(XDP_PASS, DVIPA_R_PASS_MALFORMED);
		/* Routing nodes add no extension headers: anything else is not their tunnel. */
		tunnelled = outer->nexthdr;
		__builtin_memcpy(&dst, &outer->daddr, sizeof(dst));
		if ((tunnelled != IPPROTO_IPIP && tunnelled != IPPROTO_IPV6) ||
		    (!in6_eq(&dst, &cfg->cluster_addr6) && !bpf_map_lookup_elem(&decap_addrs6, &dst)))
			return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_NOT_OURS);
		router = bpf_map_lookup_elem(&decap_routers6, &outer->saddr) != NULL;
		outer_len = sizeof(*outer);
	} else {
		return verdict(XDP_PASS, DVIPA_R_PASS_NOT_IPV4);
	}
	if (tunnelled == IPPROTO_IPIP) {
		rc = check_inner4(&c, router);
		inner_proto = bpf_htons(ETH_P_IP);
	} else {
		rc = check_inner6(&c, router);
		inner_proto = bpf_htons(ETH_P_IPV6);
	}
	if (rc >= 0)
		return rc;

	/* Keep L2 (and its VLAN tag) in front of the inner header, with the inner family's type. */
	if (l2len == sizeof(struct ethhdr)) {
		__builtin_memcpy(l2, data, sizeof(struct ethhdr));
		((struct ethhdr *)l2)->h_proto = inner_proto;
	} else {
		__builtin_memcpy(l2, data, VLAN_ETH_HLEN);
		((struct vlan_hdr *)(l2 + sizeof(struct ethhdr)))->h_vlan_encapsulated_proto = inner_proto;
	}
	if (bpf_xdp_adjust_head(ctx, outer_len))
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_MALFORMED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + VLAN_ETH_HLEN > data_end)
		return XDP_DROP; /* cannot happen: an inner IP header follows */
	if (l2len == sizeof(struct ethhdr))
		__builtin_memcpy(data, l2, sizeof(struct ethhdr));
	else
		__builtin_memcpy(data, l2, VLAN_ETH_HLEN);
	return verdict(XDP_PASS, DVIPA_R_DECAP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
