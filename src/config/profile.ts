/*
 * The seeds' configuration language: z/OS VIPADynamic statements, plus the statements
 * Linux needs (CLUSTER, NODE, PEER). Keywords are case-insensitive and may be shortened
 * down to their capitalised part (VIPADEFine: VIPADEF ... VIPADEFINE). Statements may span
 * lines: a statement runs until the next statement keyword. `;` and `#` start comments.
 *
 *   CLUSTER KEYfile /etc/dvipa/cluster.key
 *   CLUSTER IDENTities /etc/dvipa/nodes
 *   CLUSTER ETCD http://10.1.0.100:2379 LEASETTL 1 TAKEBACKDELAY 5
 *   CLUSTER IPSEC SEQMARGIN 1000000 INTERVAL 1000
 *   NODE r1 XCF 198.18.1.1 EXTernal eth0 INTernal eth1
 *   VIPADynamic
 *     VIPADEFine MOVEable IMMEDiate 255.255.255.0 198.51.100.10
 *     VIPADISTribute DISTMethod ROUNDROBIN 198.51.100.10 PORT 80 443 DESTIP 10.1.0.2 10.1.0.3
 *   ENDVIPADynamic
 *
 * Every problem is reported, each with its line and column and what was expected.
 */
import { parseIpv4 } from '../net/addr.js';
import {
  ConfigError, emptyVipaDynamic, validate,
  isEtcdUrl,
  type ClusterConfig, type ConfigProblem, type CouplingConfig, type IpsecConfig, IPSEC_LIMITS, type Destination, type DistMethod, type NodeSpec, type PortRange, type VipaDynamic,
} from './model.js';

interface Token { text: string; line: number; column: number }

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.replace(/[;#].*$/, '');
    const re = /\S+/g;
    for (let m = re.exec(line); m; m = re.exec(line)) tokens.push({ text: m[0], line: i + 1, column: m.index + 1 });
  });
  return tokens;
}

/** `spelled` shows the shortest accepted form in capitals: VIPADEFine accepts VIPADEF... */
function isKeyword(token: Token | undefined, spelled: string): boolean {
  if (!token) return false;
  const full = spelled.toUpperCase();
  const min = spelled.match(/^[A-Z0-9]+/)![0].length;
  const t = token.text.toUpperCase();
  return t.length >= min && full.startsWith(t);
}

const TOP = ['CLUSTER', 'NODE', 'PEER', 'VIPADynamic'];
const IN_BLOCK = ['VIPADEFine', 'VIPABackup', 'VIPADISTribute', 'VIPARange', 'ENDVIPADynamic'];
/** z/OS statements dvipa does not implement: named so the error can say so. */
const UNSUPPORTED = ['VIPADELete', 'VIPASMparms', 'VIPAROUTE', 'VIPAOVERRIDE', 'VIPASERVICEMGR'];
const STATEMENTS = [...TOP, ...IN_BLOCK, ...UNSUPPORTED];

class Parser {
  private i = 0;
  readonly problems: ConfigProblem[] = [];
  /** Where each statement stands, for problems found after parsing (validate). */
  readonly places = new Map<string, { line: number; column: number }>();

  constructor(private readonly tokens: Token[]) {}

  private peek(): Token | undefined {
    return this.tokens[this.i];
  }

  private atStatement(): boolean {
    const t = this.peek();
    return !t || STATEMENTS.some((k) => isKeyword(t, k));
  }

  private fail(t: Token | undefined, expected: string): never {
    const last = this.tokens[this.tokens.length - 1];
    const where = t ?? (last ? { line: last.line, column: last.column + last.text.length } : { line: 1, column: 1 });
    throw Object.assign(new Error('parse'), { problem: { line: where.line, column: where.column, message: `expected ${expected}, found ${t ? `"${t.text}"` : 'end of file'}` } });
  }

  private accept(spelled: string): boolean {
    if (isKeyword(this.peek(), spelled)) {
      this.i++;
      return true;
    }
    return false;
  }

  private expect(spelled: string): void {
    if (!this.accept(spelled)) this.fail(this.peek(), spelled);
  }

  /**
   * The next token as a value. A statement keyword is never taken as one: the error points
   * at it and parsing resumes there, so one mistake gives one error.
   */
  private value(what: string, ok: (text: string) => boolean): string {
    const t = this.peek();
    if (!t || this.atStatement() || !ok(t.text)) this.fail(t, what);
    this.i++;
    return t.text;
  }

