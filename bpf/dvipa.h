/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures shared by the BPF programs and user space. The TypeScript codecs in
 * src/dataplane/structs.ts mirror every struct and enum here; test/layout.test.ts
 * compares them with the BTF of the compiled objects, so a change here that is not
 * made there fails the tests instead of corrupting maps.
 *
 * Addresses and ports are kept in network byte order, exactly as on the wire, so the
 * fast path never swaps bytes to build a key.
 */
#ifndef DVIPA_H
#define DVIPA_H

/* Maglev lookup table size: prime, so every skip value walks the whole table. */
#define DVIPA_MAGLEV_SIZE 65537
#define DVIPA_MAX_SERVICES 1024
#define DVIPA_MAX_DVIPAS 1024
#define DVIPA_MAX_EGRESS 64
#define DVIPA_MAX_SERVED_PORTS 4096
/* VIPAROUTE: targets reached at another address, and the addresses a target accepts so. */
#define DVIPA_MAX_VIA_ROUTES 256
/* Default; user space may resize before load (crt_max_entries). */
#define DVIPA_CRT_DEFAULT_ENTRIES (1 << 20)
/* The IPv6 CRT's default: preallocated like the IPv4 one, so smaller until IPv6 is the bulk. */
#define DVIPA_CRT6_DEFAULT_ENTRIES (1 << 18)

/*
 * An IPv6 address as on the wire. Where one field holds an address of either family (a
 * target in an IPv6 CRT entry, say), IPv4 is written IPv4-mapped (::ffff:a.b.c.d).
 *
 * IPv6 has maps of its own beside the IPv4 ones (services6, crt6, affinity6, routed6,
 * fence6; served6, decap_routers6, decap_services6, decap_addrs6, served_stats6), keyed by
 * the structs below: the IPv4 fast path keeps its 4-byte keys and its speed. Service ids,
 * Maglev tables, `targets` and the counters are shared by both families.
 */
struct dvipa_in6 {
	__be32 w[4];
};

