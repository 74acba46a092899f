/*
 * XFRM operations: SAs and policies dumped, added, updated and deleted through the addon's
 * NETLINK_XFRM transport, one request at a time or in batches off the event loop. The
 * messages are xfrm-codec.ts's, re-exported here for callers that both build and send.
 */
import * as fs from 'node:fs';
import { SyscallError } from '../kernel/errors.js';
import { sys } from '../kernel/sys.js';
import {
  decodePolicy,
  decodeSa,
  DIRS,
  encodePolicy,
  encodeSa,
  inetFamily,
  LAYOUT,
  saIdMessage,
  writeSelector,
  XFRM_MSG,
  XfrmError,
  type Policy,
  type Sa,
  type SaId,
} from './xfrm-codec.js';

export * from './xfrm-codec.js';

const NLM_F_DUMP = 0x300;
const NLM_F_CREATE = 0x400;
const NLM_F_EXCL = 0x200;
const NLM_F_REPLACE = 0x100;

function request(op: string, type: number, flags: number, payload: Buffer): Array<{ type: number; payload: Buffer }> {
  try {
    return sys.xfrmRequest('xfrm', op, type, flags, payload);
  } catch (e) {
    if (!(e instanceof SyscallError)) throw e;
    throw new XfrmError(`${op}: ${e.explanation}${e.reason ? `: ${e.reason}` : ''}`, op, e.code, e.errno, e.reason, e);
  }
}

/** Every IPv4 SA of this network namespace. */
export function dumpSas(): Sa[] {
  return request('XFRM_MSG_GETSA(dump)', XFRM_MSG.GETSA, NLM_F_DUMP, Buffer.alloc(0))
    .filter((m) => m.type === XFRM_MSG.NEWSA && inetFamily(m.payload, LAYOUT.xfrm_usersa_info.family))
    .map((m) => decodeSa(m.payload));
}

/**
 * Installs an SA; `replace`: one that exists already (same destination, SPI, protocol) is
 * deleted and this one added. Not XFRM_MSG_UPDSA: it changes only lifetimes and
 * encapsulation, and would keep the kernel's keys and replay state.
 */
export function addSa(sa: Sa, opts: { replace?: boolean } = {}): void {
  const add = () => request('XFRM_MSG_NEWSA', XFRM_MSG.NEWSA, NLM_F_CREATE | NLM_F_EXCL, encodeSa(sa));
  try {
    add();
  } catch (e) {
    if (!opts.replace || !(e instanceof XfrmError) || e.code !== 'EEXIST') throw e;
    deleteSa(sa);
    add();
  }
}

/** A batch's outcome as errors: undefined where the request went through. */
function batchErrors(
  op: (i: number) => string,
  results: Array<{ errno: number; code?: string; text?: string; reason?: string }>,
): Array<XfrmError | undefined> {
  return results.map((r, i) =>
    r.errno
      ? new XfrmError(
          `${op(i)}: ${r.code}${r.text ? ` (${r.text})` : ''}${r.reason ? `: ${r.reason}` : ''}`,
          op(i),
          r.code,
          r.errno,
          r.reason,
        )
      : undefined,
  );
}

type BatchRequest = { type: number; flags: number; payload: Buffer };

/**
 * Runs `fn` with a NETLINK_XFRM socket opened now, in the calling thread's namespace (the
 * batches run later on a worker thread, when the caller may have left it), closed after.
 */
async function onXfrmSocket<T>(
  fn: (batch: (reqs: BatchRequest[]) => ReturnType<typeof sys.xfrmBatch>) => Promise<T>,
): Promise<T> {
  const fd = sys.xfrmOpen('xfrm');
  try {
    return await fn((reqs) => sys.xfrmBatch('xfrm', fd, reqs));
  } finally {
    sys.closeFd('xfrm', fd);
  }
}

/**
 * Installs many SAs at once (a takeover's work), one socket for all, off Node's event loop;
 * with `replace`, those that exist are deleted and added again (see addSa). Resolves to each
 * SA's error, undefined where it went in. The namespace is the caller's at the call.
 */
