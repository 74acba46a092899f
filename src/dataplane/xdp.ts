/*
 * Attaching XDP programs through pinned bpf_links. A link outlives the process that made
 * it, so forwarding continues while the agent restarts; attaching again to an interface
 * that already has dvipa's link swaps the program in place (bpf_link_update), which the
 * kernel does atomically: no packet sees the interface without a program.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SyscallError } from '../kernel/errors.js';
import { sys } from '../kernel/sys.js';
import type { Logger } from '../log.js';

const XDP_FLAGS_SKB_MODE = 2;
const XDP_FLAGS_DRV_MODE = 4;

export type XdpMode = 'auto' | 'native' | 'generic';

export interface Attachment {
  ifname: string;
  ifindex: number;
  program: string;
  linkId: number;
  /** How it was attached; undefined when an existing link was updated in place. */
  mode?: 'native' | 'generic';
  replaced: boolean;
}

export function linkPinPath(pinRoot: string, program: string, ifname: string): string {
  return path.join(pinRoot, 'links', `${program}@${ifname}`);
}

function create(
  progFd: number,
  ifname: string,
  ifindex: number,
  mode: XdpMode,
  logger: Logger,
): { fd: number; mode: 'native' | 'generic' } {
  if (mode !== 'generic') {
    try {
      return { fd: sys.xdpLinkCreate(ifname, progFd, ifindex, XDP_FLAGS_DRV_MODE), mode: 'native' };
    } catch (e) {
      if (mode === 'native' || !(e instanceof SyscallError)) throw explain(e, ifname);
      logger.warn(
        { ifname, err: e.message },
        'native XDP not available on this interface; falling back to generic (slower) XDP',
      );
    }
  }
  try {
    return { fd: sys.xdpLinkCreate(ifname, progFd, ifindex, XDP_FLAGS_SKB_MODE), mode: 'generic' };
  } catch (e) {
    throw explain(e, ifname);
  }
}

function explain(e: unknown, ifname: string): unknown {
  if (e instanceof SyscallError && (e.code === 'EBUSY' || e.code === 'EEXIST')) {
    return new SyscallError(
      e.op,
      ifname,
      e.code,
      e.errno,
      `${e.explanation}: ${ifname} already has an XDP program that is not dvipa's; remove it (ip link set dev ${ifname} xdp off) and retry`,
    );
  }
  return e;
}

/** Attaches `progFd` to `ifname`, or swaps it into dvipa's existing link there. */
export function attachXdp(
  pinRoot: string,
  program: string,
  progFd: number,
  ifname: string,
  mode: XdpMode,
  logger: Logger,
): Attachment {
  const ifindex = sys.ifNameToIndex(ifname, ifname);
  const pin = linkPinPath(pinRoot, program, ifname);
  if (fs.existsSync(pin)) {
    const fd = sys.objGet(pin, pin);
    try {
      const info = sys.linkInfo(pin, fd);
      if (info.ifindex === ifindex) {
        sys.linkUpdate(`${program}@${ifname}`, fd, progFd);
        return { ifname, ifindex, program, linkId: info.id, replaced: true };
      }
      // The interface was deleted (and maybe re-created): that link is dead.
      logger.warn({ ifname, pin }, 'stale XDP link pin (interface re-created); attaching anew');
      fs.unlinkSync(pin);
    } finally {
      sys.closeFd(pin, fd);
    }
  }
  fs.mkdirSync(path.dirname(pin), { recursive: true });
  const link = create(progFd, ifname, ifindex, mode, logger);
  try {
    sys.objPin(pin, link.fd, pin);
    const info = sys.linkInfo(pin, link.fd);
    return { ifname, ifindex, program, linkId: info.id, mode: link.mode, replaced: false };
  } finally {
    sys.closeFd(pin, link.fd);
  }
}

/** Removes dvipa's link from `ifname`; the program detaches with the last reference. */
export function detachXdp(pinRoot: string, program: string, ifname: string): boolean {
  const pin = linkPinPath(pinRoot, program, ifname);
  if (!fs.existsSync(pin)) return false;
  fs.unlinkSync(pin);
  return true;
}

/** dvipa's pinned links under `pinRoot`. */
export function listLinks(pinRoot: string): Array<{ program: string; ifname: string; pin: string }> {
  const dir = path.join(pinRoot, 'links');
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).map((name) => {
    const at = name.indexOf('@');
    return { program: name.slice(0, at), ifname: name.slice(at + 1), pin: path.join(dir, name) };
  });
}
