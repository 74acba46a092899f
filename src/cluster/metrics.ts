/*
 * The agent's Prometheus metrics (prom-client), served over HTTP at /metrics. Gauges read
 * the maps and the agent's tables when scraped, so nothing is counted twice and a restarted
 * agent reports what the pinned data plane counted all along.
 */
import * as http from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { IpsecDvipaRow, VdptRow } from './views.js';

/** What the metrics read, at each scrape. */
export interface MetricsSource {
  vdpt(): VdptRow[];
  /** Counted by the kernel, or else off the event loop (a full CRT takes most of a second to read). */
  crtEntries(): Promise<number>;
  /** Connections a target confirmed that the full table of confirmed ones refused. */
  crtConfirmRefused(): number;
  /** The targets' next hops following the kernel (dataplane/nexthops.ts). */
  nexthops(): { resolves: number; changed: number; overflows: number };
  /** Target side: received through routing nodes, per DVIPA:port. */
  served(): Array<{ vip: string; port: number; protocol: string; packets: bigint; bytes: bigint }>;
  reasons(): Record<string, bigint>;
  messageRejects(): Record<string, number>;
  couplingUp(): boolean | undefined;
  /** Times this node's etcd lease expired; undefined without etcd. */
  leasesLost(): number | undefined;
  /** IPsec recovery's rows; undefined while it is off. */
  ipsec(): IpsecDvipaRow[] | undefined;
}

export class AgentMetrics {
  readonly registry = new Registry();
  private server?: http.Server;
  readonly ownershipChanges: Counter<'dvipa' | 'how'>;
  readonly ownershipSeconds: Histogram<'how'>;
  /** The DPT rows of the scrape in progress: nine gauges read them, the agent builds them once. */
  private rowsOfScrape?: VdptRow[];
  /** Likewise the IPsec rows (a dump of the kernel's SAs), once per scrape. */
  private ipsecOfScrape?: IpsecDvipaRow[];

