/*
 * The messages agents exchange, after the seeds: the routing node's VIPA list, targets'
 * SRVSTAT (listeners and load), NEWCONN/TERMCONN (connections, batched), DVIPA (a node
 * took a DVIPA over, back, or by a move), HOLD/HOLDACK and RELEASED (ownership, docs/ha.md).
 * Payloads are JSON; every field is checked on receipt, since a peer with the key can still
 * be buggy. What a routing node says about a DVIPA carries its epoch: receivers refuse what
 * an owner deposed since then says.
 */
import { DvipaError } from '../errors.js';
import { ipFamily, canonicalIpv6 } from '../net/addr.js';

export enum MsgType {
  Hello = 0,
  VipaList = 1,
  SrvStat = 2,
  Conns = 3,
  Dvipa = 4,
  Auth = 5,
  Ping = 6,
  Hold = 7,
  HoldAck = 8,
  Released = 9,
}

/** Opens a handshake: who, a fresh nonce and an ephemeral X25519 public key (hex). It proves nothing by itself. */
export interface Hello {
  node: string;
  nonce: string;
  eph: string;
  /** The sender's run: new each time its agent starts, so a peer can tell a restart from a reconnection. */
  run: string;
}

/** Closes a handshake: the sender's proof over both HELLOs (an Ed25519 signature, or an HMAC with the cluster key). */
export interface Auth {
  proof: string;
}

export interface ServiceRef {
  dvipa: string;
  port: number;
  protocol: 'tcp' | 'udp';
}

/** What a routing node distributes, and to whom (DESTIP ALL: every node). `epoch`: 0 while it does not own the DVIPA. */
export interface VipaList {
  dvipas: Array<{
    address: string;
    epoch: number;
    services: Array<{ port: number; protocol: 'tcp' | 'udp'; targets: string[] | 'all' }>;
  }>;
}

/** A node routes `address` from now on, under `epoch`: targets send it everything they have. */
export interface DvipaChange {
  address: string;
  owner: string;
  epoch: number;
  event: 'takeover' | 'takeback' | 'move' | 'adopted';
}

/**
 * HOLD: the owner of `address` (under `epoch`) is alive, to each other candidate routing node.
 * HOLDACK: the candidate will not take it over for a claim delay from receipt (docs/ha.md).
 */
export interface Hold {
  address: string;
  epoch: number;
  seq: number;
}

/**
 * RELEASED: the previous owner of `address` no longer holds the address (its stack answers
 * no ARP or NS for it), said to the owner at `epoch`, which replaced it while it was alive
 * and takes the address only then (docs/ha.md, voluntary handovers).
 */
export interface Released {
  address: string;
  epoch: number;
}

/** A target's listeners on DVIPAs it serves. `full`: the complete set, replacing earlier reports. */
export interface SrvStat {
  full: boolean;
  up: ServiceRef[];
  down: ServiceRef[];
  load?: number;
}

export interface ConnRef {
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  protocol: 'tcp' | 'udp';
}

/** NEWCONN and TERMCONN in one batch. `full`: `added` is every connection the target has. */
export interface Conns {
  full: boolean;
  added: ConnRef[];
  removed: ConnRef[];
}

export type Message =
  | { type: MsgType.Hello; body: Hello }
  | { type: MsgType.Auth; body: Auth }
  | { type: MsgType.Ping; body: Record<string, never> }
  | { type: MsgType.VipaList; body: VipaList }
  | { type: MsgType.SrvStat; body: SrvStat }
  | { type: MsgType.Conns; body: Conns }
  | { type: MsgType.Dvipa; body: DvipaChange }
  | { type: MsgType.Hold | MsgType.HoldAck; body: Hold }
  | { type: MsgType.Released; body: Released };

export class InvalidMessage extends DvipaError {}

/** At most this many DVIPAs in a VIPA list, and services per DVIPA: each DVIPA served is an address bound on lo. */
export const MAX_VIPAS = 256;

/** At most this many connections in one Conns message; larger sets are split by the sender. */
export const MAX_CONNS_PER_MESSAGE = 8192;

type Json = unknown;

