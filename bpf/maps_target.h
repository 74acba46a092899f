/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A target's maps: the DVIPAs it serves, what it received for them, its socket events. */
#ifndef DVIPA_MAPS_TARGET_H
#define DVIPA_MAPS_TARGET_H

#include "dvipa.h"

/* Target side: outer destinations decap accepts besides the cluster address (VIPAROUTE). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_VIA_ROUTES);
	__type(key, __be32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_addrs SEC(".maps");

/* Target side: DVIPAs this node serves (bound on lo). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_DVIPAS);
	__type(key, __be32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} served SEC(".maps");

/*
 * Target side: what it decapsulates. Only from these outer sources (its routing nodes'
 * cluster addresses) and only for these DVIPA:port/protocol (port 0: every port of it);
 * the agent keeps both. Anything else is dropped: nobody else can tunnel packets to a
 * port of the DVIPA (:22 included) past the routing node's distribution.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_DVIPAS);
	__type(key, __be32);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_routers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DVIPA_MAX_SERVED_PORTS);
	__type(key, struct dvipa_svc_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} decap_services SEC(".maps");

/* Target side: received through routing nodes, per DVIPA:port (struct dvipa_served_stats). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, DVIPA_MAX_SERVED_PORTS);
	__type(key, struct dvipa_svc_key);
	__type(value, struct dvipa_served_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} served_stats SEC(".maps");

/* Target side: socket events for the agent (struct dvipa_sock_event). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_events SEC(".maps");

#endif
