/*
 * The native addon (build/Release/dvipa.node): the system libbpf for Node. All calls are
 * synchronous but xfrmBatch, whose promise rejects with the same errors.
 * Failures throw an Error with `op` (the libbpf or system call), `errno`,
 * `code` (e.g. "E2BIG") and message `${op}: ${code} (${strerror})`; `detail` adds context
 * (for a load: the last 16 KiB of libbpf's log, the verifier's included). Misused
 * arguments (wrong types, buffers smaller than the map's key or value) throw TypeError.
 */

export interface MapSpec {
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

/** A libbpf bpf_object: opened (not loaded) by the constructor. */
export class BpfObject {
  /**
   * `pinRoot`: where maps declared LIBBPF_PIN_BY_NAME are reused from or pinned to.
   * `maxEntries`: resize maps by name before load.
   */
  constructor(path: string, opts?: { pinRoot?: string; maxEntries?: Record<string, number> });
  maps(): MapSpec[];
  programs(): string[];
  /** bpf_object__load: creates or reuses maps, runs the verifier. */
  load(): void;
  mapFd(name: string): number;
  progFd(name: string): number;
  /** Attaches a program as its section says (tracepoints...); detached on close(). */
  attach(progName: string): void;
  /** An iterator program's output to its end (attached on first use, detached on close()). */
  readIter(progName: string): Buffer;
  /** Closes the object's fds and the links attach() made; maps and XDP links live on where pinned. */
  close(): void;
}

/** A BPF ring buffer read on Node's event loop: `onRecords` gets each batch of records. */
export class RingBuffer {
  constructor(mapFd: number, onRecords: (records: Buffer[]) => void);
  close(): void;
}

/**
 * One entry of an XfrmEvents batch: a netlink message (`type`, `payload` after the header), or
 * with type 0 and an empty payload: `overflow`, the kernel dropped events (ENOBUFS: what was
 * lost must be read again with a dump), or `error`, a failed read (`op`, `errno`, `code`).
 */
export interface XfrmEventMessage {
  type: number;
  payload: Buffer;
  overflow?: true;
  error?: Error & { op: string; errno: number; code: string; detail?: string };
}

/**
 * XFRM notifications of the calling thread's network namespace (fixed when constructed), read
 * on Node's event loop; `onMessages` gets what each wakeup found. `groups`: the groups
 * joined, by number (XFRMNLGRP_x). `rcvBuf`: the socket's receive buffer, 4 MiB by default.
 * Keeps the process alive until close(); close() is idempotent.
 */
export class XfrmEvents {
  constructor(groups: readonly number[], onMessages: (msgs: XfrmEventMessage[]) => void, rcvBuf?: number);
  close(): void;
}

/**
 * A map's fd with its info read once (bpf_obj_get_info_by_fd), so operations check buffer
 * sizes without a syscall each. Valid while the fd is open; the fd stays the caller's.
 */
export class MapRef {
  constructor(fd: number);
}

/** Where a map operation takes a map: a MapRef, or an fd (its info read per call). */
export type MapArg = number | MapRef;

/**
 * rtnetlink notifications of the calling thread's network namespace, read as XfrmEvents are:
 * `groups` are RTNLGRP_x numbers (RTNLGRP_LINK 1, RTNLGRP_NEIGH 3, RTNLGRP_NEXTHOP 32...).
 */
export class RouteEvents {
  constructor(groups: readonly number[], onMessages: (msgs: XfrmEventMessage[]) => void, rcvBuf?: number);
  close(): void;
}

export function mapCreate(
  type: number,
  name: string,
  keySize: number,
  valueSize: number,
  maxEntries: number,
  flags?: number,
): number;
/** Fills `value`; false if the key is absent. Per-CPU maps: value holds roundup(valueSize, 8) × possible CPUs. */
export function mapLookup(map: MapArg, key: Buffer, value: Buffer): boolean;
export function mapUpdate(map: MapArg, key: Buffer, value: Buffer, flags?: number): void;
/** False if the key was absent. */
export function mapDelete(map: MapArg, key: Buffer): boolean;
/** False at the end; `key` null starts from the first. */
export function mapGetNextKey(map: MapArg, key: Buffer | null, next: Buffer): boolean;
/** BPF_MAP_UPDATE_BATCH; returns how many were written (a thrown error carries `processed`). */
export function mapUpdateBatch(map: MapArg, keys: Buffer, values: Buffer, count: number, flags?: number): number;
/**
 * BPF_MAP_LOOKUP_BATCH: up to `count` entries after the position `inBatch` (null: from the
 * start); `outBatch` receives the position to continue from. `done` once the map is exhausted.
 */
export function mapLookupBatch(
  map: MapArg,
  inBatch: Buffer | null,
  outBatch: Buffer,
  keys: Buffer,
  values: Buffer,
  count: number,
): { count: number; done: boolean };
/** BPF_MAP_DELETE_BATCH; stops at the first absent key and returns how many were deleted. */
export function mapDeleteBatch(map: MapArg, keys: Buffer, count: number): number;
export function mapInfo(map: MapArg): {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
};
/** An mmapable array's values, shared with the data plane (unmapped when collected). */
export function mapMmap(map: MapArg): ArrayBuffer;
/**
 * Slots of such a mapping that start with a sequence word (the CRT cache's protocol, bpf/distributor.h):
 * a copy of the slot at `offset` into `out`, false if it was being written ...
 */
export function seqRead(mem: ArrayBuffer, offset: number, out: Buffer): boolean;
/** ... and a write of `data` (its first 4 bytes, the word, left alone) if `owner` is at `ownerAt` (empty: always). */
export function seqWrite(mem: ArrayBuffer, offset: number, data: Buffer, ownerAt: number, owner: Buffer): boolean;
/** A slot whose word is still the odd `seq` (its writer was killed holding it): emptied and let go; false if the word moved. */
export function seqReset(mem: ArrayBuffer, offset: number, seq: number, length: number): boolean;
export function objGet(path: string): number;
export function objPin(fd: number, path: string): void;
export function closeFd(fd: number): void;
export function numPossibleCpus(): number;

/**
 * BPF_PROG_TEST_RUN. `ctxIn` is the program's context (struct xdp_md for XDP);
 * `duration` is the kernel's mean ns per repetition. With BPF_F_TEST_XDP_LIVE_FRAMES
 * frames are transmitted and `dataOut` is empty.
 */
export function progTestRun(
  fd: number,
  opts: { data: Buffer; dataOutSize?: number; ctxIn?: Buffer; repeat?: number; flags?: number; batchSize?: number },
): { retval: number; duration: number; dataOut: Buffer; ctxOut?: Buffer };
/** sched_setaffinity of the calling thread (a worker's own thread) to one CPU. */
export function pinThreadToCpu(cpu: number): void;
/** bpf_link_create(BPF_XDP) with XDP_FLAGS_DRV_MODE (4), XDP_FLAGS_SKB_MODE (2) or 0. */
export function xdpLinkCreate(progFd: number, ifindex: number, flags: number): number;
/** Atomically replaces the link's program. */
export function linkUpdate(linkFd: number, newProgFd: number): void;
/** `ifindex` for XDP links: 0 once the interface is gone. */
export function linkInfo(fd: number): { id: number; type: number; progId: number; ifindex?: number };
export function progInfo(fd: number): { id: number; name: string; type: number };
export function ifNameToIndex(name: string): number;

/** Struct layout from an object's BTF: byte offsets and sizes. */
/** `basePath`: for a module's split BTF (/sys/kernel/btf/MODULE), the vmlinux BTF it extends. */
export function btfStruct(
  objPath: string,
  name: string,
  basePath?: string,
): { size: number; members: Array<{ name: string; offset: number; size: number }> };
export function btfEnum(objPath: string, name: string, basePath?: string): Record<string, number>;

/** setns(CLONE_NEWNET) for the calling thread; returns an fd of the previous namespace for netnsRestore. */
export function netnsEnter(path: string): number;
export function netnsRestore(prevFd: number): void;

/** The calling thread: SCHED_RR at `priority` (1-99), or SCHED_OTHER (0), its nice value kept. */
export function threadRealTime(priority: number): void;

/** Broadcasts a gratuitous ARP request for `addr` (host-order IPv4) from `ifname` in the current namespace. */
export function gratuitousArp(ifname: string, addr: number): void;
/** Sends an unsolicited Neighbour Advertisement (Override set) for `addr` (16 bytes) from `ifname` to ff02::1 in the current namespace. */
export function unsolicitedNa(ifname: string, addr: Buffer): void;

/** One NETLINK_XFRM request (NLM_F_REQUEST and NLM_F_ACK added) and its replies; throws with the errno and the kernel's explanation. */
export function xfrmRequest(
  op: string,
  type: number,
  flags: number,
  payload: Buffer,
): Array<{ type: number; payload: Buffer }>;

/** One rtnetlink (NETLINK_ROUTE) request in the calling thread's namespace, as xfrmRequest. */
export function routeRequest(
  op: string,
  type: number,
  flags: number,
  payload: Buffer,
): Array<{ type: number; payload: Buffer }>;

/** A NETLINK_XFRM socket of the calling thread's namespace, for xfrmBatch; closed with closeFd. */
export function xfrmOpen(): number;
/**
 * Many NETLINK_XFRM requests on the socket `fd` (keep it open until the promise settles), on a
 * worker thread; each one's outcome (errno 0: done). Malformed requests throw TypeError at once.
 */
export function xfrmBatch(
  fd: number,
  requests: Array<{ type: number; flags: number; payload: Buffer }>,
): Promise<Array<{ errno: number; code?: string; text?: string; reason?: string }>>;
