// SPDX-License-Identifier: GPL-2.0
/*
 * How many entries maps hold, as the kernel counts them (per-CPU counters of every hash and
 * LRU map since Linux 6.6, evictions included): a BPF iterator over the maps that writes,
 * per map, its id and its count. A million-entry CRT is counted without reading an entry
 * (dataplane/map-count.ts), where a walk costs the better part of a CPU second.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

extern s64 bpf_map_sum_elem_count(const struct bpf_map *map) __ksym;

/* One record per map: what mapcount's reader decodes. */
struct map_count {
	__u32 id;
	__u32 pad;
	__s64 entries;
};

SEC("iter/bpf_map")
int count_entries(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;
	struct map_count out = {};

	if (!map)
		return 0;
	out.id = map->id;
	out.entries = bpf_map_sum_elem_count(map);
	bpf_seq_write(ctx->meta->seq, &out, sizeof(out));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
