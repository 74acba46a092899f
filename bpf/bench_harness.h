/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The harness of `dvipa bench fastpath`, shared by the programs that measure a load balancer
 * under BPF_PROG_TEST_RUN with a repeat count (bench.bpf.c: dvipa's distributor;
 * bench_katran.bpf.c: Katran's balancer). The kernel does not restore the packet between
 * repetitions, so the harness undoes what the balancer did (encapsulation) after each run
 * and, for the new connection paths, gives each run a fresh source; otherwise every
 * repetition after the first would measure a different path.
 *
 * Katran's program cannot be built with vmlinux.h (it includes the uapi headers), so this
 * header includes nothing: the includer brings struct xdp_md, the XDP actions, the helper
 * declarations and bpf_htonl/bpf_htons, from vmlinux.h and libbpf or from uapi headers.
 */
#ifndef DVIPA_BENCH_HARNESS_H
#define DVIPA_BENCH_HARNESS_H

/* What the harness saves and restores: an Ethernet header and one VLAN tag. */
#define BENCH_SAVED_L2 18

struct bench_ctl {
	__u32 mode;      /* enum bench_mode */
	__u32 saddr_off; /* offset of the IPv4 source address in the frame */
	__u32 sport_off; /* offset of the TCP/UDP source port in the frame */
	__u32 seq;       /* flow counter for BENCH_NEW_FLOW */
};

/* New flows come from 198.18.0.0/15 (benchmark addresses), 65536 ports per address. */
#define BENCH_SADDR_BASE 0xC6120000
#define BENCH_SADDR_MASK 0x1FFFF

enum bench_mode {
	BENCH_HARNESS_ONLY = 0, /* the harness alone: its cost, to read the others against */
	BENCH_SAME_FLOW = 1,    /* the frame as given, every run */
	BENCH_NEW_FLOW = 2,     /* a new source port every run */
};

/* Per CPU, so test runs on every CPU at once each count their own flows. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_ctl);
} bench_ctl SEC(".maps");

/* The frame as it was before the balancer ran. */
struct bench_frame {
	__u8 l2[BENCH_SAVED_L2];
	int len;
};

/*
 * Before the balancer: saves the frame's start and, in BENCH_NEW_FLOW, writes this run's
 * source. Returns the verdict to end the run with (the harness alone, or a bad control),
 * or -1 to run the balancer.
 */
static __attribute__((always_inline)) int bench_enter(struct xdp_md *ctx, struct bench_frame *f)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct bench_ctl *ctl;
	__u32 zero = 0, off;

	ctl = bpf_map_lookup_elem(&bench_ctl, &zero);
	if (!ctl || data + BENCH_SAVED_L2 > data_end)
		return XDP_ABORTED;
	f->len = data_end - data;
	__builtin_memcpy(f->l2, data, BENCH_SAVED_L2);
	if (ctl->mode == BENCH_HARNESS_ONLY)
		return XDP_PASS;
	if (ctl->mode == BENCH_NEW_FLOW) {
		__u32 seq = ctl->seq++;

		off = ctl->saddr_off;
		if (off > 128 || data + off + sizeof(__be32) > data_end)
			return XDP_ABORTED;
		*(__be32 *)(data + off) = bpf_htonl(BENCH_SADDR_BASE | ((seq >> 16) & BENCH_SADDR_MASK));
		off = ctl->sport_off;
		if (off > 128 || data + off + sizeof(__be16) > data_end)
			return XDP_ABORTED;
		*(__be16 *)(data + off) = bpf_htons((__u16)seq);
	}
	return -1;
}

/* After the balancer returned `act`: takes off what it put in front of the frame. */
static __attribute__((always_inline)) int bench_leave(struct xdp_md *ctx, const struct bench_frame *f, int act)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int len = data_end - data, grown;

	/* Opaque to the compiler: else it may fold the difference of lengths into pointer
	 * arithmetic the verifier refuses (a packet pointer plus a length). */
	asm volatile("" : "+r"(len));
	grown = len - f->len;
	if (grown > 0) {
		if (bpf_xdp_adjust_head(ctx, grown))
			return XDP_ABORTED;
		data = (void *)(long)ctx->data;
		data_end = (void *)(long)ctx->data_end;
		if (data + BENCH_SAVED_L2 > data_end)
			return XDP_ABORTED;
		__builtin_memcpy(data, f->l2, BENCH_SAVED_L2);
	}
	return act;
}

#endif /* DVIPA_BENCH_HARNESS_H */