  private address(what = 'an IPv4 address'): string {
    return this.value(what, (text) => {
      try {
        parseIpv4(text);
        return true;
      } catch {
        return false;
      }
    });
  }

  private int(what: string, min: number, max: number): number {
    return Number(this.value(`${what} (${min} to ${max})`, (text) => /^\d+$/.test(text) && Number(text) >= min && Number(text) <= max));
  }

  private word(what: string): string {
    return this.value(what, () => true);
  }

  /** Skips to the next statement after an error, so every problem is reported. */
  private recover(): void {
    while (!this.atStatement()) this.i++;
  }

  parse(): ClusterConfig {
    const cfg: ClusterConfig = { nodes: [], peers: [] };
    let node: NodeSpec | undefined;
    while (this.peek()) {
      const t = this.peek()!;
      try {
        if (this.accept('CLUSTER')) {
          if (this.accept('ETCD')) cfg.coupling = this.coupling();
          else if (this.accept('IPSEC')) cfg.ipsec = this.ipsec();
          else if (this.accept('KEYfile')) cfg.keyFile = this.word('a key file path');
          else if (this.accept('IDENTities')) cfg.identities = this.word('a directory of node keys');
          else this.fail(this.peek(), 'KEYfile, IDENTITIES, ETCD or IPSEC');
        } else if (this.accept('NODE')) {
          // Registered before its parameters are read: a typo in them must not orphan the block.
          node = { name: '', xcf: '', internal: [], vipaDynamic: emptyVipaDynamic() };
          this.places.set(`${cfg.nodes.length}|node`, t);
          cfg.nodes.push(node);
          this.node(node);
        } else if (this.accept('PEER')) {
          const name = this.word('a peer name');
          this.expect('XCF');
          cfg.peers.push({ name, xcf: this.address('the peer\'s cluster (XCF) address') });
        } else if (this.accept('VIPADynamic')) {
          if (!node) this.fail(t, 'a NODE statement before VIPADynamic (NODE name XCF address)');
          this.block(node.vipaDynamic, cfg.nodes.length - 1);
        } else {
          // Consumed, so that recovery moves past it even when it is a statement keyword.
          this.i++;
          this.fail(t, IN_BLOCK.some((k) => isKeyword(t, k)) ? 'VIPADynamic before this statement' : `a statement (${TOP.join(', ')})`);
        }
      } catch (e) {
        this.note(e);
      }
    }
    return cfg;
  }

  private note(e: unknown): void {
    const problem = (e as { problem?: ConfigProblem }).problem;
    if (!problem) throw e;
    this.problems.push(problem);
    this.recover();
  }

  /** CLUSTER ETCD url... [LEASETTL s] [NOPREEMPT] [TAKEBACKDELAY s] */
  private coupling(): CouplingConfig {
    const c: CouplingConfig = { etcd: [] };
    const options = ['LEASETTL', 'NOPREEMPT', 'TAKEBACKDELAY'];
    while (!this.atStatement() && !options.some((o) => isKeyword(this.peek(), o))) c.etcd.push(this.value('an etcd URL (http://host:port or https://host:port)', isEtcdUrl));
    if (!c.etcd.length) this.fail(this.peek(), 'an etcd URL (http://host:port or https://host:port)');
    for (;;) {
      if (this.accept('LEASETTL')) c.leaseTtl = this.int('lease seconds', 1, 300);
      else if (this.accept('NOPREEMPT')) c.nopreempt = true;
      else if (this.accept('TAKEBACKDELAY')) c.takebackDelay = this.int('takeback delay seconds', 0, 86400);
      else if (this.atStatement()) return c;
      else this.fail(this.peek(), 'LEASETTL, NOPREEMPT, TAKEBACKDELAY or the next statement');
    }
  }

  /** CLUSTER IPSEC [SEQMARGIN n] [INTERVAL ms] */
  private ipsec(): IpsecConfig {
    const c: IpsecConfig = {};
    for (;;) {
      if (this.accept('SEQMARGIN')) c.seqMargin = this.int('a sequence number margin', ...IPSEC_LIMITS.seqMargin);
      else if (this.accept('INTERVAL')) c.interval = this.int('a record interval in milliseconds', ...IPSEC_LIMITS.interval);
      else if (this.atStatement()) return c;
      else this.fail(this.peek(), 'SEQMARGIN, INTERVAL or the next statement');
    }
  }

