// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP program for a routing node's external interface. The logic is in distributor.h. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "distributor.h"

SEC("xdp")
int xdp_distributor(struct xdp_md *ctx)
{
	return dvipa_distribute(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
