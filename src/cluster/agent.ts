/*
 * The agent on every node. From the configuration it knows, per DVIPA, whether it routes,
 * backs up or is a candidate target; it runs the routing side (router.ts) for the DVIPAs it
 * owns and the target side (target.ts) for those it serves, and connects them to the other
 * agents through the authenticated transport. A routing node sends its VIPA list to every
 * peer as it connects; a target sends everything it has to a routing node as it connects.
 */
import { FastPath } from '../dataplane/fastpath.js';
import type { ClusterConfig, NodeSpec } from '../config/model.js';
import { planDvipas, rolesOf, type DvipaPlan } from './roles.js';
import { Transport, DEFAULT_PORT } from './transport.js';
import { MsgType, type Message } from './messages.js';
import { RoutingRole } from './router.js';
import { TargetRole, type TargetOptions } from './target.js';
import type { Logger } from '../log.js';

export interface AgentOptions extends TargetOptions {
  config: ClusterConfig;
  node: string;
  key: Buffer;
  pinRoot?: string;
  port?: number;
  logger: Logger;
}

export class Agent {
  private readonly node: NodeSpec;
  private readonly plans: Map<string, DvipaPlan>;
  private readonly fp: FastPath;
  private readonly transport: Transport;
  private readonly router: RoutingRole;
  private readonly target: TargetRole;
  private readonly log: Logger;

  constructor(private readonly opts: AgentOptions) {
    const node = opts.config.nodes.find((n) => n.name === opts.node);
    if (!node) throw new Error(`node ${opts.node} is not in the configuration`);
    this.node = node;
    this.log = opts.logger.child({ node: node.name });
    this.plans = planDvipas(opts.config);
    this.fp = FastPath.open({ pinRoot: opts.pinRoot, logger: this.log });
    const peers = [
      ...opts.config.nodes.filter((n) => n.name !== node.name).map((n) => ({ name: n.name, xcf: n.xcf })),
      ...opts.config.peers,
    ].map((p) => ({ name: p.name, host: p.xcf, port: opts.port ?? DEFAULT_PORT }));
    this.transport = new Transport({ node: node.name, key: opts.key, listen: { host: node.xcf, port: opts.port ?? DEFAULT_PORT }, peers, logger: this.log });
    this.router = new RoutingRole(this.fp, node, opts.config, this.plans, this.log);
    this.target = new TargetRole(this.fp, node, this.plans, opts, this.log, (router, m) => this.deliver(router, m));
  }

  async start(): Promise<void> {
    this.fp.configure({ clusterAddr: this.node.xcf });
    const roles = rolesOf(this.opts.config, this.node.name);
    for (const [dvipa, rs] of roles) {
      if (rs.some((r) => r.kind === 'target')) this.target.serve(dvipa);
      if (rs.some((r) => r.kind === 'routing')) this.router.route(this.plans.get(dvipa)!);
    }
    this.transport.on('message', (peer, m) => this.onMessage(peer, m));
    this.transport.on('peerUp', (peer) => {
      this.log.info({ peer }, 'peer connected');
      if (this.router.active) this.transport.send(peer, this.router.vipaList());
      this.target.report(peer);
    });
    this.transport.on('peerDown', (peer) => {
      this.log.warn({ peer }, 'peer disconnected');
      const xcf = this.xcfOf(peer);
      if (xcf) this.router.targetGone(xcf);
    });
    await this.transport.start();
    this.target.start();
    this.log.info({ roles: Object.fromEntries([...roles].map(([d, rs]) => [d, rs.map((r) => r.kind)])) }, 'agent started');
  }

  /** Stops the control plane only: programs and maps stay pinned and keep forwarding. */
  async stop(): Promise<void> {
    this.target.stop();
    this.router.stop();
    await this.transport.stop();
    this.fp.close();
  }

  /** A target's report to a routing node, which may be this node itself. */
  private deliver(router: string, m: Message): void {
    if (router === this.node.name) this.onMessage(router, m);
    else this.transport.send(router, m);
  }

  private xcfOf(peer: string): string | undefined {
    return this.opts.config.nodes.find((n) => n.name === peer)?.xcf ?? this.opts.config.peers.find((p) => p.name === peer)?.xcf;
  }

  private onMessage(peer: string, m: Message): void {
    const xcf = this.xcfOf(peer);
    if (!xcf) return;
    switch (m.type) {
      case MsgType.SrvStat:
        return this.router.onSrvStat(peer, xcf, m.body);
      case MsgType.Conns:
        return this.router.onConns(xcf, m.body);
      case MsgType.VipaList:
        return this.target.learnVipaList(peer, m.body);
    }
  }
}
