/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The maps every XDP program of a node shares, whatever its role: the node's configuration
 * and the per-reason counters, with verdict(), the one way a program returns its action and
 * counts why. Maps are pinned by name, so all of a node's programs (distributor, decap)
 * share one instance under the pin root (/sys/fs/bpf/dvipa by default); the pins outlive the
 * agent, so forwarding continues while the control plane restarts.
 *
 * Each role's maps have their own header (maps_router.h, maps_target.h): an object declares
 * only what its programs use, so loading one never meets another role's map of a size it
 * does not know (the CRT is sized by the agent).
 */
#ifndef DVIPA_MAPS_NODE_H
#define DVIPA_MAPS_NODE_H

#include "dvipa.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dvipa_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DVIPA_R_COUNT);
	__type(key, enum dvipa_reason);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} reasons SEC(".maps");

static __always_inline void count_reason(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&reasons, &reason);

	if (c)
		*c += 1;
}

/* Counts why, and returns the action. */
static __always_inline int verdict(int action, __u32 reason)
{
	count_reason(reason);
	return action;
}

#endif
