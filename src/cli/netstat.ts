/*
 * `dvipa netstat vdpt|vcrt|vipadyn|vipadcfg|ipsec|members`: the local agent's tables, laid out as z/OS
 * NETSTAT shows them (same names and columns), plus what Linux adds (epoch, origin of a CRT
 * entry, the previous owner a new one still distributes like). `--json` gives the data.
 */
import type { Argv } from 'yargs';
import { askAgent, toJson } from '../cluster/control.js';
import { DEFAULTS } from '../config/settings.js';
import type { ControlArgs, ControlCommand, ControlReplies } from '../cluster/control-protocol.js';
import type { MemberRow } from '../cluster/views.js';
import { canonicalIp } from '../net/addr.js';
import { command } from './command.js';
import { CliError, EXIT } from './errors.js';

interface Args {
  socket: string;
  json?: boolean;
  detail?: boolean;
  dvipa?: string;
  port?: number;
  client?: string;
  limit?: number;
}

async function ask<C extends ControlCommand>(a: Args, cmd: C, args?: ControlArgs[C]): Promise<ControlReplies[C]> {
  try {
    return await askAgent(a.socket, { cmd, args });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED')
      throw new CliError(
        `no agent answers on ${a.socket}: start it (dvipa agent ...) or give its --socket`,
        EXIT.noAgent,
      );
    if (code === 'EACCES' || code === 'EPERM')
      throw new CliError(`${a.socket}: permission denied (the agent's socket is root's only)`, EXIT.notPermitted);
    throw new CliError(`${a.socket}: ${(e as Error).message}`);
  }
}

const pad = (n: number, width = 10) => String(n).padStart(width, '0');
/** An address column: 16 wide as z/OS prints IPv4, wider for the IPv6 addresses it holds. */
const columnWidth = (values: string[]) => Math.max(16, ...values.map((v) => v.length + 1));
const out = (s: string): void => {
  process.stdout.write(s);
};

function checkFilters(a: Args): void {
  for (const name of ['dvipa', 'client'] as const) {
    const v = a[name];
    if (v === undefined) continue;
    try {
      // One spelling: an IPv6 filter matches rows whichever way it was typed.
      a[name] = canonicalIp(v);
    } catch {
      throw new CliError(`--${name} ${v}: not an IPv4 or IPv6 address`, EXIT.usage);
    }
  }
  if (a.port !== undefined && (!Number.isInteger(a.port) || a.port < 1 || a.port > 65535))
    throw new CliError('--port must be from 1 to 65535', EXIT.usage);
  if (a.limit !== undefined && (!Number.isInteger(a.limit) || a.limit < 1))
    throw new CliError('--limit must be a whole number of at least 1', EXIT.usage);
}

async function vdpt(a: Args): Promise<void> {
  checkFilters(a);
  const rows = (await ask(a, 'vdpt')).filter(
    (r) => (!a.dvipa || r.dvipa === a.dvipa) && (!a.port || r.port === a.port),
  );
  if (a.dvipa && !rows.length)
    throw new CliError(`${a.dvipa}${a.port ? `..${a.port}` : ''}: no such distributed DVIPA on this node`);
  if (a.json) return out(`${toJson(rows)}\n`);
  out('DYNAMIC VIPA DESTINATION PORT TABLE:\n');
  for (const r of rows) {
    out(`DEST:         ${r.dvipa}..${r.port}\n`);
    out(`  DESTXCF:    ${r.target}\n`);
    // TSR (target server responsiveness): dvipa knows whether the listener is up, not its accept queue.
    out(
      `  TOTALCONN:  ${pad(r.totalConn)}  RDY: ${pad(r.ready ? 1 : 0, 3)}  WLM: ${String(r.weight).padStart(2, '0')}  TSR: ${r.ready ? 100 : 0}\n`,
    );
    out(`  DISTMETHOD: ${r.method.toUpperCase()}\n`);
    out(
      `  FLG:        ${r.owner ? 'ACTIVE' : 'INACTIVE (BACKUP)'}${r.following ? `, DISTRIBUTING AS ${r.following}` : ''}\n`,
    );
    out(`  ACTIVECONN: ${pad(r.activeConn)}${r.load !== undefined ? `  LOAD: ${r.load}` : ''}\n`);
    if (a.detail && r.sent) out(`  SENT:       PACKETS: ${r.sent.packets}  BYTES: ${r.sent.bytes}\n`);
    if (a.detail && r.service) {
      const s = r.service;
      out(
        `  SERVICE:    PACKETS: ${s.packets}  BYTES: ${s.bytes}  CRTHIT: ${s.crtHit}  CRTNEW: ${s.crtNew}  RECOVERED: ${s.recovered}  GUARDED: ${s.crtGuarded}  FORWARDED: ${s.forwarded}  DROPPED: ${s.dropped}\n`,
      );
    }
  }
  out(`${rows.length} OF ${rows.length} RECORDS DISPLAYED\n`);
}

