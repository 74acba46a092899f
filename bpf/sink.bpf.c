// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A target of `dvipa bench traffic --router-only`: counts every frame it receives and drops
 * it, so the figure is what the routing node forwarded, not what a target's stack and
 * sockets could take. One object (and so one counter) per target.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink_count SEC(".maps");

/* IPv4 frames only: a neighbour's ARP or IPv6 chatter is no forwarded packet. */
SEC("xdp")
int xdp_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;
	__u64 *n;

	if ((void *)(eth + 1) > data_end || eth->h_proto != __builtin_bswap16(0x0800))
		return XDP_DROP;
	n = bpf_map_lookup_elem(&sink_count, &zero);
	if (n)
		*n += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
