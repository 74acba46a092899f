// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Target side: tells the agent, through the sock_events ring buffer, when a TCP socket of
 * its network namespace starts or stops listening, or when a connection on a served DVIPA
 * changes state, so SRVSTAT and NEWCONN/TERMCONN leave at once instead of at the next
 * reconciliation scan. Both families: an IPv4 socket's addresses are reported as
 * ::ffff:a.b.c.d, as a dual-stack IPv6 socket has them for its IPv4 peers.
 * A BTF raw tracepoint: no tracefs needed, and struct sock (its namespace too) is read as
 * the running kernel lays it out (CO-RE: 6.1 and 6.18 alike).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "maps_target.h"

#define TCP_LISTEN_STATE 10
#define AF_INET 2
#define AF_INET6 10

/* Puts the event layout in this object's BTF, where the layout test checks it. */
const struct dvipa_sock_event *btf_sock_event __attribute__((unused));

/* Not pinned: each agent's loaded object has its own (struct dvipa_sock_filter). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dvipa_sock_filter);
} sock_filter SEC(".maps");

static __always_inline void mapped(struct dvipa_in6 *a, __be32 v4)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0xffff);
	a->w[3] = v4;
}

static __always_inline int is_mapped(const struct dvipa_in6 *a)
{
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0xffff);
}

/* Whether the socket's local address is a DVIPA this target serves. */
static __always_inline int served_local(const struct dvipa_in6 *a)
{
	if (is_mapped(a))
		return bpf_map_lookup_elem(&served, &a->w[3]) != NULL;
	return bpf_map_lookup_elem(&served6, a) != NULL;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_inet_sock_set_state, const struct sock *sk, int oldstate, int newstate)
{
	struct dvipa_in6 local, remote;
	struct dvipa_sock_filter *f;
	struct dvipa_sock_event *e;
	__u32 zero = 0;
	int listen;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	f = bpf_map_lookup_elem(&sock_filter, &zero);
	/* Another namespace's socket, though it may have the same DVIPA (every lab target's has). */
	if (!f || sk->__sk_common.skc_net.net->ns.inum != f->netns)
		return 0;
	if (sk->__sk_common.skc_family == AF_INET6) {
		__builtin_memcpy(&local, &sk->__sk_common.skc_v6_rcv_saddr, sizeof(local));
		__builtin_memcpy(&remote, &sk->__sk_common.skc_v6_daddr, sizeof(remote));
	} else {
		mapped(&local, sk->__sk_common.skc_rcv_saddr);
		mapped(&remote, sk->__sk_common.skc_daddr);
	}
	listen = oldstate == TCP_LISTEN_STATE || newstate == TCP_LISTEN_STATE;
	if (!listen && !served_local(&local))
		return 0;
	e = bpf_ringbuf_reserve(&sock_events, sizeof(*e), 0);
	if (!e) {
		/* Full: counted, and the agent rescans when it sees the count grow. */
		__sync_fetch_and_add(&f->lost, 1);
		return 0;
	}
	e->local = local;
	e->remote = remote;
	/*
	 * A socket that goes to CLOSE has given its port back (inet_put_port zeroes skc_num)
	 * before the tracepoint fires: its inet_sport still says which port it had.
	 */
	e->local_port = sk->__sk_common.skc_num ?: bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->pad[0] = 0;
	e->pad[1] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