async function vcrt(a: Args): Promise<void> {
  checkFilters(a);
  const r = await ask(a, 'vcrt', { dvipa: a.dvipa, port: a.port, client: a.client, limit: a.limit });
  if (a.json) return out(`${toJson(r)}\n`);
  out('DYNAMIC VIPA CONNECTION ROUTING TABLE:\n');
  for (const e of r.entries) {
    out(`DEST:         ${e.dvipa}..${e.port}\n`);
    out(`  SOURCE:     ${e.client}..${e.clientPort}\n`);
    out(`  DESTXCF:    ${e.target}\n`);
    out(`  ORIGIN:     ${e.origin.toUpperCase()}${e.ageS ? `  AGE: ${e.ageS}S` : ''}\n`);
  }
  out(`${r.entries.length} OF ${r.total} RECORDS DISPLAYED${r.truncated ? ' (--limit)' : ''}\n`);
}

async function vipadyn(a: Args): Promise<void> {
  checkFilters(a);
  const r = await ask(a, 'vipadyn');
  const rows = r.dvipas.filter((d) => !a.dvipa || d.dvipa === a.dvipa);
  if (a.dvipa && !rows.length) throw new CliError(`${a.dvipa}: not a DVIPA of this node`);
  if (a.json) return out(`${toJson({ ...r, dvipas: rows })}\n`);
  const cf = r.coupling;
  out(
    `COUPLING FACILITY: ${!cf ? 'NONE' : !cf.shared ? 'LOCAL (NO ETCD)' : `ETCD ${cf.healthy ? 'REACHABLE' : 'UNREACHABLE'}  MEMBERS: ${cf.members.join(' ')}`}\n`,
  );
  out('DYNAMIC VIPA:\n');
  const w = columnWidth(rows.map((d) => d.dvipa));
  out(
    `  ${'IP ADDRESS'.padEnd(w)}${'STATUS'.padEnd(11)}${'ORIGINATION'.padEnd(13)}${'DISTSTAT'.padEnd(10)}${'RANK'.padEnd(6)}${'EPOCH'.padEnd(7)}${'OWNER'.padEnd(10)}SINCE\n`,
  );
  for (const d of rows) {
    out(
      `  ${d.dvipa.padEnd(w)}${d.status.toUpperCase().padEnd(11)}${d.origin.toUpperCase().padEnd(13)}${d.distStat.toUpperCase().padEnd(10)}${String(d.rank ?? '').padEnd(6)}${String(d.epoch || '').padEnd(7)}${(d.owner ?? '').padEnd(10)}${d.since ?? ''}\n`,
    );
    if (d.heldBack) out(`    HELD BACK: ${d.heldBack}\n`);
  }
  out(`${rows.length} OF ${r.dvipas.length} RECORDS DISPLAYED\n`);
}

async function vipadcfg(a: Args): Promise<void> {
  const r = await ask(a, 'vipadcfg');
  if (a.json) return out(`${toJson(r)}\n`);
  out(`DYNAMIC VIPA INFORMATION (NODE ${r.node}):\n${r.profile}`);
}

