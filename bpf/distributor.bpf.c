// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP program for a routing node's external interface. The logic is in distributor.h. */
/*
 * Only UAPI structs (xdp_md, the packet headers), whose layouts never move: without CO-RE
 * relocations for them libbpf need not read and parse the kernel's BTF (5.5 MB here) to load
 * this object, which every agent start and FastPath.open paid, twice.
 */
#define BPF_NO_PRESERVE_ACCESS_INDEX
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "distributor.h"

/* xdp.frags: attaches to 9000-MTU interfaces; a jumbo frame's headers are in its first buffer. */
SEC("xdp.frags")
int xdp_distributor(struct xdp_md *ctx)
{
	return dvipa_distribute(ctx);
}

/*
 * Not attached: the control plane runs it with BPF_PROG_TEST_RUN on a struct dvipa_resolve
 * to learn a target's next hop, by the same FIB lookup the distributor would make.
 */
SEC("xdp")
int xdp_resolve(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct dvipa_resolve *r = data;
	struct dvipa_target nh = {};
	struct dvipa_config *cfg;
	__u32 zero = 0;

	if ((void *)(r + 1) > data_end)
		return XDP_ABORTED;
	cfg = bpf_map_lookup_elem(&node_config, &zero);
	if (!cfg)
		return XDP_ABORTED;
	if (r->nh.family == AF_INET6)
		r->rc = fib_nexthop6(ctx, cfg, &r->nh.addr6, &nh);
	else
		r->rc = fib_nexthop(ctx, cfg, r->nh.addr, 0, &nh);
	__builtin_memcpy(&r->nh, &nh, sizeof(nh));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
