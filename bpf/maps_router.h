/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The routing node's maps: services, their Maglev tables, the CRT and what forwarding needs. */
#ifndef DVIPA_MAPS_ROUTER_H
#define DVIPA_MAPS_ROUTER_H

#include "maps_node.h"

/*
 * DVIPA:port:proto -> service id: the control plane's record of the services. The
 * distributor reads them from `svc_index`, which user space builds from this map (dvipa.h).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_SERVICES);
	__type(key, struct dvipa_svc_key);
	__type(value, struct dvipa_svc);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

/* The services as the distributor looks them up: one index (dvipa.h), swapped whole. */
struct svc_index_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DVIPA_SVC_SLOTS);
	__type(key, __u32);
	/* By size: a struct reached only through the outer map's BTF would be a forward declaration. */
	__uint(value_size, sizeof(struct dvipa_svc_slot));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct svc_index_table);
} svc_index SEC(".maps");

/*
 * Addresses this node distributes (any port): decides what a fragment belongs to. The value
 * is the epoch under which this node owns the DVIPA (0: tables kept warm as a backup), so a
 * restarted agent knows what its pinned data plane was doing.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_DVIPAS);
	__type(key, __be32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} routed SEC(".maps");

/* DVIPA -> fencing deadline (see DVIPA_FENCE_EXPIRED in dvipa.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_DVIPAS);
	__type(key, __be32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fence SEC(".maps");

/*
 * The DPT as the data plane sees it: per service id, a Maglev table of target
 * indexes into `targets` (0 = no target). User space builds a complete new inner array and swaps
 * it into its slot with one update, so no packet ever sees half a table.
 */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DVIPA_MAGLEV_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, DVIPA_MAX_SERVICES);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct maglev_table);
} maglev SEC(".maps");

/*
 * The CRT, in two tables. `crt` (a set-associative cache, dvipa.h) holds what the data plane
 * inserts: flows not yet confirmed by their target (a SYN, a recovered packet); a flood of
 * SYNs takes the least recently used slots instead of failing. `crt_est` holds the
 * connections their target reported established (NEWCONN), written and removed only by the
 * agent: nothing a packet does can evict them. The data plane looks in `crt_est` first.
 * Mmapable: user space reads and writes slots with the same protocol as the data plane.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DVIPA_CRT_DEFAULT_ENTRIES / DVIPA_CRT_WAYS);
	__type(key, __u32);
	__type(value, struct dvipa_crt_set);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} crt SEC(".maps");

/* The secret placing flows in `crt`'s sets (dvipa.h): one entry, written by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dvipa_crt_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} crt_key SEC(".maps");

/*
 * Confirmed connections (see above). Full: counted by the agent, never evicting. Preallocated
 * (about 90 bytes an entry): over 100,000 connections a lookup cost 350 ns on kmalloc'd
 * elements, 200 on preallocated ones (docs/benchmarks.md, 2026-12-03, session 26).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_CRT_DEFAULT_ENTRIES);
	__type(key, struct dvipa_flow);
	__type(value, struct dvipa_crt_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} crt_est SEC(".maps");

/* The new-flow rate guard's window, per CPU (dvipa_config.max_new_flows). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dvipa_flow_rate);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_rate SEC(".maps");

/* TIMEDAFFINITY: (service, client) -> its target and last packet. LRU: old clients age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DVIPA_AFFINITY_ENTRIES);
	__type(key, struct dvipa_affinity_key);
	__type(value, struct dvipa_affinity);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} affinity SEC(".maps");

/* Target index -> address and next hop, written by the control plane (struct dvipa_target). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DVIPA_MAX_TARGETS);
	__type(key, __u32);
	__type(value, struct dvipa_target);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} targets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DVIPA_MAX_TARGETS);
	__type(key, __u32);
	__type(value, struct dvipa_target_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} target_stats SEC(".maps");

/* Interfaces the distributor may redirect to (ifindex -> ifindex). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, DVIPA_MAX_EGRESS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DVIPA_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct dvipa_svc_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_stats SEC(".maps");

/* VIPAROUTE: a target's packets are encapsulated to this address instead of its cluster address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_VIA_ROUTES);
	__type(key, __be32);
	__type(value, __be32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} via_routes SEC(".maps");

/*
 * IPv6, beside the IPv4 maps above and with the same meaning: their keys hold 16-byte
 * addresses (dvipa.h). Service ids, `maglev`, `targets` and the counters are shared.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_SERVICES);
	__type(key, struct dvipa_svc6_key);
	__type(value, struct dvipa_svc);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services6 SEC(".maps");

struct svc_index6_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DVIPA_SVC_SLOTS);
	__type(key, __u32);
	/* By size: a struct reached only through the outer map's BTF would be a forward declaration. */
	__uint(value_size, sizeof(struct dvipa_svc6_slot));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct svc_index6_table);
} svc_index6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_DVIPAS);
	__type(key, struct dvipa_in6);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} routed6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_DVIPAS);
	__type(key, struct dvipa_in6);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fence6 SEC(".maps");

/*
 * The IPv6 CRT, in two tables as the IPv4 one: `crt6` (LRU) the unconfirmed flows, `crt6_est`
 * the connections their target confirmed, written and removed by the agent only, so an IPv6
 * SYN flood cannot evict them either. Both also hold IPv4 connections to IPv6 targets (under
 * their IPv4-mapped 5-tuple). Sized by the agent like `crt` (by default smaller: both are
 * preallocated; `crt6_est` as `crt_est` is, see there).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DVIPA_CRT6_DEFAULT_ENTRIES);
	__type(key, struct dvipa_flow6);
	__type(value, struct dvipa_crt6_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} crt6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_CRT6_DEFAULT_ENTRIES);
	__type(key, struct dvipa_flow6);
	__type(value, struct dvipa_crt6_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} crt6_est SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, DVIPA_AFFINITY_ENTRIES);
	__type(key, struct dvipa_affinity6_key);
	__type(value, struct dvipa_affinity6);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} affinity6 SEC(".maps");

#endif
