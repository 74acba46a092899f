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

/* One record per map: what dataplane/map-count.ts decodes (checked against this BTF). */
struct dvipa_map_count {
	__u32 id;
	__u32 pad;
	__u64 entries;
};
/* Puts the record layout in this object's BTF, where the layout test checks it. */
const struct dvipa_map_count *btf_map_count __attribute__((unused));

SEC("iter/bpf_map")
int count_entries(struct bpf_iter__bpf_map *ctx)
{
	struct bpf_map *map = ctx->map;
	struct dvipa_map_count out = {};
	s64 n;

	if (!map)
		return 0;
	out.id = map->id;
	n = bpf_map_sum_elem_count(map);
	/* A sum of per-CPU counters read while they move: never below none. */
	out.entries = n < 0 ? 0 : n;
	bpf_seq_write(ctx->meta->seq, &out, sizeof(out));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
