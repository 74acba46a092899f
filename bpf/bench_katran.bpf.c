// SPDX-License-Identifier: GPL-2.0-only
/*
 * Katran's balancer (github.com/facebookincubator/katran) inside the harness of
 * `dvipa bench fastpath`, for `--katran DIR`. Not built with the project: src/bench/katran.ts
 * compiles it at run time against DIR, the way Katran's own build compiles its program
 * (uapi headers, its defines, clang to LLVM IR then llc), with KATRAN_PROGRAM naming
 * Katran's program file. Katran's code is included unmodified; its program
 * (balancer_ingress) stays in the object as Katran built it.
 */
#include KATRAN_PROGRAM
#include "bench_harness.h"

/*
 * flatten: balancer_ingress, a global function in its own section, is inlined here as
 * dvipa's distributor is into bench_distributor, so neither pays a BPF-to-BPF call.
 */
SEC("xdp")
__attribute__((flatten)) int bench_katran(struct xdp_md *ctx)
{
	struct bench_frame f;
	int act = bench_enter(ctx, &f);

	if (act >= 0)
		return act;
	return bench_leave(ctx, &f, balancer_ingress(ctx));
}