  private node(spec: NodeSpec): void {
    spec.name = this.word('a node name');
    this.expect('XCF');
    spec.xcf = this.address('the node\'s cluster (XCF) address');
    for (;;) {
      if (this.accept('EXTernal')) spec.external = this.word('an interface name');
      else if (this.accept('INTernal')) {
        do spec.internal.push(this.word('an interface name'));
        while (!this.atStatement() && !isKeyword(this.peek(), 'EXTernal'));
      } else if (this.atStatement()) return;
      else this.fail(this.peek(), 'EXTernal, INTernal or the next statement');
    }
  }

  private block(v: VipaDynamic, nodeIndex: number): void {
    for (;;) {
      const t = this.peek();
      if (!t) this.fail(t, 'ENDVIPADynamic');
      try {
        if (this.accept('ENDVIPADynamic')) return;
        if (this.accept('VIPADEFine')) this.define(v, nodeIndex, t);
        else if (this.accept('VIPABackup')) this.backup(v, nodeIndex, t);
        else if (this.accept('VIPADISTribute')) this.distribute(v, nodeIndex, t);
        else if (this.accept('VIPARange')) this.range(v, nodeIndex, t);
        else if (UNSUPPORTED.some((k) => isKeyword(t, k))) {
          this.i++;
          throw Object.assign(new Error('parse'), { problem: { line: t.line, column: t.column, message: `${t.text.toUpperCase()} is a z/OS statement dvipa does not support` } });
        } else if (TOP.some((k) => isKeyword(t, k))) this.fail(t, 'ENDVIPADynamic before this statement');
        else this.fail(t, `a VIPADynamic statement (${IN_BLOCK.join(', ')})`);
      } catch (e) {
        this.note(e);
        if (TOP.some((k) => isKeyword(this.peek(), k))) return;
      }
    }
  }

  private addresses(what: string): string[] {
    const out = [this.address(what)];
    while (!this.atStatement()) out.push(this.address(what));
    return out;
  }

  private define(v: VipaDynamic, n: number, at: Token): void {
    let moveable: 'immediate' | 'whenidle' | 'disruptive' = 'immediate';
    if (this.accept('MOVEable')) {
      if (this.accept('IMMEDiate')) moveable = 'immediate';
      else if (this.accept('WHENIDLE')) moveable = 'whenidle';
      else if (this.accept('DISRUPTive')) moveable = 'disruptive';
      else this.fail(this.peek(), 'IMMEDiate, WHENIDLE or DISRUPTive');
    }
    const mask = this.address('an address mask');
    for (const address of this.addresses('a DVIPA address')) {
      this.places.set(`${n}|define ${address}`, at);
      v.define.push({ address, mask, moveable });
    }
  }

  private backup(v: VipaDynamic, n: number, at: Token): void {
    let rank = 1;
    if (/^\d+$/.test(this.peek()?.text ?? '')) rank = this.int('a rank', 1, 254);
    let moveable: 'immediate' | 'whenidle' | undefined;
    let mask: string | undefined;
    if (this.accept('MOVEable')) {
      if (this.accept('IMMEDiate')) moveable = 'immediate';
      else if (this.accept('WHENIDLE')) moveable = 'whenidle';
      else this.fail(this.peek(), 'IMMEDiate or WHENIDLE');
      mask = this.address('an address mask');
    }
    for (const address of this.addresses('a DVIPA address')) {
      this.places.set(`${n}|backup ${address}`, at);
      v.backup.push({ address, rank, ...(moveable ? { moveable, mask } : {}) });
    }
  }

  private range(v: VipaDynamic, n: number, at: Token): void {
    this.accept('DEFINE');
    let moveable: 'nondisruptive' | 'disruptive' = 'nondisruptive';
    if (this.accept('MOVEable')) {
      if (this.accept('NONDISRUPTive')) moveable = 'nondisruptive';
      else if (this.accept('DISRUPTive')) moveable = 'disruptive';
      else this.fail(this.peek(), 'NONDISRUPTive or DISRUPTive');
    }
    const mask = this.address('an address mask');
    const address = this.address('the range\'s base address');
    this.places.set(`${n}|range ${address}`, at);
    v.range.push({ address, mask, moveable });
  }

