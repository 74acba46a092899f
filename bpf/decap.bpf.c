// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * XDP program for a target node's cluster interface. Packets the routing node
 * encapsulated to this node's cluster address, whose inner destination is a DVIPA this
 * node serves, lose their outer header and go up the stack to the application listening
 * on the DVIPA (bound on lo, not advertised). Replies leave directly for the client.
 * Such packets from anyone but a routing node of ours, or to a DVIPA:port not distributed
 * here, are dropped and counted. Everything else passes untouched.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "parse.h"
#include "maps_node.h"
#include "maps_target.h"

#define VLAN_ETH_HLEN ((int)(sizeof(struct ethhdr) + sizeof(struct vlan_hdr)))

static __always_inline void count_served(const struct dvipa_svc_key *key, __u32 len)
{
	struct dvipa_served_stats *st = bpf_map_lookup_elem(&served_stats, key);

	if (!st) {
		struct dvipa_served_stats fresh = {};

		/* Full (more ports than DVIPA_MAX_SERVED_PORTS): this one goes uncounted. */
		bpf_map_update_elem(&served_stats, key, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&served_stats, key);
		if (!st)
			return;
	}
	st->packets++;
	st->bytes += len;
}

/* xdp.frags: attaches to 9000-MTU interfaces; a jumbo frame's headers are in its first buffer. */
SEC("xdp.frags")
int xdp_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct cursor c = { data, data_end, ctx };
	struct dvipa_config *cfg;
	struct iphdr *outer, *inner;
	__u8 l2[VLAN_ETH_HLEN];
	__be16 proto;
	int l2len, outer_len;
	struct dvipa_svc_key served_key = {}, any_port = {};
	__u32 zero = 0, inner_len;

	cfg = bpf_map_lookup_elem(&node_config, &zero);
	if (!cfg || !cfg->enabled)
		return verdict(XDP_PASS, DVIPA_R_PASS_DISABLED);
	l2len = parse_eth(&c, &proto);
	if (l2len < 0 || proto != bpf_htons(ETH_P_IP))
		return verdict(XDP_PASS, l2len < 0 ? DVIPA_R_PASS_MALFORMED : DVIPA_R_PASS_NOT_IPV4);
	outer = parse_ipv4(&c);
	if (!outer)
		return verdict(XDP_PASS, DVIPA_R_PASS_MALFORMED);
	if (outer->protocol != IPPROTO_IPIP || ipv4_is_fragment(outer) ||
	    (outer->daddr != cfg->cluster_addr && !bpf_map_lookup_elem(&decap_addrs, &outer->daddr)))
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_NOT_OURS);
	inner = parse_ipv4(&c);
	if (!inner)
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_MALFORMED);
	if (!bpf_map_lookup_elem(&served, &inner->daddr))
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_NOT_OURS);
	if (!bpf_map_lookup_elem(&decap_routers, &outer->saddr))
		return verdict(XDP_DROP, DVIPA_R_DECAP_DROP_NOT_ROUTER);
	served_key.vip = inner->daddr;
	served_key.proto = inner->protocol;
	inner_len = ntohs_bounded(inner->tot_len);
	if ((inner->protocol == IPPROTO_TCP || inner->protocol == IPPROTO_UDP) && !ipv4_is_fragment(inner)) {
		/* Source and destination ports lead both headers. */
		__be16 *ports = (void *)inner + inner->ihl * 4;

		if ((void *)(ports + 2) <= data_end)
			served_key.port = ports[1];
	}
	/*
	 * The port itself, else every port of the DVIPA (port 0). A routing node tunnels
	 * neither fragments nor anything but TCP and UDP: those find no port and are dropped.
	 */
	any_port.vip = served_key.vip;
	any_port.proto = served_key.proto;
	if (!served_key.port || (!bpf_map_lookup_elem(&decap_services, &served_key) &&
				 !bpf_map_lookup_elem(&decap_services, &any_port)))
		return verdict(XDP_DROP, DVIPA_R_DECAP_DROP_NOT_SERVICE);

	/* Keep L2 (and its VLAN tag) in front of the inner header. */
	outer_len = outer->ihl * 4;
	if (l2len == sizeof(struct ethhdr))
		__builtin_memcpy(l2, data, sizeof(struct ethhdr));
	else
		__builtin_memcpy(l2, data, VLAN_ETH_HLEN);
	if (bpf_xdp_adjust_head(ctx, outer_len))
		return verdict(XDP_PASS, DVIPA_R_DECAP_PASS_MALFORMED);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + VLAN_ETH_HLEN > data_end)
		return XDP_DROP; /* cannot happen: an inner IPv4 header follows */
	if (l2len == sizeof(struct ethhdr))
		__builtin_memcpy(data, l2, sizeof(struct ethhdr));
	else
		__builtin_memcpy(data, l2, VLAN_ETH_HLEN);
	count_served(&served_key, inner_len);
	return verdict(XDP_PASS, DVIPA_R_DECAP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