function obj(v: Json, what: string, keys: string[]): Record<string, Json> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new InvalidMessage(`${what}: expected an object`);
  for (const k of Object.keys(v)) if (!keys.includes(k)) throw new InvalidMessage(`${what}: unexpected field ${k}`);
  return v as Record<string, Json>;
}

function arr(v: Json, what: string, max: number): Json[] {
  if (!Array.isArray(v)) throw new InvalidMessage(`${what}: expected a list`);
  if (v.length > max) throw new InvalidMessage(`${what}: ${v.length} entries, at most ${max}`);
  return v;
}

/** An address as peers write it: IPv4, or IPv6 in RFC 5952 form only (one spelling, one key). */
function addr(v: Json, what: string): string {
  const family = typeof v === 'string' ? ipFamily(v) : undefined;
  if (family === 4 || (family === 6 && canonicalIpv6(v as string) === v)) return v as string;
  throw new InvalidMessage(`${what}: expected an IPv4 address or an IPv6 address in RFC 5952 form`);
}

function port(v: Json, what: string, min = 1): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 65535)
    throw new InvalidMessage(`${what}: expected a port`);
  return v;
}

function protocol(v: Json, what: string): 'tcp' | 'udp' {
  if (v !== 'tcp' && v !== 'udp') throw new InvalidMessage(`${what}: expected tcp or udp`);
  return v;
}

function bool(v: Json, what: string): boolean {
  if (typeof v !== 'boolean') throw new InvalidMessage(`${what}: expected true or false`);
  return v;
}

function epoch(v: Json, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)
    throw new InvalidMessage(`${what}: expected an epoch (integer >= 0)`);
  return v;
}

function hex(v: Json, what: string, min: number, max = min): string {
  if (typeof v !== 'string' || !/^(?:[0-9a-f]{2})+$/.test(v) || v.length < 2 * min || v.length > 2 * max) {
    throw new InvalidMessage(`${what}: expected ${min === max ? min : `${min} to ${max}`} bytes in hex`);
  }
  return v;
}

function serviceRef(v: Json, what: string): ServiceRef {
  const o = obj(v, what, ['dvipa', 'port', 'protocol']);
  return {
    dvipa: addr(o.dvipa, `${what}.dvipa`),
    port: port(o.port, `${what}.port`),
    protocol: protocol(o.protocol, `${what}.protocol`),
  };
}

function connRef(v: Json, what: string): ConnRef {
  const o = obj(v, what, ['saddr', 'daddr', 'sport', 'dport', 'protocol']);
  return {
    saddr: addr(o.saddr, `${what}.saddr`),
    daddr: addr(o.daddr, `${what}.daddr`),
    sport: port(o.sport, `${what}.sport`),
    dport: port(o.dport, `${what}.dport`),
    protocol: protocol(o.protocol, `${what}.protocol`),
  };
}