  private method(): DistMethod {
    if (this.accept('ROUNDROBIN')) return { name: 'roundrobin' };
    if (this.accept('WEIGHTEDActive')) return { name: 'weightedactive' };
    if (this.accept('SERVERWLM')) return { name: 'serverwlm' };
    if (this.accept('HOTSTANDBY')) {
      let autoSwitchBack = true;
      if (this.accept('AUTOSWITCHBack')) autoSwitchBack = true;
      else if (this.accept('NOAUTOSWITCHBack')) autoSwitchBack = false;
      return { name: 'hotstandby', autoSwitchBack };
    }
    if (this.accept('BASEWLM')) this.fail(this.tokens[this.i - 1], 'ROUNDROBIN, WEIGHTEDActive, SERVERWLM or HOTSTANDBY (BASEWLM needs z/OS WLM; use SERVERWLM)');
    return this.fail(this.peek(), 'ROUNDROBIN, WEIGHTEDActive, SERVERWLM or HOTSTANDBY');
  }

  private distribute(v: VipaDynamic, n: number, at: Token): void {
    let method: DistMethod = { name: 'roundrobin' };
    let timedAffinity = 0;
    // Options come before the address, in any order.
    for (;;) {
      if (this.accept('DEFINE')) continue;
      if (isKeyword(this.peek(), 'DELEte')) this.fail(this.peek(), 'a statement that defines (to stop distributing, remove the statement)');
      if (this.accept('DISTMethod')) method = this.method();
      else if (this.accept('TIMEDAFFinity')) timedAffinity = this.int('seconds of affinity', 0, 99999);
      else if (isKeyword(this.peek(), 'OPTLOCal') || isKeyword(this.peek(), 'SYSPLEXPorts')) {
        this.fail(this.peek(), 'DISTMethod, TIMEDAFFinity or the DVIPA address (OPTLOCAL and SYSPLEXPORTS are z/OS options dvipa does not support)');
      } else break;
    }
    const address = this.address('DISTMethod, TIMEDAFFinity or the DVIPA address');
    let ports: PortRange[] | 'all' = 'all';
    if (this.accept('PORT')) {
      ports = [];
      while (!isKeyword(this.peek(), 'DESTIP')) {
        const text = this.value('a port (1 to 65535) or range (from-to), or DESTIP', (x) => {
          const m = /^(\d+)(?:-(\d+))?$/.exec(x);
          return !!m && Number(m[1]) >= 1 && Number(m[2] ?? m[1]) <= 65535 && Number(m[1]) <= Number(m[2] ?? m[1]);
        });
        const [from, to = from] = text.split('-').map(Number);
        ports.push({ from, to });
      }
      if (ports.length === 0) this.fail(this.peek(), 'at least one port after PORT');
    }
    this.expect('DESTIP');
    let destinations: Destination[] | 'all';
    if (this.accept('ALL')) destinations = 'all';
    else {
      destinations = [];
      do {
        const d: Destination = { xcf: this.address('ALL or a target\'s cluster (XCF) address') };
        if (this.accept('WEIGHT')) d.weight = this.int('a weight', 1, 100);
        else if (this.accept('PREFerred')) d.role = 'preferred';
        else if (this.accept('BACKup')) {
          d.role = 'backup';
          d.rank = this.int('a backup rank', 1, 254);
        }
        destinations.push(d);
      } while (!this.atStatement());
    }
    this.places.set(`${n}|distribute ${address}`, at);
    v.distribute.push({ address, ports, destinations, method, timedAffinity });
  }
}

/** Parses and validates; throws ConfigError listing every problem. */
export function parseProfile(text: string, file = '<profile>'): ClusterConfig {
  const p = new Parser(tokenize(text));
  const cfg = p.parse();
  if (cfg.nodes.length === 0 && p.problems.length === 0) p.problems.push({ line: 1, column: 1, message: 'expected at least one NODE statement (NODE name XCF address)' });
  const problems = [...p.problems, ...validate(cfg, (n, what) => p.places.get(`${n}|${what}`) ?? p.places.get(`${n}|node`) ?? { line: 1, column: 1 })];
  if (problems.length) throw new ConfigError(file, problems.sort((a, b) => a.line - b.line || a.column - b.column));
  return cfg;
}
