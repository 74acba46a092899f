// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The live traffic generator of `dvipa bench traffic --generator live`: run through
 * BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES, it turns one crafted UDP frame into a
 * stream of real frames, cycling over `flows` flows: GEN_PORTS source ports per source
 * address, then the next address (a /24 further), so the router sees many flows. Each frame
 * then (gen_ctl.action):
 *  - GEN_TX: is sent out of the interface the run is on (the lab client's): the whole path;
 *  - GEN_PASS: enters that interface's stack (the routing node's external interface), as a
 *    frame its driver received and passed on: kernel forwarding, nftables, IPVS;
 *  - GEN_ROUTE: goes to the program in gen_route (the routing node's distributor, tail call),
 *    as a frame its driver gave to its XDP program.
 * The last two measure the routing node alone, on one CPU, without a veth in front of it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define GEN_HDR_LEN 42 /* Ethernet + IPv4 without options + UDP */
#define GEN_PORTS 50000

enum gen_action {
	GEN_TX = 0,
	GEN_PASS = 1,
	GEN_ROUTE = 2,
};

struct gen_ctl {
	__u32 flows;     /* distinct source ports, from base_port up */
	__u16 base_port;
	__u16 action;    /* enum gen_action */
	__u64 next_flow; /* the next frame's flow, 0 to flows - 1 */
	/*
	 * The headers, written again into every frame: live frames come back from the page
	 * pool as whoever received them left them (the router's XDP rewrites them in place).
	 */
	__u8 hdr[GEN_HDR_LEN];
	__u8 pad2[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_ctl);
} gen_ctl SEC(".maps");

/* GEN_ROUTE: the routing node's XDP program, as its ingress would run it. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} gen_route SEC(".maps");

/* Frags-aware, as the distributor is: a tail call needs both alike. */
SEC("xdp.frags")
int gen_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct udphdr *udp = (void *)(iph + 1);
	struct gen_ctl *ctl;
	__u32 zero = 0, flow;

	if (data + GEN_HDR_LEN > data_end)
		return XDP_ABORTED;
	ctl = bpf_map_lookup_elem(&gen_ctl, &zero);
	if (!ctl || !ctl->flows)
		return XDP_ABORTED;
	__builtin_memcpy(data, ctl->hdr, GEN_HDR_LEN);
	/* The template is ours (no IP options): anything else is a caller's bug. */
	if (iph->ihl != 5 || iph->protocol != IPPROTO_UDP)
		return XDP_ABORTED;
	/*
	 * The next flow, by a compare rather than a frame count % flows: no division by a variable and no
	 * atomic add per frame. The generator's cost is in every way's figure alike and narrows
	 * their ratios. One test run at a time drives it; two at once would at worst send a flow
	 * twice in a row.
	 */
	flow = ctl->next_flow;
	if (flow >= ctl->flows)
		flow = 0;
	ctl->next_flow = flow + 1;
	udp->source = bpf_htons(ctl->base_port + (__u16)(flow % GEN_PORTS));
	if (flow >= GEN_PORTS) {
		__u32 step = (flow / GEN_PORTS) << 8;

		/*
		 * Incremental update of the header checksum for the new source (RFC 1624), on the
		 * 16-bit words as they lie in the header (the sum does not depend on byte order).
		 */
		__u32 old = iph->saddr, new = bpf_htonl(bpf_ntohl(old) + step);
		__u32 sum = (__u16)~iph->check;

		sum += (__u16)~(old >> 16) + (__u16)~(old & 0xffff) + (new >> 16) + (new & 0xffff);
		sum = (sum & 0xffff) + (sum >> 16);
		sum = (sum & 0xffff) + (sum >> 16);
		iph->check = (__u16)~sum;
		iph->saddr = new;
	}
	/* IPv4 UDP may go without a checksum: nothing to fix after the port change. */
	udp->check = 0;
	switch (ctl->action) {
	case GEN_PASS:
		return XDP_PASS;
	case GEN_ROUTE:
		bpf_tail_call(ctx, &gen_route, 0);
		return XDP_ABORTED; /* no program to route with */
	default:
		return XDP_TX;
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