export function addSas(sas: Sa[], opts: { replace?: boolean } = {}): Promise<Array<XfrmError | undefined>> {
  const msgs = sas.map(encodeSa);
  return onXfrmSocket(async (batch) => {
    const add = (idx: number[]) =>
      batch(idx.map((i) => ({ type: XFRM_MSG.NEWSA, flags: NLM_F_CREATE | NLM_F_EXCL, payload: msgs[i] })));
    const outcome = await add(sas.map((_, i) => i));
    const ops = sas.map(() => 'XFRM_MSG_NEWSA');
    const again = opts.replace ? outcome.flatMap((r, i) => (r.code === 'EEXIST' ? [i] : [])) : [];
    if (again.length) {
      const deleted = await batch(deleteRequests(again.map((i) => sas[i])));
      again.forEach((i, k) => {
        if (deleted[k].errno) [outcome[i], ops[i]] = [deleted[k], 'XFRM_MSG_DELSA'];
      });
      const gone = again.filter((_, k) => !deleted[k].errno);
      (await add(gone)).forEach((r, k) => (outcome[gone[k]] = r));
    }
    return batchErrors((i) => ops[i], outcome);
  });
}

/** Installs many policies at once (replacing same selector and direction), off Node's event loop. */
export function putPolicies(ps: Policy[]): Promise<Array<XfrmError | undefined>> {
  const reqs = ps.map((p) => ({
    type: XFRM_MSG.UPDPOLICY,
    flags: NLM_F_CREATE | NLM_F_REPLACE,
    payload: encodePolicy(p),
  }));
  return onXfrmSocket(async (batch) => batchErrors(() => 'XFRM_MSG_UPDPOLICY', await batch(reqs)));
}

export function deleteSa(sa: SaId): void {
  request('XFRM_MSG_DELSA', XFRM_MSG.DELSA, 0, saIdMessage(sa));
}

const deleteRequests = (sas: SaId[]) => sas.map((sa) => ({ type: XFRM_MSG.DELSA, flags: 0, payload: saIdMessage(sa) }));

/** Deletes many SAs at once, off Node's event loop; each SA's error, undefined where it went. */
export function deleteSas(sas: SaId[]): Promise<Array<XfrmError | undefined>> {
  const reqs = deleteRequests(sas);
  return onXfrmSocket(async (batch) => batchErrors(() => 'XFRM_MSG_DELSA', await batch(reqs)));
}

/** Every IPv4 policy of this network namespace. */
export function dumpPolicies(): Policy[] {
  return request('XFRM_MSG_GETPOLICY(dump)', XFRM_MSG.GETPOLICY, NLM_F_DUMP, Buffer.alloc(0))
    .filter(
      (m) =>
        m.type === XFRM_MSG.NEWPOLICY &&
        inetFamily(m.payload, LAYOUT.xfrm_userpolicy_info.sel + LAYOUT.xfrm_selector.family),
    )
    .map((m) => decodePolicy(m.payload));
}

/** Installs a policy, replacing one with the same selector and direction (XFRM_MSG_UPDPOLICY). */
export function putPolicy(p: Policy): void {
  request('XFRM_MSG_UPDPOLICY', XFRM_MSG.UPDPOLICY, NLM_F_CREATE | NLM_F_REPLACE, encodePolicy(p));
}

export function deletePolicy(p: Pick<Policy, 'selector' | 'dir'>): void {
  const L = LAYOUT.xfrm_userpolicy_id;
  const b = Buffer.alloc(L.size);
  writeSelector(b, L.sel, p.selector);
  b.writeUInt8(DIRS.indexOf(p.dir), L.dir);
  request('XFRM_MSG_DELPOLICY', XFRM_MSG.DELPOLICY, 0, b);
}

/**
 * Packets that match an outbound policy whose SA is missing wait in the policy's queue (up to
 * 100, looked up again when a policy with the same selector is put, else on a back-off timer)
 * instead of being dropped, which is the kernel's default (net.core.xfrm_larval_drop=1). Per
 * network namespace: this process's.
 */
export function queueUntilSa(): void {
  fs.writeFileSync('/proc/sys/net/core/xfrm_larval_drop', '0');
}
