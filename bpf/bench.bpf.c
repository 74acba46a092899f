// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Benchmark programs for `dvipa bench fastpath`, run with BPF_PROG_TEST_RUN and a repeat
 * count: the XDP_TX baseline, and dvipa's distributor inside the harness of
 * bench_harness.h (which bench_katran.bpf.c puts around Katran's balancer).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "distributor.h"
#include "bench_harness.h"

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
	struct bench_frame f;
	int act = bench_enter(ctx, &f);

	if (act >= 0)
		return act;
	return bench_leave(ctx, &f, dvipa_distribute(ctx));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