function validate(type: MsgType, v: Json): Message {
  switch (type) {
    case MsgType.Hello: {
      const o = obj(v, 'HELLO', ['node', 'nonce', 'eph', 'run']);
      if (typeof o.node !== 'string' || !/^[\w.-]{1,64}$/.test(o.node))
        throw new InvalidMessage('HELLO.node: expected a node name');
      const body = { node: o.node, nonce: hex(o.nonce, 'HELLO.nonce', 16), eph: hex(o.eph, 'HELLO.eph', 32) };
      return { type, body: { ...body, run: hex(o.run, 'HELLO.run', 8) } };
    }
    case MsgType.Auth:
      return { type, body: { proof: hex(obj(v, 'AUTH', ['proof']).proof, 'AUTH.proof', 32, 64) } };
    case MsgType.Ping:
      obj(v, 'PING', []);
      return { type, body: {} };
    case MsgType.VipaList: {
      const o = obj(v, 'VIPALIST', ['dvipas']);
      const dvipas = arr(o.dvipas, 'VIPALIST.dvipas', MAX_VIPAS).map((d, i) => {
        const at = `VIPALIST.dvipas[${i}]`;
        const od = obj(d, at, ['address', 'epoch', 'services']);
        return {
          address: addr(od.address, `${at}.address`),
          epoch: epoch(od.epoch, `${at}.epoch`),
          services: arr(od.services, `${at}.services`, MAX_VIPAS).map((s, j) => {
            const os = obj(s, `${at}.services[${j}]`, ['port', 'protocol', 'targets']);
            const targets =
              os.targets === 'all'
                ? ('all' as const)
                : arr(os.targets, `${at}.services[${j}].targets`, 1024).map((t, k) =>
                    addr(t, `${at}.services[${j}].targets[${k}]`),
                  );
            return {
              port: port(os.port, `${at}.services[${j}].port`, 0),
              protocol: protocol(os.protocol, `${at}.services[${j}].protocol`),
              targets,
            };
          }),
        };
      });
      return { type, body: { dvipas } };
    }
    case MsgType.SrvStat: {
      const o = obj(v, 'SRVSTAT', ['full', 'up', 'down', 'load']);
      const body: SrvStat = {
        full: bool(o.full, 'SRVSTAT.full'),
        up: arr(o.up, 'SRVSTAT.up', 4096).map((x, i) => serviceRef(x, `SRVSTAT.up[${i}]`)),
        down: arr(o.down, 'SRVSTAT.down', 4096).map((x, i) => serviceRef(x, `SRVSTAT.down[${i}]`)),
      };
      if (o.load !== undefined) {
        if (typeof o.load !== 'number' || !(o.load >= 0 && o.load <= 1))
          throw new InvalidMessage('SRVSTAT.load: expected a number from 0 to 1');
        body.load = o.load;
      }
      return { type, body };
    }
    case MsgType.Conns: {
      const o = obj(v, 'CONNS', ['full', 'added', 'removed']);
      return {
        type,
        body: {
          full: bool(o.full, 'CONNS.full'),
          added: arr(o.added, 'CONNS.added', MAX_CONNS_PER_MESSAGE).map((x, i) => connRef(x, `CONNS.added[${i}]`)),
          removed: arr(o.removed, 'CONNS.removed', MAX_CONNS_PER_MESSAGE).map((x, i) =>
            connRef(x, `CONNS.removed[${i}]`),
          ),
        },
      };
    }
    case MsgType.Dvipa: {
      const o = obj(v, 'DVIPA', ['address', 'owner', 'epoch', 'event']);
      if (typeof o.owner !== 'string' || !/^[\w.-]{1,64}$/.test(o.owner))
        throw new InvalidMessage('DVIPA.owner: expected a node name');
      if (!['takeover', 'takeback', 'move', 'adopted'].includes(o.event as string))
        throw new InvalidMessage('DVIPA.event: expected takeover, takeback, move or adopted');
      const e = epoch(o.epoch, 'DVIPA.epoch');
      if (e === 0) throw new InvalidMessage('DVIPA.epoch: an owner has an epoch of at least 1');
      return {
        type,
        body: {
          address: addr(o.address, 'DVIPA.address'),
          owner: o.owner,
          epoch: e,
          event: o.event as DvipaChange['event'],
        },
      };
    }
    case MsgType.Hold:
    case MsgType.HoldAck: {
      const what = type === MsgType.Hold ? 'HOLD' : 'HOLDACK';
      const o = obj(v, what, ['address', 'epoch', 'seq']);
      const e = epoch(o.epoch, `${what}.epoch`);
      if (e === 0) throw new InvalidMessage(`${what}.epoch: an owner has an epoch of at least 1`);
      if (typeof o.seq !== 'number' || !Number.isSafeInteger(o.seq) || o.seq < 0)
        throw new InvalidMessage(`${what}.seq: expected an integer >= 0`);
      return { type, body: { address: addr(o.address, `${what}.address`), epoch: e, seq: o.seq } };
    }
    case MsgType.Released: {
      const o = obj(v, 'RELEASED', ['address', 'epoch']);
      const e = epoch(o.epoch, 'RELEASED.epoch');
      if (e === 0) throw new InvalidMessage('RELEASED.epoch: an owner has an epoch of at least 1');
      return { type, body: { address: addr(o.address, 'RELEASED.address'), epoch: e } };
    }
    default:
      throw new InvalidMessage(`unknown message type ${type as number}`);
  }
}

export function decodeMessage(type: number, payload: Buffer): Message {
  let json: Json;
  try {
    json = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new InvalidMessage('payload is not JSON');
  }
  return validate(type, json);
}

export function encodeMessage(m: Message): Buffer {
  return Buffer.from(JSON.stringify(m.body));
}