/* A distributed service: DVIPA, port and protocol. port 0 = every port of the DVIPA. */
struct dvipa_svc_key {
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* The IPv6 service key (map services6; decap_services6, served_stats6 on targets). */
struct dvipa_svc6_key {
	struct dvipa_in6 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/*
 * Target side, per DVIPA:port (map `served_stats`, key dvipa_svc_key; port 0 for what has
 * none, fragments included): what this target received through the routing node.
 */
struct dvipa_served_stats {
	__u64 packets;
	__u64 bytes;
};

struct dvipa_svc {
	__u32 id;          /* index into maglev and svc_stats */
	__u32 affinity_s;  /* TIMEDAFFINITY: a client's new connections follow its last target for this long; 0 = off */
	__u32 flags;       /* DVIPA_SVC_* */
};

/*
 * What the distributor looks services up in (maps svc_index, svc_index6): a family's
 * services in an array of DVIPA_SVC_SLOTS slots, each at most DVIPA_SVC_PROBES - 1 slots
 * after the one its key's hash names (linear probing; an empty slot, all zeros, ends a
 * probe). The verifier inlines an array's lookup, where a hash map's is a call that hashes
 * the key, and every packet pays this lookup, forwarded or not. User space keeps the
 * services in `services`/`services6`, builds the whole array from them
 * (src/tables/svc-index.ts) and swaps it in with one update: a packet sees the old index or
 * the new one. 1024 services fill an eighth of the slots, so probes are short.
 */
#define DVIPA_SVC_SLOTS 8192
#define DVIPA_SVC_PROBES 16

struct dvipa_svc_slot {
	struct dvipa_svc_key key;
	struct dvipa_svc svc;
};

struct dvipa_svc6_slot {
	struct dvipa_svc6_key key;
	struct dvipa_svc svc;
};

/*
 * Some targets of the service are IPv6. An IPv4 flow to one is IPv4-in-IPv6, and its CRT
 * entry, which needs room for an IPv6 target, is in crt6 under the IPv4-mapped 5-tuple:
 * only IPv4 services with this flag look there when `crt` has no entry.
 */
#define DVIPA_SVC_V6_TARGETS 1
/*
 * The DVIPA had no fencing deadline (no entry in `fence`/`fence6`) when the control plane
 * wrote this service, and will get one only after the flag is cleared: the service's packets
 * skip the fence lookup, a hash lookup on every forwarded packet of a node without a coupling
 * facility. Without the flag they look, as everything else to the DVIPA always does.
 */
#define DVIPA_SVC_UNFENCED 2

/* TIMEDAFFINITY: the target a client of a service used last, and when. */
struct dvipa_affinity_key {
	__u32 svc_id;
	__be32 client;
};

struct dvipa_affinity {
	__be32 target;
	__u32 target_idx;
	__u64 last_ns; /* bpf_ktime_get_coarse_ns() of the client's last packet to the service */
};

/* TIMEDAFFINITY for IPv6 clients (map affinity6); the target is of either family. */
struct dvipa_affinity6_key {
	__u32 svc_id;
	struct dvipa_in6 client;
};

struct dvipa_affinity6 {
	struct dvipa_in6 target;
	__u32 target_idx;
	__u32 pad;
	__u64 last_ns;
};

#define DVIPA_AFFINITY_ENTRIES (1 << 16)

/* A connection, as seen inbound at the routing node. */
struct dvipa_flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* An IPv6 connection, as seen inbound at the routing node (map crt6). */
struct dvipa_flow6 {
	struct dvipa_in6 saddr;
	struct dvipa_in6 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* Where a CRT entry came from (shown by `netstat vcrt`). One byte in the entry. */
enum dvipa_crt_origin : __u8 {
	DVIPA_CRT_FIRST = 1,     /* TCP SYN or first UDP datagram, picked by the data plane */
	DVIPA_CRT_RECOVERED = 2, /* mid-connection packet with no entry: re-derived by hash */
	DVIPA_CRT_CONTROL = 3,   /* written by the control plane (NEWCONN, takeover) */
};

struct dvipa_crt_entry {
	__be32 target; /* cluster (XCF) address of the target */
	__u32 svc_id;
	enum dvipa_crt_origin origin;
	__u8 pad;
	__u16 target_idx; /* index in `targets` (0: unknown; the next hop is then looked up by address) */
	__u8 pad2[4];
	__u64 created_ns; /* bpf_ktime_get_coarse_ns() at insertion (CLOCK_MONOTONIC, tick precision); 0 if written by user space */
};

/*
 * The IPv4 CRT's unconfirmed flows (map `crt`) are a set-associative cache in an array, not a
 * kernel hash map: a flow's set is a hash of its 5-tuple (crt_hash in distributor.h,
 * src/tables/crt-hash.ts) and it lives in one of the set's DVIPA_CRT_WAYS slots. A
 * lookup or an insert is the verifier's inlined array access and a scan of two cache lines,
 * with no helper call, no bucket lock and no LRU list: an LRU hash insert was 80 % of a new
 * connection's cost (docs/benchmarks.md). A set that is full gives up the slot least recently
 * used by a packet (CLOCK: the `ref` bit a hit sets, and a hand that goes round the set).
 * Readers and writers, in XDP on every CPU and in user space through the map's mmap, follow
 * one protocol on `seq`: a writer claims a slot by moving `seq` from even to odd with a
 * compare-and-swap, writes, and makes it even again; a reader takes a slot only if `seq` was
 * even and unchanged around its reads.
 */
#define DVIPA_CRT_WAYS 4

struct dvipa_crt_slot {
	__u32 seq;
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto; /* 0: an empty slot */
	enum dvipa_crt_origin origin;
	__u16 target_idx;
	__be32 target;
	__u16 svc_id;
	__u8 ref; /* a packet used the slot since an insert into its set last passed it over */
	__u8 hand; /* way 0's: the way the set's next insert looks at first (its CLOCK hand); else 0 */
	__u32 created_s; /* bpf_ktime_get_coarse_ns() >> 30 at insertion (units of 1.07 s) */
};

struct dvipa_crt_set {
	struct dvipa_crt_slot way[DVIPA_CRT_WAYS];
};

/*
 * The secret of crt_hash (map `crt_key`): three odd multipliers and a salt, one per cache
 * (src/dataplane/flow-cache.ts derives them), so that someone on the Internet cannot compute
 * which flows share a set, and aim a few SYNs a second, under any new-flow rate guard, at the
 * set of one client's flow to push that flow out. All zero until user space writes it: no
 * flow is cached until then.
 */
struct dvipa_crt_key {
	__u32 saddr_mul;
	__u32 daddr_mul;
	__u32 ports_mul;
	__u32 salt;
};

/* An IPv6 connection's CRT entry: as dvipa_crt_entry, with a target of either family. */
struct dvipa_crt6_entry {
	struct dvipa_in6 target; /* cluster address of the target (IPv4-mapped for an IPv4 target) */
	__u32 svc_id;
	enum dvipa_crt_origin origin;
	__u8 pad;
	__u16 target_idx;
	__u64 created_ns;
};

/*
 * A target of a service, at the index its service's Maglev slots and the CRT entries of its
 * connections carry (map `targets`; index 0 is never used). The control plane resolves the
 * target's next hop (egress interface, MACs, MTU) and follows route, neighbour and link
 * changes, so a forwarded packet reads it with one array lookup: no FIB lookup, no clock.
 * ifindex 0: not resolved (yet); the data plane then asks the FIB itself, per packet.
 */
#define DVIPA_MAX_TARGETS 16384

struct dvipa_target {
	__be32 addr;      /* IPv4 cluster (XCF) address; 0: index free, or an IPv6 target */
	__u32 svc_id;
	__u32 ifindex;    /* egress interface; 0: next hop not resolved */
	__u16 mtu;        /* egress MTU towards the target */
	__u8 smac[6];
	__u8 dmac[6];
	__u8 family;      /* AF_INET6: an IPv6 target at addr6 (encapsulated in IPv6); else IPv4 at addr */
	__u8 pad;
	/*
	 * VIPAROUTE (IPv4 targets): the outer destination, another address of the target, and the
	 * next hop above is towards it; 0: none (the outer destination is addr). Kept here so that
	 * a forwarded packet needs no lookup in `via_routes`, which only a not yet resolved
	 * target's packets consult.
	 */
	__be32 via;
	struct dvipa_in6 addr6;
};

/*
 * Fencing: a routing node may answer for a DVIPA (ARP and its traffic) only until a deadline,
 * bpf_ktime_get_ns() (CLOCK_MONOTONIC) in map `fence`, that its agent extends each time the
 * coupling facility confirms it still owns the DVIPA. An agent frozen, slow or cut off stops
 * extending it, and its node falls silent for the DVIPA before any backup may claim it.
 * No entry: not fenced (no coupling facility).
 */
#define DVIPA_FENCE_EXPIRED 1ULL
/*
 * Set in a deadline: the node has handed the DVIPA over (takeback, move) while it still owned
 * it. Its stack is letting the address go and it answers ARP and Neighbour Solicitations for
 * it no more, but until the deadline its data plane forwards what clients still send here:
 * their neighbour caches learn the new owner only from its gratuitous ARP, which waits for
 * this node's release (src/cluster/handoff.ts). Monotonic nanoseconds never reach bit 63.
 */
#define DVIPA_FENCE_DRAIN (1ULL << 63)

/* Per target index, per CPU: what the data plane sent it. */
struct dvipa_target_stats {
	__u64 conns;   /* new connections (CRT entries created for first packets) */
	__u64 packets;
	__u64 bytes;
};

/*
 * The frame `xdp_resolve` takes and returns under BPF_PROG_TEST_RUN: the control plane's
 * FIB lookup for a target, the very one the data plane would make. In: the target's
 * family and address in `nh`; out: rc and, when it is 0, ifindex, MTU and MACs.
 */
struct dvipa_resolve {
	__u32 rc;                /* BPF_FIB_LKUP_RET_* */
	struct dvipa_target nh;
};
/* Only the frame carries it, so no BTF for test/layout.test.ts: src/dataplane/structs.ts assumes this. */
_Static_assert(__builtin_offsetof(struct dvipa_resolve, nh) == 4 && sizeof(struct dvipa_resolve) == 52,
	       "struct dvipa_resolve: layout changed");

/* Node-wide settings written by the control plane. */
struct dvipa_config {
	__be32 cluster_addr; /* outer source of encapsulated packets (this node's XCF address) */
	__u32 enabled;       /* 0 until configured: the programs pass everything */
	/*
	 * The external interface and its MAC. XDP sees frames before the NIC's or the stack's
	 * destination filter: on a shared segment a switch floods frames for a MAC it has not
	 * learnt (a failed routing node's), and a backup with warm tables must not forward them
	 * as well. Ifindex 0: no check.
	 */
	__u32 ext_ifindex;
	__u8 ext_mac[6];
	/*
	 * DVIPAs with a service on every port (port 0), as a 16-bit filter: bit any_port_bit()
	 * of each, either family. A packet that matches no port's service looks for its DVIPA's
	 * every-port service only if its bit is set, so a packet for no DVIPA (the `pass` path)
	 * costs one services lookup, not two. A stale bit costs a lookup; a missing one passes the
	 * DVIPA's every-port traffic: the control plane sets a bit before it writes the service,
	 * and every write of this config (and opening the pins) adds the bits of the every-port
	 * services in the maps, never clears one.
	 */
	__u16 any_port;
	struct dvipa_in6 cluster_addr6; /* outer source towards IPv6 targets; all zero: none */
	/*
	 * New-flow rate guard: above this many new flows (CRT misses) per second on one CPU,
	 * further new flows that second are forwarded by the Maglev hash alone, with no CRT
	 * insert (counted in crt_guarded). A flood of SYNs then costs a hash, not an LRU insert.
	 * 0: no guard.
	 */
	__u32 max_new_flows;
	/* The sets of `crt` (its max_entries): written by user space, which sized the map. 0: no insert. */
	__u32 crt_sets;
};

/* The bit of dvipa_config.any_port for an IPv4 address: a multiplicative hash of it as loaded. */
static __always_inline __u16 any_port_bit(__u32 word)
{
	return 1 << ((word * 0x9E3779B1u) >> 28);
}

/* The same for an IPv6 address: of its four words XORed. */
static __always_inline __u16 any_port_bit6(const struct dvipa_in6 *a)
{
	return any_port_bit(a->w[0] ^ a->w[1] ^ a->w[2] ^ a->w[3]);
}

/* Per CPU (map `flow_rate`): the new-flow rate guard's current one-second window. */
struct dvipa_flow_rate {
	__u64 window_ns; /* bpf_ktime_get_coarse_ns() at the start of the window */
	__u64 count;     /* new flows seen in it on this CPU */
};

/*
 * Why a packet got its verdict. One per-CPU counter each (map `reasons`); the distributor
 * and decap programs share the numbering so one table explains both.
 */
enum dvipa_reason {
	DVIPA_R_PASS_NOT_IPV4 = 0,   /* ARP, anything but IPv4 and IPv6: not ours */
	DVIPA_R_PASS_NOT_SERVICE,    /* IPv4/IPv6 not addressed to a distributed DVIPA:port */
	DVIPA_R_PASS_MALFORMED,      /* unparsable L2/L3 header: left to the kernel's checks */
	DVIPA_R_PASS_DISABLED,       /* node not configured yet */
	DVIPA_R_DROP_MALFORMED_L4,   /* to a distributed DVIPA, transport header truncated (IPv6: or past the extension headers walked) */
	DVIPA_R_DROP_FRAGMENT,       /* IPv4 fragment to a distributed DVIPA */
	DVIPA_R_DROP_NO_TARGET,      /* service has no target for this hash slot */
	DVIPA_R_DROP_NO_ROUTE,       /* FIB has no route to the target */
	DVIPA_R_DROP_NO_NEIGH,       /* FIB route but no neighbour entry for the next hop */
	DVIPA_R_DROP_FWD_DISABLED,   /* IP forwarding is off on the ingress interface */
	DVIPA_R_DROP_NO_EGRESS,      /* egress interface not enabled for redirect (tx_ports) */
	DVIPA_R_DROP_TOO_BIG,        /* too big once encapsulated, DF clear: cannot fragment */
	DVIPA_R_DROP_ENCAP,          /* no room to build the tunnel header or the ICMP reply */
	DVIPA_R_TX_FRAG_NEEDED,      /* too big, DF set: ICMP fragmentation needed sent back */
	DVIPA_R_FWD_TX,              /* encapsulated, sent back out of the ingress interface */
	DVIPA_R_FWD_REDIRECT,        /* encapsulated, redirected to another interface */
	DVIPA_R_DECAP,               /* target: outer header stripped, inner passed up */
	DVIPA_R_DECAP_PASS_NOT_OURS, /* target: IPIP not to our cluster address or not a served DVIPA */
	DVIPA_R_DECAP_PASS_MALFORMED,/* target: IPIP whose inner header is unparsable */
	DVIPA_R_PASS_OTHER_HOST,     /* unicast to another MAC (flooded by a switch): the stack drops it */
	DVIPA_R_PASS_LOCAL_TARGET,   /* the routing node is the flow's target: its own stack serves it */
	DVIPA_R_DROP_FENCED_ARP,     /* ARP request for a DVIPA whose fencing deadline has passed */
	DVIPA_R_DROP_FENCED,         /* IPv4 to a DVIPA whose fencing deadline has passed */
	DVIPA_R_DECAP_DROP_NOT_ROUTER,  /* target: IPIP for a served DVIPA from no routing node of ours */
	DVIPA_R_DECAP_DROP_NOT_SERVICE, /* target: IPIP from a routing node to a port not distributed here */
	DVIPA_R_PASS_FRAGMENT6,      /* IPv6 fragment to a distributed DVIPA: passed to the stack (no ports to match) */
	DVIPA_R_TX_PKT_TOO_BIG,      /* IPv6 too big once encapsulated: ICMPv6 packet too big sent back */
	DVIPA_R_COUNT,
};

/* Per service, per CPU. */
struct dvipa_svc_stats {
	__u64 packets;
	__u64 bytes;
	__u64 crt_hit;
	__u64 crt_miss;
	__u64 crt_new;      /* entries created for first packets */
	__u64 recovered;    /* entries re-derived by hash */
	__u64 forwarded;
	__u64 dropped;      /* any drop reason; `reasons` says which */
	__u64 frag_needed;  /* ICMP fragmentation needed (IPv6: packet too big) sent */
	__u64 crt_guarded;  /* new flows forwarded by hash without a CRT entry: over the rate guard, or their CRT slot was being written */
};

/*
 * A TCP state change in a target agent's own network namespace that the agent should hear
 * about at once: a socket entering or leaving LISTEN, or a connection whose local address
 * is a served DVIPA. The agent applies it to its socket table; a full scan of /proc, at
 * its scan period and whenever events were lost, stays the truth.
 */
struct dvipa_sock_event {
	/* Either family, IPv4 as ::ffff:a.b.c.d (a dual-stack socket's IPv4 peer too); :: for a wildcard. */
	struct dvipa_in6 local;
	struct dvipa_in6 remote;
	__u16 local_port; /* host order, as the tracepoint gives them */
	__u16 remote_port;
	__u8 oldstate;
	__u8 newstate;
	__u8 pad[2];
};

/*
 * The socket-event program's one-entry config and counter (map `sock_filter`, private to
 * each loaded sockstate.bpf.o). The tracepoint fires for every namespace of the host, and
 * in a lab every target's namespace serves the same DVIPA: only events of the agent's own
 * namespace are queued.
 */
struct dvipa_sock_filter {
	__u32 netns; /* the agent's network namespace (inode of /proc/self/ns/net); set before attach */
	__u32 pad;
	__u64 lost;  /* events dropped on a full ring buffer: the agent rescans when it grows */
};

#endif