  constructor(source: MetricsSource) {
    const r = this.registry;
    const rows = () => (this.rowsOfScrape ??= source.vdpt());
    const ipsec = () => (this.ipsecOfScrape ??= source.ipsec() ?? []);
    const svcLabels = ['dvipa', 'port', 'protocol'] as const;
    const targetLabels = ['dvipa', 'port', 'protocol', 'target'] as const;
    const perService = (name: string, help: string, pick: (s: NonNullable<VdptRow['service']>) => bigint) =>
      new Gauge({
        name,
        help,
        labelNames: svcLabels,
        registers: [r],
        collect() {
          this.reset();
          const seen = new Set<string>();
          for (const row of rows()) {
            const key = `${row.dvipa}:${row.port}/${row.protocol}`;
            if (!row.service || seen.has(key)) continue;
            seen.add(key);
            this.set({ dvipa: row.dvipa, port: row.port, protocol: row.protocol }, Number(pick(row.service)));
          }
        },
      });
    perService(
      'dvipa_service_packets_total',
      'packets the distributor handled for the service (counter)',
      (s) => s.packets,
    );
    perService('dvipa_service_bytes_total', 'bytes the distributor handled for the service (counter)', (s) => s.bytes);
    perService(
      'dvipa_service_new_connections_total',
      'connections the distributor placed by the Maglev table (counter)',
      (s) => s.crtNew,
    );
    perService(
      'dvipa_service_recovered_total',
      'mid-connection packets without a CRT entry, routed by the hash (counter)',
      (s) => s.recovered,
    );
    perService(
      'dvipa_service_guarded_total',
      'new flows forwarded by the Maglev table without a CRT entry: over the new-flow rate guard (counter)',
      (s) => s.crtGuarded,
    );
    perService(
      'dvipa_service_dropped_total',
      'packets of the service dropped (counter; reasons in dvipa_drops_total)',
      (s) => s.dropped,
    );
    const perTarget = (name: string, help: string, pick: (row: VdptRow) => number) =>
      new Gauge({
        name,
        help,
        labelNames: targetLabels,
        registers: [r],
        collect() {
          this.reset();
          for (const row of rows())
            this.set({ dvipa: row.dvipa, port: row.port, protocol: row.protocol, target: row.target }, pick(row));
        },
      });
    perTarget(
      'dvipa_target_connections_active',
      'connections the target reports now (ActiveConn)',
      (row) => row.activeConn,
    );
    perTarget(
      'dvipa_target_connections_total',
      "new connections this node's data plane sent to the target (TotalConn)",
      (row) => row.totalConn,
    );
    perTarget(
      'dvipa_target_sent_packets_total',
      "packets this node's data plane sent to the target for the DVIPA:port (counter)",
      (row) => Number(row.sent.packets),
    );
    perTarget(
      'dvipa_target_sent_bytes_total',
      "bytes (frames from L2 on) this node's data plane sent to the target for the DVIPA:port (counter)",
      (row) => Number(row.sent.bytes),
    );
    perTarget('dvipa_target_ready', '1 while an application listens on the service on the target (Rdy)', (row) =>
      row.ready ? 1 : 0,
    );
    perTarget('dvipa_target_weight', "the target's weight in the Maglev table now (WLM)", (row) => row.weight);
    const received = (name: string, help: string, pick: (s: { packets: bigint; bytes: bigint }) => bigint) =>
      new Gauge({
        name,
        help,
        labelNames: svcLabels,
        registers: [r],
        collect() {
          this.reset();
          for (const s of source.served())
            this.set({ dvipa: s.vip, port: s.port, protocol: s.protocol }, Number(pick(s)));
        },
      });
    received(
      'dvipa_target_received_packets_total',
      'on a target: packets it received through routing nodes for the DVIPA:port (counter)',
      (s) => s.packets,
    );
    received(
      'dvipa_target_received_bytes_total',
      'on a target: bytes (IP) it received through routing nodes for the DVIPA:port (counter)',
      (s) => s.bytes,
    );
    new Gauge({
      name: 'dvipa_crt_entries',
      help: 'entries in the connection routing table: confirmed connections and unconfirmed flows',
      registers: [r],
      async collect() {
        this.set(await source.crtEntries());
      },
    });
    /** A gauge of one value read at each scrape; absent while `read` says undefined. */
    const single = (name: string, help: string, read: () => number | undefined) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          this.reset();
          const v = read();
          if (v !== undefined) this.set(v);
        },
      });
    single(
      'dvipa_crt_confirm_refused_total',
      'connections targets confirmed that did not fit the full table of confirmed ones, so stayed evictable (counter)',
      () => source.crtConfirmRefused(),
    );
    single(
      'dvipa_nexthop_resolves_total',
      "times the targets' next hops were resolved again after rtnetlink events, at most one each 10 ms (counter)",
      () => source.nexthops().resolves,
    );
    single(
      'dvipa_nexthop_changes_total',
      "targets' next hops rewritten in the data plane (counter)",
      () => source.nexthops().changed,
    );
    single(
      'dvipa_rtnetlink_overflows_total',
      "wakeups that found rtnetlink events lost to a full receive buffer; every target's next hop was resolved again (counter)",
      () => source.nexthops().overflows,
    );
    new Gauge({
      name: 'dvipa_verdicts_total',
      help: "the data plane's verdicts by reason (counter; drop_* are drops)",
      labelNames: ['reason'],
      registers: [r],
      collect() {
        for (const [reason, n] of Object.entries(source.reasons())) this.set({ reason }, Number(n));
      },
    });
    new Gauge({
      name: 'dvipa_message_rejects_total',
      help: 'messages from other nodes refused, by reason (counter)',
      labelNames: ['reason'],
      registers: [r],
      collect() {
        this.reset();
        for (const [reason, n] of Object.entries(source.messageRejects())) this.set({ reason }, n);
      },
    });
    single('dvipa_coupling_facility_up', '1 while etcd answers (0: nothing changes owner); absent without etcd', () => {
      const up = source.couplingUp();
      return up === undefined ? undefined : up ? 1 : 0;
    });
    single(
      'dvipa_coupling_leases_lost_total',
      "times this node's etcd lease expired, its owner keys with it, and the agent rejoined with a new one (counter; absent without etcd)",
      () => source.leasesLost(),
    );
    new Gauge({
      name: 'dvipa_ipsec_sas',
      help: 'IPsec SAs of the DVIPA held here, by source: negotiated here or reinstalled from the coupling facility',
      labelNames: ['dvipa', 'source'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of ipsec()) {
          for (const from of ['negotiated', 'reinstalled'] as const)
            if (d.owner) this.set({ dvipa: d.dvipa, source: from }, d.sas.filter((s) => s.source === from).length);
        }
      },
    });
    new Gauge({
      name: 'dvipa_ipsec_last_reinstall_seconds',
      help: "seconds the DVIPA's last re-install of IPsec SAs here took, records rewritten included (the address moved once the SAs and policies were in)",
      labelNames: ['dvipa'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of ipsec()) if (d.lastReinstall) this.set({ dvipa: d.dvipa }, d.lastReinstall.tookMs / 1000);
      },
    });
    new Gauge({
      name: 'dvipa_ipsec_records_refused',
      help: "records the DVIPA's last re-install here refused (another key, corrupt, a deposed owner's) or could not install",
      labelNames: ['dvipa'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of ipsec())
          if (d.lastReinstall)
            this.set({ dvipa: d.dvipa }, d.lastReinstall.refused.length + d.lastReinstall.failed.length);
      },
    });
    new Gauge({
      name: 'dvipa_ipsec_ike_sas',
      help: "IKE SAs of the DVIPA held by this node's charon, by source: negotiated here, renegotiated after a takeover, or inherited (a predecessor's, not renegotiated)",
      labelNames: ['dvipa', 'source'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of ipsec())
          for (const source of ['negotiated', 'renegotiated', 'inherited'])
            if (d.ike) this.set({ dvipa: d.dvipa, source }, d.ike.filter((p) => p.source === source).length);
      },
    });
    new Counter({
      name: 'dvipa_ipsec_renegotiations_total',
      help: 'peers whose IKE SA this node renegotiated after winning the DVIPA, or failed to',
      labelNames: ['dvipa', 'result'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of ipsec())
          if (d.renegotiations)
            for (const result of ['renegotiated', 'failed'] as const)
              this.inc({ dvipa: d.dvipa, result }, d.renegotiations[result]);
      },
    });
    new Gauge({
      name: 'dvipa_ipsec_last_renegotiation_seconds',
      help: "seconds the DVIPA's last renegotiation here took: from its kernel SAs re-installed to all its peers' CHILD SAs negotiated again (or given up)",
      labelNames: ['dvipa'],
      registers: [r],
      collect() {
        this.reset();
        for (const d of ipsec())
          if (d.lastRenegotiation) this.set({ dvipa: d.dvipa }, d.lastRenegotiation.tookMs / 1000);
      },
    });
    this.ownershipChanges = new Counter({
      name: 'dvipa_ownership_changes_total',
      help: 'DVIPAs this node took: takeover, takeback, move, adopted',
      labelNames: ['dvipa', 'how'],
      registers: [r],
    });
    this.ownershipSeconds = new Histogram({
      name: 'dvipa_ownership_change_seconds',
      help: 'takeover: seconds the DVIPA had no owner; takeback and move: seconds from the decision to the address announced',
      labelNames: ['how'],
      buckets: [0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10],
      registers: [r],
    });
  }

  async listen(address: string, log: Logger): Promise<void> {
    const i = address.lastIndexOf(':');
    const host = address.slice(0, i).replace(/^\[|\]$/g, '');
    const port = Number(address.slice(i + 1));
    this.server = http.createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('dvipa agent: metrics are at /metrics\n');
        return;
      }
      this.rowsOfScrape = undefined;
      this.ipsecOfScrape = undefined;
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (e: Error) => res.writeHead(500).end(`${e.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(port, host, () => resolve());
    });
    log.info({ address }, 'metrics at /metrics');
  }

  async stop(): Promise<void> {
    if (this.server) await new Promise((resolve) => this.server!.close(resolve));
  }
}
