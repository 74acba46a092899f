// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Target side: tells the agent, through the sock_events ring buffer, when a TCP socket
 * starts or stops listening, or when a connection on a served DVIPA changes state, so
 * SRVSTAT and NEWCONN/TERMCONN leave at once instead of at the next reconciliation scan.
 * A BTF raw tracepoint: no tracefs needed, and struct sock is read as the kernel has it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "maps_target.h"

#define TCP_LISTEN_STATE 10

/* Puts the event layout in this object's BTF, where the layout test checks it. */
const struct dvipa_sock_event *btf_sock_event __attribute__((unused));

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_inet_sock_set_state, const struct sock *sk, int oldstate, int newstate)
{
	struct dvipa_sock_event *e;
	__be32 local;
	int listen;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	/* Dual-stack sockets keep the IPv4 address here too (zero when not IPv4-mapped). */
	local = sk->__sk_common.skc_rcv_saddr;
	listen = oldstate == TCP_LISTEN_STATE || newstate == TCP_LISTEN_STATE;
	if (!listen && !bpf_map_lookup_elem(&served, &local))
		return 0;
	e = bpf_ringbuf_reserve(&sock_events, sizeof(*e), 0);
	if (!e)
		return 0; /* full: the agent's periodic reconciliation catches up */
	e->local = local;
	e->remote = sk->__sk_common.skc_daddr;
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