async function ipsec(a: Args): Promise<void> {
  checkFilters(a);
  const all = await ask(a, 'ipsec');
  const rows = all.filter((d) => !a.dvipa || d.dvipa === a.dvipa);
  if (a.dvipa && !rows.length) throw new CliError(`${a.dvipa}: not a DVIPA this node may route`);
  if (a.json) return out(`${toJson(rows)}\n`);
  out('DVIPA IPSEC SECURITY ASSOCIATIONS:\n');
  for (const d of rows) {
    out(
      `DVIPA:        ${d.dvipa}  ${d.owner ? `OWNER  EPOCH: ${d.epoch}` : "NOT OWNER (SAS IN THE COUPLING FACILITY ARE THE OWNER'S)"}\n`,
    );
    if (d.lastStoreWrite) out(`  LAST STORE WRITE: ${d.lastStoreWrite}\n`);
    const r = d.lastReinstall;
    if (r) {
      out(
        `  LAST REINSTALL:   ${r.at} ${r.how.toUpperCase()}  SAS: ${r.installed}  POLICIES: ${r.policies}  REFUSED: ${r.refused.length}  FAILED: ${r.failed.length}  ${r.tookMs}MS\n`,
      );
      const p = r.phases;
      out(`    READ: ${p.readMs}MS  SAS: ${p.saMs}MS  POLICIES: ${p.policyMs}MS  RECORDS: ${p.recordMs}MS\n`);
      for (const e of r.refused) out(`    REFUSED: ${e}\n`);
      for (const f of r.failed) out(`    FAILED:  SPI ${f.spi}: ${f.error}\n`);
    }
    const n = d.lastRenegotiation;
    if (n) {
      out(
        `  LAST RENEGOTIATION: ${n.at}  PEERS: ${n.peers}  RENEGOTIATED: ${n.renegotiated}  FAILED: ${n.failed.length}  REFUSED: ${n.refused.length}  ${n.tookMs}MS\n`,
      );
      for (const f of n.failed) out(`    FAILED:  ${f.peer}: ${f.error}\n`);
    }
    if (d.ike?.length) {
      const wp = columnWidth(d.ike.map((p) => p.remote));
      out(
        `  ${'IKE PEER'.padEnd(wp)}${'CONN'.padEnd(14)}${'SOURCE'.padEnd(14)}${'STATE'.padEnd(13)}${'AGE'.padEnd(8)}${'PEER ID'.padEnd(24)}SPIS\n`,
      );
      for (const p of d.ike) {
        out(
          `  ${p.remote.padEnd(wp)}${p.conn.padEnd(14)}${p.source.toUpperCase().padEnd(14)}${p.state.padEnd(13)}${`${p.ageS}S`.padEnd(8)}${p.remoteId.padEnd(24)}${p.spis}\n`,
        );
        for (const c of p.children)
          out(`    CHILD ${c.name}  REQID: ${c.reqid}  SPI IN: ${c.spiIn}  OUT: ${c.spiOut}  ${c.state}\n`);
        if (p.error) out(`    ERROR: ${p.error}\n`);
      }
    }
    if (!d.sas.length) continue;
    const wa = columnWidth(d.sas.flatMap((s) => [s.src, s.dst]));
    out(
      `  ${'SPI'.padEnd(10)}${'PROTO'.padEnd(6)}${'DIR'.padEnd(4)}${'MODE'.padEnd(10)}${'SOURCE'.padEnd(14)}${'SRC'.padEnd(wa)}${'DST'.padEnd(wa)}${'SEQ'.padEnd(12)}${'PACKETS'.padEnd(11)}BYTES\n`,
    );
    for (const s of d.sas) {
      out(
        `  ${s.spi.padEnd(10)}${s.proto.toUpperCase().padEnd(6)}${s.dir.toUpperCase().padEnd(4)}${s.mode.toUpperCase().padEnd(10)}${s.source.toUpperCase().padEnd(14)}${s.src.padEnd(wa)}${s.dst.padEnd(wa)}${s.seq.padEnd(12)}${s.packets.padEnd(11)}${s.bytes}\n`,
      );
    }
  }
  out(`${rows.length} OF ${all.length} RECORDS DISPLAYED\n`);
}

