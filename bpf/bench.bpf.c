// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark programs for `dvipa bench fastpath`, run with BPF_PROG_TEST_RUN and a repeat
 * count. The kernel does not restore the packet between repetitions, so the harness
 * undoes what the distributor did (encapsulation) after each run and, for the new
 * connection paths, gives each run a fresh source port; otherwise every repetition
 * after the first would measure a different path.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "distributor.h"

#define SAVED_L2 ((int)(sizeof(struct ethhdr) + sizeof(struct vlan_hdr)))

struct bench_ctl {
	__u32 mode;      /* enum bench_mode */
	__u32 saddr_off; /* offset of the IPv4 source address in the frame */
	__u32 sport_off; /* offset of the TCP/UDP source port in the frame */
	__u32 seq;       /* flow counter for BENCH_NEW_FLOW */
};

/* New flows come from 198.18.0.0/15 (benchmark addresses), 65536 ports per address. */
#define BENCH_SADDR_BASE 0xC6120000
#define BENCH_SADDR_MASK 0x1FFFF

enum bench_mode {
	BENCH_HARNESS_ONLY = 0, /* the harness alone: its cost, to read the others against */
	BENCH_SAME_FLOW = 1,    /* the frame as given, every run */
	BENCH_NEW_FLOW = 2,     /* a new source port every run */
};

/* Per CPU, so test runs on every CPU at once each count their own flows. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_ctl);
} bench_ctl SEC(".maps");

/* The baseline: reflect the frame with swapped MACs, as `xdp-bench tx` does. */
SEC("xdp")
int bench_xdp_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];

	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return XDP_TX;
}

SEC("xdp")
int bench_distributor(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 saved[SAVED_L2];
	struct bench_ctl *ctl;
	__u32 zero = 0, off;
	int len = data_end - data, grown, act;

	ctl = bpf_map_lookup_elem(&bench_ctl, &zero);
	if (!ctl || data + SAVED_L2 > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(saved, data, SAVED_L2);
	if (ctl->mode == BENCH_HARNESS_ONLY)
		return XDP_PASS;
	if (ctl->mode == BENCH_NEW_FLOW) {
		__u32 seq = ctl->seq++;

		off = ctl->saddr_off;
		if (off > 128 || data + off + sizeof(__be32) > data_end)
			return XDP_ABORTED;
		*(__be32 *)(data + off) = bpf_htonl(BENCH_SADDR_BASE | ((seq >> 16) & BENCH_SADDR_MASK));
		off = ctl->sport_off;
		if (off > 128 || data + off + sizeof(__be16) > data_end)
			return XDP_ABORTED;
		*(__be16 *)(data + off) = bpf_htons((__u16)seq);
	}

	act = dvipa_distribute(ctx);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	grown = (int)(data_end - data) - len;
	if (grown > 0) {
		if (bpf_xdp_adjust_head(ctx, grown))
			return XDP_ABORTED;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + SAVED_L2 > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data, saved, SAVED_L2);
	}
	return act;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
