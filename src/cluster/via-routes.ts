/*
 * VIPAROUTE on a node: where this node, routing, encapsulates a target's packets (another of
 * the target's addresses), and which addresses it takes tunnelled packets at itself besides
 * its cluster address (those every node's VIPAROUTE names for it). XDP cannot resolve a
 * neighbour, and nothing else talks to a VIPAROUTE address, so a datagram to its discard port
 * keeps its next hop resolved.
 */
import * as dgram from 'node:dgram';
import type { ClusterConfig, NodeSpec } from '../config/model.js';
import type { FastPath } from '../dataplane/fastpath.js';

const DISCARD_PORT = 9;
/** How often the next hops of VIPAROUTE addresses are refreshed. */
const REFRESH_MS = 5000;

export class ViaRoutes {
  private socket?: dgram.Socket;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly fp: FastPath,
    private readonly node: NodeSpec,
    private readonly config: ClusterConfig,
  ) {}

  start(): void {
    const own = this.node.vipaDynamic.route ?? [];
    this.fp.setViaRoutes(new Map(own.map((r) => [r.xcf, r.via])));
    const forMe = this.config.nodes.flatMap((n) => n.vipaDynamic.route ?? []).filter((r) => r.xcf === this.node.xcf);
    this.fp.setDecapAddrs([...new Set(forMe.map((r) => r.via))]);
    const vias = [...new Set(own.map((r) => r.via))];
    if (!vias.length) return;
    const socket = dgram.createSocket('udp4');
    socket.on('error', () => undefined);
    const refresh = () => vias.forEach((v) => socket.send(Buffer.alloc(0), DISCARD_PORT, v, () => undefined));
    refresh();
    this.timer = setInterval(refresh, REFRESH_MS);
    this.socket = socket;
  }

  stop(): void {
    clearInterval(this.timer);
    this.socket?.close();
  }
}
