/*
 * Host addresses on an interface over rtnetlink, through the addon's request transport: a
 * DVIPA taken, given up or looked for in tens of microseconds. An `ip` command forks the agent
 * (a few hundred MB), and even a long-lived `ip -batch` answers only when the scheduler runs
 * it: on a busy node either cost tens of milliseconds on a takeover's or handover's path.
 * Everything acts in the calling thread's network namespace.
 */
import { nlattr, nlattrs } from '../net/netlink.js';
import { sys } from './sys.js';

const RTM_NEWLINK = 16;
const RTM_GETLINK = 18;
const RTM_NEWADDR = 20;
const RTM_DELADDR = 21;
const RTM_GETADDR = 22;
const NLM_F_REPLACE = 0x100;
const NLM_F_CREATE = 0x400;
const NLM_F_DUMP = 0x300;
const IFLA_IFNAME = 3;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
/** An IPv6 address usable at once: no duplicate address detection (see hostAddress in net/iproute.ts). */
const IFA_F_NODAD = 0x02;
const AF_INET = 2;
const AF_INET6 = 10;
const IFINFOMSG_LEN = 16;
const IFADDRMSG_LEN = 8;

/** A host address: 4 bytes (IPv4) or 16 (IPv6), network order. */
export type HostAddress = Buffer;

/** The interface's index; throws (ENODEV) if there is none of that name. */
export function interfaceIndex(ifname: string): number {
  const name = Buffer.from(`${ifname}\0`);
  const req = Buffer.concat([Buffer.alloc(IFINFOMSG_LEN), nlattr(IFLA_IFNAME, name)]);
  const reply = sys.routeRequest(ifname, 'RTM_GETLINK', RTM_GETLINK, 0, req).find((m) => m.type === RTM_NEWLINK);
  if (!reply || reply.payload.length < IFINFOMSG_LEN) throw new Error(`${ifname}: RTM_GETLINK answered no link`);
  return reply.payload.readInt32LE(4);
}

function ifaddrmsg(ifindex: number, address: HostAddress): Buffer {
  const v6 = address.length === 16;
  const m = Buffer.alloc(IFADDRMSG_LEN);
  m.writeUInt8(v6 ? AF_INET6 : AF_INET, 0);
  m.writeUInt8(address.length * 8, 1);
  m.writeUInt8(v6 ? IFA_F_NODAD : 0, 2);
  m.writeUInt32LE(ifindex, 4);
  return m;
}

/** `ip address replace ADDRESS/32 (/128 nodad) dev IF`: the address, host-sized, on the interface. */
export function addHostAddress(what: string, ifindex: number, address: HostAddress): void {
  const req = Buffer.concat([ifaddrmsg(ifindex, address), nlattr(IFA_LOCAL, address), nlattr(IFA_ADDRESS, address)]);
  sys.routeRequest(what, 'RTM_NEWADDR', RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, req);
}

/** Deletes the host address from the interface; false if it was not there. */
export function deleteHostAddress(what: string, ifindex: number, address: HostAddress): boolean {
  const req = Buffer.concat([ifaddrmsg(ifindex, address), nlattr(IFA_LOCAL, address)]);
  try {
    sys.routeRequest(what, 'RTM_DELADDR', RTM_DELADDR, 0, req);
    return true;
  } catch (e) {
    if ((e as { code?: string }).code === 'EADDRNOTAVAIL') return false;
    throw e;
  }
}

/** The addresses on the interface (both families), as the kernel holds them. */
export function interfaceAddresses(what: string, ifindex: number): HostAddress[] {
  const out: HostAddress[] = [];
  for (const m of sys.routeRequest(what, 'RTM_GETADDR', RTM_GETADDR, NLM_F_DUMP, Buffer.alloc(IFADDRMSG_LEN))) {
    if (m.type !== RTM_NEWADDR || m.payload.length < IFADDRMSG_LEN || m.payload.readUInt32LE(4) !== ifindex) continue;
    const a = new Map(nlattrs(m.payload, IFADDRMSG_LEN));
    const address = a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS);
    if (address) out.push(Buffer.from(address));
  }
  return out;
}