/** Like z/OS's D XCF,GROUP: the members found through etcd, and the records refused. */
async function members(a: Args): Promise<void> {
  const r = await ask(a, 'members');
  if (a.json) return out(`${toJson(r)}\n`);
  out('CLUSTER MEMBERS (FROM ETCD MEMBER RECORDS):\n');
  const xcf = (m: MemberRow) => m.xcf.join(' ');
  const w = columnWidth(r.members.map(xcf));
  out(
    `  ${'NODE'.padEnd(16)}${'XCF'.padEnd(w)}${'PORT'.padEnd(7)}${'STATE'.padEnd(8)}${'SINCE'.padEnd(26)}${'KEY'.padEnd(34)}DVIPAS\n`,
  );
  for (const m of r.members) {
    out(
      `  ${m.node.padEnd(16)}${xcf(m).padEnd(w)}${String(m.port).padEnd(7)}${m.state.toUpperCase().padEnd(8)}${m.since.padEnd(26)}${m.key.padEnd(34)}${m.dvipas.join(' ')}\n`,
    );
  }
  const refused = Object.entries(r.refused);
  if (refused.length) out(`REFUSED RECORDS: ${refused.map(([k, n]) => `${k.toUpperCase()} ${n}`).join('  ')}\n`);
  out(`${r.members.length} RECORDS DISPLAYED\n`);
}

const common = <T>(y: Argv<T>) =>
  y
    .option('socket', {
      type: 'string',
      default: DEFAULTS.controlSocket,
      describe: "the agent's control socket (dvipa agent --control)",
    })
    .option('json', { type: 'boolean', describe: 'the data as JSON' });
const filters = <T>(y: Argv<T>) =>
  y
    .option('dvipa', { type: 'string', describe: 'only this DVIPA' })
    .option('port', { type: 'number', describe: 'only this port' });

export const netstatCommand = command({
  command: 'netstat <report>',
  describe: "the local agent's tables, as z/OS NETSTAT shows them: vdpt, vcrt, vipadyn, vipadcfg; and ipsec, members",
  builder: (y) =>
    common(y)
      .command(
        'vdpt',
        'destination port table: per DVIPA:port and target, readiness, weight, connections',
        (b) => filters(b).option('detail', { type: 'boolean', describe: "add the distributor's counters per service" }),
        (a) => vdpt(a),
      )
      .command(
        'vcrt',
        'connection routing table: which target serves each connection, and where the entry came from',
        (b) =>
          filters(b)
            .option('client', { type: 'string', describe: "only this client's connections" })
            .option('limit', { type: 'number', default: 10000, describe: 'at most this many entries' }),
        (a) => vcrt(a),
      )
      .command(
        'vipadyn',
        'the DVIPAs of this node: status, origin, rank, epoch, owner, since',
        (b) => b.option('dvipa', { type: 'string', describe: 'only this DVIPA' }),
        (a) => vipadyn(a),
      )
      .command(
        'vipadcfg',
        'the configuration in force on this node',
        (b) => b,
        (a) => vipadcfg(a),
      )
      .command(
        'ipsec',
        'IPsec recovery (CLUSTER IPSEC): per DVIPA the SAs held, negotiated here, re-installed or renegotiated, sequence numbers, last store write; with --ipsec-vici the IKE SA per peer',
        (b) => b.option('dvipa', { type: 'string', describe: 'only this DVIPA' }),
        (a) => ipsec(a),
      )
      .command(
        'members',
        'the nodes found through their etcd member records (CLUSTER ETCD): address, state, since, key; records refused by reason',
        (b) => b,
        (a) => members(a),
      )
      .demandCommand(1, 'name a report: vdpt, vcrt, vipadyn, vipadcfg, ipsec or members'),
  handler: () => undefined,
});
