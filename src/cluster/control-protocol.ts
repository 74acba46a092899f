/*
 * The control socket's protocol: one JSON request per line, one JSON answer per line.
 * Requests carry the protocol version `v` (a request without one is read as version 1, what
 * clients before the field sent); an agent answers a version it does not speak with an
 * error, not a guess. Every request and its reply are typed here, so `dvipa netstat`, the
 * lab and the agent cannot disagree silently.
 */
import type { CouplingConfig } from '../config/model.js';
import { canonicalIp } from '../net/addr.js';
import type { CouplingState, IpsecDvipaRow, MemberRow, VcrtFilter, VcrtView, VdptRow, VipadynRow } from './views.js';

export const CONTROL_PROTOCOL_VERSION = 1;
/** Requests are a command and a few filters: far below this. */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Each command's arguments. */
export interface ControlArgs {
  vdpt: Record<string, never>;
  vcrt: VcrtFilter;
  vipadyn: Record<string, never>;
  vipadcfg: Record<string, never>;
  ipsec: Record<string, never>;
  members: Record<string, never>;
}

/** Each command's reply. */
export interface ControlReplies {
  vdpt: VdptRow[];
  vcrt: VcrtView;
  vipadyn: { coupling?: CouplingState; dvipas: VipadynRow[] };
  vipadcfg: { node: string; profile: string; coupling?: CouplingConfig };
  ipsec: IpsecDvipaRow[];
  /** The members found through etcd, and the member records refused, by reason. */
  members: { members: MemberRow[]; refused: Record<string, number> };
}

export type ControlCommand = keyof ControlArgs;
export const CONTROL_COMMANDS: readonly ControlCommand[] = ['vdpt', 'vcrt', 'vipadyn', 'vipadcfg', 'ipsec', 'members'];

export type ControlRequest = {
  [C in ControlCommand]: { v?: typeof CONTROL_PROTOCOL_VERSION; cmd: C; args?: ControlArgs[C] };
}[ControlCommand];

export type ControlAnswer<T = unknown> =
  | { v: typeof CONTROL_PROTOCOL_VERSION; ok: true; data: T }
  | { v: typeof CONTROL_PROTOCOL_VERSION; ok: false; error: string };

/** What an agent does with each command. */
/** A handler may answer later (the CRT is read off the event loop). */
export type ControlHandlers = {
  [C in ControlCommand]: (args: ControlArgs[C]) => ControlReplies[C] | Promise<ControlReplies[C]>;
};

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

function vcrtFilter(args: Record<string, unknown>): VcrtFilter {
  const f: VcrtFilter = {};
  for (const k of ['dvipa', 'client'] as const) {
    const v = args[k];
    if (v === undefined) continue;
    if (typeof v !== 'string') throw new Error(`vcrt: ${k} must be an IPv4 or IPv6 address`);
    f[k] = canonicalIp(v);
  }
  for (const [k, min, max] of [
    ['port', 1, 65535],
    ['limit', 1, Number.MAX_SAFE_INTEGER],
  ] as const) {
    const v = args[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      throw new Error(`vcrt: ${k} must be a whole number from ${min} to ${max}`);
    f[k] = v;
  }
  return f;
}

/** A request line, checked: known version, known command, arguments of the right types. Throws saying what is wrong. */
export function parseControlRequest(line: string): ControlRequest {
  const req: unknown = JSON.parse(line);
  if (!isObject(req) || typeof req.cmd !== 'string') throw new Error('expected {"v": 1, "cmd": ...}');
  const v = req.v ?? CONTROL_PROTOCOL_VERSION;
  if (v !== CONTROL_PROTOCOL_VERSION)
    throw new Error(`control protocol version ${JSON.stringify(v)}: this agent speaks ${CONTROL_PROTOCOL_VERSION}`);
  const cmd = req.cmd as ControlCommand;
  if (!CONTROL_COMMANDS.includes(cmd)) throw new Error(`unknown request ${req.cmd} (${CONTROL_COMMANDS.join(', ')})`);
  if (req.args !== undefined && !isObject(req.args)) throw new Error(`${cmd}: args must be an object`);
  if (cmd === 'vcrt') return { v, cmd, args: vcrtFilter(req.args ?? {}) };
  return { v, cmd, args: {} };
}

/** Runs the handler the request names. */
export function dispatch(handlers: ControlHandlers, req: ControlRequest): unknown {
  return (handlers[req.cmd] as (args: unknown) => unknown)(req.args ?? {});
}
