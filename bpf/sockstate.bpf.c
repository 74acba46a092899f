// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Target side: tells the agent, through the sock_events ring buffer, when a TCP socket
 * starts or stops listening, or when a connection on a served DVIPA changes state, so
 * SRVSTAT and NEWCONN/TERMCONN leave at once instead of at the next reconciliation scan.
 * Both families: an IPv4 socket's addresses are reported as ::ffff:a.b.c.d, as a
 * dual-stack IPv6 socket has them for its IPv4 peers.
 * A BTF raw tracepoint: no tracefs needed, and struct sock is read as the kernel has it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "maps_target.h"

#define TCP_LISTEN_STATE 10
#define AF_INET 2
#define AF_INET6 10

/* Puts the event layout in this object's BTF, where the layout test checks it. */
const struct dvipa_sock_event *btf_sock_event __attribute__((unused));

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
	struct dvipa_sock_event *e;
	int listen;

	if (sk->sk_protocol != IPPROTO_TCP)
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
	if (!e)
		return 0; /* full: the agent's periodic reconciliation catches up */
	e->local = local;
	e->remote = remote;
	e->local_port = sk->__sk_common.skc_num;
	e->remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->pad[0] = 0;
	e->pad[1] = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
