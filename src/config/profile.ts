/*
 * The seeds' configuration language: z/OS VIPADynamic statements, plus the statements
 * Linux needs (CLUSTER, NODE, PEER). Keywords are case-insensitive and may be shortened
 * down to their capitalised part (VIPADEFine: VIPADEF ... VIPADEFINE). Statements may span
 * lines: a statement runs until the next statement keyword. `;` and `#` start comments;
 * columns 73-80 holding a sequence number are ignored, and addresses are read as z/OS reads
 * them (zos.ts). z/OS keywords dvipa does not implement, and the other statements of a
 * PROFILE.TCPIP, are each reported by name, once.
 *
 *   CLUSTER KEYfile /etc/dvipa/cluster.key
 *   CLUSTER IDENTities /etc/dvipa/nodes
 *   CLUSTER ETCD http://10.1.0.100:2379 LEASETTL 1 TAKEBACKDELAY 5
 *   CLUSTER IPSEC SEQMARGIN 1000000 INTERVAL 1000
 *   NODE r1 XCF 198.18.1.1 2001:db8:1::1 EXTernal eth0 INTernal eth1
 *   VIPADynamic
 *     VIPADEFine MOVEable IMMEDiate 255.255.255.0 198.51.100.10
 *     VIPADISTribute DISTMethod ROUNDROBIN 198.51.100.10 PORT 80 443 DESTIP 10.1.0.2 10.1.0.3
 *     VIPADEFine MOVEable IMMEDiate DVIPA6A 2001:db8:100::10
 *     VIPADISTribute DVIPA6A PORT 80 DESTIP 2001:db8:1::2 2001:db8:1::3
 *   ENDVIPADynamic
 *
 * IPv6 DVIPAs take z/OS's IPv6 forms: an interface name and the address (with /prefix_len
 * where z/OS allows one); VIPADISTribute and VIPADELete name the interface (or the address).
 *
 * Every problem is reported, each with its line and column and what was expected.
 */
import { LIMITS } from './settings.js';
import {
  ConfigError,
  emptyVipaDynamic,
  validate,
  clusterAddresses,
  isEtcdUrl,
  membersFromEtcd,
  type ClusterConfig,
  type ConfigProblem,
  type CouplingConfig,
  type IpsecConfig,
  type Destination,
  type DistMethod,
  type NodeSpec,
  type PortRange,
  type VipaDynamic,
  INTERFACE_NAME,
} from './model.js';
import { canonicalIpv6, ipFamily, ipv4MappedProblem } from '../net/addr.js';
import { ALSO_OPERANDS, PROFILE_STATEMENTS, withoutSequenceNumber, ZOS_UNSUPPORTED, zosIpv4 } from './zos.js';

interface Token {
  text: string;
  line: number;
  column: number;
  upper: string;
}

function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = withoutSequenceNumber(raw).replace(/[;#].*$/, '');
    const re = /\S+/g;
    for (let m = re.exec(line); m; m = re.exec(line)) {
      tokens.push({ text: m[0], line: i + 1, column: m.index + 1, upper: m[0].toUpperCase() });
    }
  });
  return tokens;
}

/** `spelled` shows the shortest accepted form in capitals: VIPADEFine accepts VIPADEF... */
function isKeyword(token: Token | undefined, spelled: string): boolean {
  if (!token) return false;
  const full = spelled.toUpperCase();
  const min = spelled.match(/^[A-Z0-9]+/)![0].length;
  return token.upper.length >= min && full.startsWith(token.upper);
}

/** Every accepted spelling of each keyword, to the keyword: one lookup per token. */
function spellings<T>(keywords: Array<[string, T]>): Map<string, T> {
  const out = new Map<string, T>();
  for (const [spelled, value] of keywords) {
    const full = spelled.toUpperCase();
    for (let n = spelled.match(/^[A-Z0-9]+/)![0].length; n <= full.length; n++) out.set(full.slice(0, n), value);
  }
  return out;
}

const TOP = ['CLUSTER', 'NODE', 'PEER', 'VIPADynamic'];
const IN_BLOCK = [
  'VIPADEFine',
  'VIPABackup',
  'VIPADELete',
  'VIPADISTribute',
  'VIPARange',
  'VIPAROUTE',
  'ENDVIPADynamic',
];
const UNSUPPORTED_STATEMENTS = ZOS_UNSUPPORTED.filter((k) => k.on.length === 0);
const BLOCK_STATEMENTS = [...IN_BLOCK, ...UNSUPPORTED_STATEMENTS.map((k) => k.keyword)];
const STATEMENTS = spellings([...TOP, ...BLOCK_STATEMENTS].map((k) => [k, k]));
const PROFILE = spellings(PROFILE_STATEMENTS.map((s) => [s.name, s]));

/** A problem; `unsupported`: a z/OS keyword dvipa knows and does not implement (import carries it as a comment). */
type Problem = ConfigProblem & { unsupported?: boolean };

class ParseStop extends Error {
  constructor(readonly problem: Problem) {
    super(problem.message);
  }
}

export interface ParseOptions {
  /** `dvipa config import`: a whole z/OS profile for this node; what dvipa does not take becomes notes. */
  importNode?: string;
}

class Parser {
  private i = 0;
  /** Inside VIPADynamic: PORT and DELETE are operands there, not the profile's statements. */
  private inBlock = false;
  /** The z/OS keywords the statement being read may carry that dvipa does not support. */
  private zosOptions: string[] = [];
  readonly problems: Problem[] = [];
  /** Import: what was skipped or not carried over, for the comments of the configuration written. */
  readonly notes: string[] = [];
  /** Import: the DYNAMICXCF address of IPCONFIG, and of IPCONFIG6. */
  dynamicXcf?: { address: string; line: number };
  dynamicXcf6?: { address: string; line: number };
  /** Where each statement stands, for problems found after parsing (validate). */
  readonly places = new Map<string, { line: number; column: number }>();

  constructor(
    private readonly tokens: Token[],
    private readonly opts: ParseOptions = {},
  ) {}

  private peek(): Token | undefined {
    return this.tokens[this.i];
  }

  private profileStatement(t: Token | undefined): { name: string; end?: string } | undefined {
    if (!t || (this.inBlock && ALSO_OPERANDS.has(t.upper))) return undefined;
    return PROFILE.get(t.upper);
  }

  /** The start of a statement of dvipa's language or of a z/OS profile (end of file counts). */
  private atStatement(): boolean {
    const t = this.peek();
    return !t || STATEMENTS.has(t.upper) || this.profileStatement(t) !== undefined;
  }

  private stop(t: Token | undefined, message: string, unsupported = false): never {
    const last = this.tokens[this.tokens.length - 1];
    const where = t ?? (last ? { line: last.line, column: last.column + last.text.length } : { line: 1, column: 1 });
    throw new ParseStop({ line: where.line, column: where.column, message, ...(unsupported ? { unsupported } : {}) });
  }

  private fail(t: Token | undefined, expected: string): never {
    return this.stop(t, `expected ${expected}, found ${t ? `"${t.text}"` : 'end of file'}`);
  }

  /** A z/OS keyword of the statement being read that dvipa does not implement: one error naming it. */
  private rejectZos(t: Token | undefined): void {
    const k = ZOS_UNSUPPORTED.find((z) => this.zosOptions.includes(z.keyword) && isKeyword(t, z.keyword));
    if (!k) return;
    const kind = k.on.length ? 'option' : 'statement';
    this.stop(t, `${t!.text.toUpperCase()} is a z/OS ${kind} dvipa does not support: ${k.why}`, true);
  }

  private accept(spelled: string): boolean {
    if (isKeyword(this.peek(), spelled)) {
      this.i++;
      return true;
    }
    return false;
  }

  private expect(spelled: string): void {
    if (!this.accept(spelled)) {
      this.rejectZos(this.peek());
      this.fail(this.peek(), spelled);
    }
  }

  /**
   * The next token as a value. A statement keyword is never taken as one: the error points
   * at it and parsing resumes there, so one mistake gives one error.
   */
  private value(what: string, ok: (text: string) => boolean): string {
    const t = this.peek();
    this.rejectZos(t);
    if (!t || this.atStatement() || !ok(t.text)) this.fail(t, what);
    this.i++;
    return t.text;
  }

  /**
   * An IPv4 address as z/OS reads it (leading zeros are decimal), written without them, or an
   * IPv6 address, written in RFC 5952 form.
   */
  private address(what: string): string {
    const t = this.peek();
    const text = this.value(what, (x) => zosIpv4(x) !== undefined || canonicalIpv6(x) !== undefined);
    this.notMapped(t, text);
    return zosIpv4(text) ?? canonicalIpv6(text)!;
  }

  /** An IPv4-mapped address is IPv4 to the data plane (ipv4MappedProblem): refused at its token. */
  private notMapped(t: Token | undefined, text: string): void {
    const why = ipv4MappedProblem(text);
    if (why) this.stop(t, why);
  }

  /** An IPv4 address (or mask) only. */
  private ipv4(what: string): string {
    return zosIpv4(this.value(what, (x) => zosIpv4(x) !== undefined))!;
  }

  /** Whether z/OS's IPv6 DVIPA form comes next: an interface name and an address (or a bare address, to be told). */
  private ipv6Next(): boolean {
    // Two colons at least: 10.1.0.1:80 is a mistake in an IPv4 address, not IPv6.
    const ipv6 = (x = '') => /^[\da-f:.]+(\/\d+)?$/i.test(x) && (x.match(/:/g)?.length ?? 0) >= 2;
    const t = this.peek()?.text;
    return ipv6(t) || (INTERFACE_NAME.test(t ?? '') && ipv6(this.tokens[this.i + 1]?.text));
  }

  /** z/OS's IPv6 DVIPA: an interface name, then the address, with /prefix_len where `prefix` allows one. */
  private ipv6Dvipa(prefix: 'optional' | 'required' | 'none'): { interface: string; address: string; mask: string } {
    const t = this.peek();
    if (t && canonicalIpv6(t.text.split('/')[0]) !== undefined)
      this.stop(
        t,
        `expected an interface name before ${t.text}: z/OS names each IPv6 DVIPA's interface ` +
          '(VIPADEFINE MOVEABLE IMMEDIATE DVIPA6A 2001:db8::10)',
      );
    const name = this.value('an IPv6 interface name (a letter first, at most 16 characters)', (x) =>
      INTERFACE_NAME.test(x),
    );
    const form = {
      optional: 'an IPv6 address or address/prefix_len',
      required: 'an IPv6 address/prefix_len',
      none: 'an IPv6 address',
    };
    const at = this.peek();
    const text = this.value(`${form[prefix]} for interface ${name}`, (x) => {
      const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(x);
      if (!m || canonicalIpv6(m[1]) === undefined) return false;
      return m[2] === undefined ? prefix !== 'required' : prefix !== 'none' && Number(m[2]) <= 128;
    });
    const [address, bits = '128'] = text.split('/');
    this.notMapped(at, address);
    return { interface: name, address: canonicalIpv6(address)!, mask: String(Number(bits)) };
  }

  /** NODE and PEER: XCF, then an IPv4 and/or an IPv6 cluster address. */
  private clusterAddress(spec: { xcf: string; xcf6?: string }, whose: string): void {
    this.expect('XCF');
    spec.xcf = this.address(`the ${whose} cluster (XCF) address`);
    const t = this.peek();
    // Only what reads as an address: any other word is the caller's to judge.
    if (this.atStatement() || ipFamily(t?.text ?? '') === undefined) return;
    const second = this.address(`EXTernal, INTernal, the ${whose} IPv6 cluster address or the next statement`);
    if (ipFamily(spec.xcf) !== 4 || ipFamily(second) !== 6)
      this.stop(t, `${second}: the ${whose} second cluster address is its IPv6 one, after its IPv4 one`);
    spec.xcf6 = second;
  }

  private int(what: string, min: number, max: number): number {
    return Number(
      this.value(
        `${what} (${min} to ${max})`,
        (text) => /^\d+$/.test(text) && Number(text) >= min && Number(text) <= max,
      ),
    );
  }

  private word(what: string): string {
    return this.value(what, () => true);
  }

  /** The statement ends here: what follows must start the next one. */
  private end(expected: string): void {
    if (!this.atStatement()) {
      this.rejectZos(this.peek());
      this.fail(this.peek(), expected);
    }
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
      const start = this.i;
      this.zosOptions = [];
      try {
        const profile = this.profileStatement(t);
        if (this.accept('CLUSTER')) {
          if (this.accept('ETCD')) cfg.coupling = this.coupling();
          else if (this.accept('IPSEC')) cfg.ipsec = this.ipsec();
          else if (this.accept('KEYfile')) cfg.keyFile = this.word('a key file path');
          else if (this.accept('IDENTities')) cfg.identities = this.word('a directory of node keys');
          else if (this.accept('NEWFLOWRATE'))
            cfg.newFlowRate = this.int('new flows per second per CPU (0: no guard)', ...LIMITS.newFlowRate);
          else this.fail(this.peek(), 'KEYfile, IDENTITIES, ETCD, IPSEC or NEWFLOWRATE');
        } else if (this.accept('NODE')) {
          // Registered before its parameters are read: a typo in them must not orphan the block.
          node = { name: '', xcf: '', internal: [], vipaDynamic: emptyVipaDynamic() };
          this.places.set(`${cfg.nodes.length}|node`, t);
          cfg.nodes.push(node);
          this.node(node);
        } else if (this.accept('PEER')) {
          const peer: ClusterConfig['peers'][number] = { name: this.word('a peer name'), xcf: '' };
          this.clusterAddress(peer, "peer's");
          cfg.peers.push(peer);
        } else if (this.accept('VIPADynamic')) {
          if (!node && this.opts.importNode !== undefined) {
            node = { name: this.opts.importNode, xcf: '', internal: [], vipaDynamic: emptyVipaDynamic() };
            this.places.set('0|node', t);
            cfg.nodes.push(node);
          }
          if (node) this.block(node.vipaDynamic, cfg.nodes.length - 1);
          else {
            // One error for the missing NODE; the block is still read, for its own mistakes.
            const message = 'expected a NODE statement before VIPADynamic (NODE name XCF address)';
            this.problems.push({ line: t.line, column: t.column, message });
            this.block(emptyVipaDynamic(), -1);
          }
        } else if (profile) this.zosStatement(t, profile);
        else {
          // Consumed, so that recovery moves past it even when it is a statement keyword.
          this.i++;
          const inBlock = BLOCK_STATEMENTS.some((k) => isKeyword(t, k));
          this.fail(t, inBlock ? 'VIPADynamic before this statement' : `a statement (${TOP.join(', ')})`);
        }
      } catch (e) {
        this.note(e, start);
      }
    }
    return cfg;
  }

  private note(e: unknown, start: number): void {
    if (!(e instanceof ParseStop)) throw e;
    this.recover();
    if (e.problem.unsupported && this.opts.importNode !== undefined) {
      const text = this.tokens
        .slice(start, this.i)
        .map((t) => t.text)
        .join(' ');
      this.notes.push(`line ${e.problem.line}: not carried over: ${text} (${e.problem.message})`);
    } else this.problems.push(e.problem);
  }

  /**
   * A statement of the wider z/OS profile. `config check` reports it; import takes the
   * DYNAMICXCF address from IPCONFIG and notes the rest as skipped. A block statement
   * (AUTOLOG ... ENDAUTOLOG) is skipped to its end.
   */
  private zosStatement(t: Token, s: { name: string; end?: string }): void {
    const name = s.name.toUpperCase();
    this.i++;
    const from = this.i;
    let unended = '';
    if (s.end) {
      while (this.peek() && !isKeyword(this.peek(), s.end)) this.i++;
      // Without its END keyword the block would take the rest of the file: resume at the next statement.
      if (this.peek()) this.i++;
      else {
        unended = ` without ${s.end.toUpperCase()}`;
        this.i = from;
        this.recover();
      }
    } else this.recover();
    if (this.opts.importNode === undefined) {
      const message =
        `${name}${unended} is a z/OS PROFILE.TCPIP statement, not part of a dvipa configuration ` +
        "('dvipa config import' takes the VIPADynamic block and the DYNAMICXCF address from a whole profile)";
      this.problems.push({ line: t.line, column: t.column, message });
      return;
    }
    const operands = this.tokens.slice(from, this.i);
    const v6 = name === 'IPCONFIG6';
    const xcfAt = name === 'IPCONFIG' || v6 ? operands.findIndex((x) => isKeyword(x, 'DYNAMICXCF')) : -1;
    if (xcfAt < 0) {
      const why =
        name === 'INCLUDE'
          ? 'import the included data set too, and merge what it defines'
          : 'not part of a dvipa configuration';
      this.notes.push(`line ${t.line}: ${name}${unended} skipped (${why})`);
      return;
    }
    const x = this.tokens[from + xcfAt + 1];
    const text = x?.text.split('/')[0] ?? '';
    const address = v6 ? canonicalIpv6(text) : zosIpv4(text);
    if (!address) this.fail(x, `the DYNAMICXCF ${v6 ? 'IPv6' : 'IPv4'} address (the node's cluster address)`);
    if (v6) this.dynamicXcf6 = { address, line: t.line };
    else this.dynamicXcf = { address, line: t.line };
    this.notes.push(
      `line ${t.line}: ${name} DYNAMICXCF ${address} is the node's ${v6 ? 'IPv6 ' : ''}cluster (XCF) address; ` +
        'its other operands skipped',
    );
  }

  /** CLUSTER ETCD url... [LEASETTL s] [NOPREEMPT] [TAKEBACKDELAY s] */
  private coupling(): CouplingConfig {
    const c: CouplingConfig = { etcd: [] };
    const options = ['LEASETTL', 'NOPREEMPT', 'TAKEBACKDELAY'];
    while (!this.atStatement() && !options.some((o) => isKeyword(this.peek(), o)))
      c.etcd.push(this.value('an etcd URL (http://host:port or https://host:port)', isEtcdUrl));
    if (!c.etcd.length) this.fail(this.peek(), 'an etcd URL (http://host:port or https://host:port)');
    for (;;) {
      if (this.accept('LEASETTL')) c.leaseTtl = this.int('lease seconds', ...LIMITS.leaseTtl);
      else if (this.accept('NOPREEMPT')) c.nopreempt = true;
      else if (this.accept('TAKEBACKDELAY'))
        c.takebackDelay = this.int('takeback delay seconds', ...LIMITS.takebackDelay);
      else if (this.atStatement()) return c;
      else this.fail(this.peek(), 'LEASETTL, NOPREEMPT, TAKEBACKDELAY or the next statement');
    }
  }

  /** CLUSTER IPSEC [SEQMARGIN n] [INTERVAL ms] */
  private ipsec(): IpsecConfig {
    const c: IpsecConfig = {};
    for (;;) {
      if (this.accept('SEQMARGIN')) c.seqMargin = this.int('a sequence number margin', ...LIMITS.seqMargin);
      else if (this.accept('INTERVAL'))
        c.interval = this.int('a record interval in milliseconds', ...LIMITS.recordInterval);
      else if (this.atStatement()) return c;
      else this.fail(this.peek(), 'SEQMARGIN, INTERVAL or the next statement');
    }
  }

  private node(spec: NodeSpec): void {
    spec.name = this.word('a node name');
    this.clusterAddress(spec, "node's");
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
    this.inBlock = true;
    try {
      for (;;) {
        const t = this.peek();
        if (!t) this.fail(t, 'ENDVIPADynamic');
        const start = this.i;
        this.zosOptions = [];
        try {
          if (this.accept('ENDVIPADynamic')) return;
          if (this.accept('VIPADEFine')) this.define(v, nodeIndex, t);
          else if (this.accept('VIPABackup')) this.backup(v, nodeIndex, t);
          else if (this.accept('VIPADELete')) this.delete(v, t);
          else if (this.accept('VIPADISTribute')) this.distribute(v, nodeIndex, t);
          else if (this.accept('VIPARange')) this.range(v, nodeIndex, t);
          else if (this.accept('VIPAROUTE')) this.route(v, nodeIndex, t);
          else if (UNSUPPORTED_STATEMENTS.some((k) => isKeyword(t, k.keyword))) {
            this.zosOptions = UNSUPPORTED_STATEMENTS.map((k) => k.keyword);
            this.i++;
            this.rejectZos(t);
          } else if (TOP.some((k) => isKeyword(t, k))) this.fail(t, 'ENDVIPADynamic before this statement');
          else if (this.profileStatement(t)) this.zosStatement(t, this.profileStatement(t)!);
          else this.fail(t, `a VIPADynamic statement (${IN_BLOCK.join(', ')})`);
        } catch (e) {
          this.note(e, start);
          if (TOP.some((k) => isKeyword(this.peek(), k))) return;
        }
      }
    } finally {
      this.inBlock = false;
    }
  }

  /** `ipv4`: after an address mask, the IPv4 DVIPAs it is the mask of. */
  private addresses(what: string, ipv4 = false): string[] {
    const read = () => (ipv4 ? this.ipv4(what) : this.address(what));
    const out = [read()];
    while (!this.atStatement()) out.push(read());
    return out;
  }

  /** VIPADEFine and VIPABackup: [TIER1|TIER2|CPCSCOPE] [MOVEable ...] [SERVICEMGR] mask addr... */
  private ownerOptions(statement: string): void {
    this.zosOptions = ZOS_UNSUPPORTED.filter((k) => k.on.includes(statement)).map((k) => k.keyword);
    this.rejectZos(this.peek());
  }

  /** z/OS moves an IPv6 DVIPA IMMEDiate (or NONDISRUPTive, in a range) only. */
  private ipv6Moveable(at: Token | undefined, moveable: string, only: string): void {
    if (at && moveable !== only)
      this.stop(at, `MOVEABLE ${moveable.toUpperCase()}: an IPv6 DVIPA is MOVEABLE ${only.toUpperCase()} (z/OS)`);
  }

  private define(v: VipaDynamic, n: number, at: Token): void {
    this.ownerOptions('VIPADEFine');
    let moveable: 'immediate' | 'whenidle' | 'disruptive' = 'immediate';
    const moveAt = this.peek();
    if (this.accept('MOVEable')) {
      if (this.accept('IMMEDiate')) moveable = 'immediate';
      else if (this.accept('WHENIDLE')) moveable = 'whenidle';
      else if (this.accept('DISRUPTive')) moveable = 'disruptive';
      else this.fail(this.peek(), 'IMMEDiate, WHENIDLE or DISRUPTive');
    }
    if (this.ipv6Next()) {
      this.ipv6Moveable(moveAt, moveable, 'immediate');
      const d = this.ipv6Dvipa('optional');
      this.end('the next statement (an IPv6 VIPADEFine names one interface and address)');
      this.places.set(`${n}|define ${d.address}`, at);
      v.define.push({ ...d, moveable });
      return;
    }
    const mask = this.ipv4('an address mask, or an IPv6 interface name and address');
    for (const address of this.addresses('a DVIPA address', true)) {
      this.places.set(`${n}|define ${address}`, at);
      v.define.push({ address, mask, moveable });
    }
  }

  private backup(v: VipaDynamic, n: number, at: Token): void {
    let rank = 1;
    if (/^\d+$/.test(this.peek()?.text ?? '')) rank = this.int('a rank', ...LIMITS.rank);
    this.ownerOptions('VIPABackup');
    let moveable: 'immediate' | 'whenidle' | undefined;
    let mask: string | undefined;
    const moveAt = this.peek();
    if (this.accept('MOVEable')) {
      if (this.accept('IMMEDiate')) moveable = 'immediate';
      else if (this.accept('WHENIDLE')) moveable = 'whenidle';
      else this.fail(this.peek(), 'IMMEDiate or WHENIDLE');
      if (!this.ipv6Next()) mask = this.ipv4('an address mask, or an IPv6 interface name and address');
    }
    if (this.ipv6Next()) {
      // z/OS: `intfname addr` alone, or MOVEABLE IMMEDIATE intfname addr[/prefix_len].
      if (moveable) this.ipv6Moveable(moveAt, moveable, 'immediate');
      const d = this.ipv6Dvipa(moveable ? 'optional' : 'none');
      this.end('the next statement (an IPv6 VIPABackup names one interface and address)');
      this.places.set(`${n}|backup ${d.address}`, at);
      v.backup.push({
        address: d.address,
        rank,
        interface: d.interface,
        ...(moveable ? { moveable, mask: d.mask } : {}),
      });
      return;
    }
    for (const address of this.addresses('a DVIPA address', true)) {
      this.places.set(`${n}|backup ${address}`, at);
      v.backup.push({ address, rank, ...(moveable ? { moveable, mask } : {}) });
    }
  }

  /**
   * VIPADELete addr...: removes the DVIPA defined or backed up above in the profile (and
   * its distribution), as z/OS does before a DVIPA is defined again.
   */
  private delete(v: VipaDynamic, at: Token): void {
    const t = this.peek();
    if (t && INTERFACE_NAME.test(t.text) && !this.atStatement()) {
      // z/OS: one IPv6 interface name per VIPADELETE.
      this.i++;
      const named = [...v.define, ...v.backup].find((d) => d.interface?.toUpperCase() === t.upper);
      if (!named)
        this.stop(t, `VIPADELETE ${t.text}: no IPv6 VIPADEFine or VIPABackup of interface ${t.text} above it`);
      this.end('the next statement (VIPADELete names one IPv6 interface)');
      v.define = v.define.filter((d) => d.address !== named.address);
      v.backup = v.backup.filter((b) => b.address !== named.address);
      v.distribute = v.distribute.filter((d) => d.address !== named.address);
      return;
    }
    for (const address of this.addresses('a DVIPA address or an IPv6 interface name')) {
      const before = v.define.length + v.backup.length;
      v.define = v.define.filter((d) => d.address !== address);
      v.backup = v.backup.filter((b) => b.address !== address);
      if (v.define.length + v.backup.length === before) {
        this.stop(at, `VIPADELETE ${address}: no VIPADEFine or VIPABackup of ${address} above it to delete`);
      }
      v.distribute = v.distribute.filter((d) => d.address !== address);
    }
  }

  private range(v: VipaDynamic, n: number, at: Token): void {
    this.zosOptions = ['SAF'];
    const remove = !this.accept('DEFINE') && this.accept('DELEte');
    let moveable: 'nondisruptive' | 'disruptive' = 'nondisruptive';
    const moveAt = this.peek();
    if (this.accept('MOVEable')) {
      if (this.accept('NONDISRUPTive')) moveable = 'nondisruptive';
      else if (this.accept('DISRUPTive')) moveable = 'disruptive';
      else this.fail(this.peek(), 'NONDISRUPTive or DISRUPTive');
    }
    let r: VipaDynamic['range'][number];
    if (this.ipv6Next()) {
      this.ipv6Moveable(moveAt, moveable, 'nondisruptive');
      r = { ...this.ipv6Dvipa('required'), moveable };
    } else {
      const mask = this.ipv4('an address mask, or an IPv6 interface name and address/prefix_len');
      r = { address: this.ipv4("the range's base address"), mask, moveable };
    }
    this.end('SAF or the next statement');
    const written = r.interface === undefined ? `${r.mask} ${r.address}` : `${r.interface} ${r.address}/${r.mask}`;
    if (remove) {
      const before = v.range.length;
      v.range = v.range.filter((x) => x.address !== r.address || x.mask !== r.mask || x.interface !== r.interface);
      if (v.range.length === before) {
        this.stop(at, `VIPARANGE DELETE ${written}: no such VIPARange above it to delete`);
      }
      return;
    }
    this.places.set(`${n}|range ${r.address}`, at);
    v.range.push(r);
  }

  /** VIPAROUTE [DEFINE|DELEte] xcf address: encapsulate to the target `xcf` at `address`. */
  private route(v: VipaDynamic, n: number, at: Token): void {
    const remove = !this.accept('DEFINE') && this.accept('DELEte');
    const xcf = this.address("the target's cluster (XCF) address");
    const via = this.address("the target's address to encapsulate to");
    this.end('the next statement');
    if (!remove) {
      this.places.set(`${n}|route ${xcf}`, at);
      (v.route ??= []).push({ xcf, via });
      return;
    }
    const kept = (v.route ?? []).filter((r) => r.xcf !== xcf || r.via !== via);
    if (kept.length === (v.route ?? []).length) {
      this.stop(at, `VIPAROUTE DELETE ${xcf} ${via}: no such VIPAROUTE above it to delete`);
    }
    if (kept.length) v.route = kept;
    else delete v.route;
  }

  private method(): DistMethod {
    this.rejectZos(this.peek());
    if (this.accept('ROUNDROBIN')) return { name: 'roundrobin' };
    if (this.accept('WEIGHTEDActive')) return { name: 'weightedactive' };
    if (this.accept('SERVERWLM')) return { name: 'serverwlm' };
    if (this.accept('BASEWLM')) return { name: 'basewlm' };
    if (this.accept('HOTSTANDBY')) {
      let autoSwitchBack = true;
      let healthSwitch = true;
      for (;;) {
        if (this.accept('AUTOSWITCHBack')) autoSwitchBack = true;
        else if (this.accept('NOAUTOSWITCHBack')) autoSwitchBack = false;
        else if (this.accept('HEALTHSWITCH')) healthSwitch = true;
        else if (this.accept('NOHEALTHSWITCH')) healthSwitch = false;
        else return { name: 'hotstandby', autoSwitchBack, healthSwitch };
      }
    }
    return this.fail(this.peek(), 'ROUNDROBIN, WEIGHTEDActive, SERVERWLM, BASEWLM or HOTSTANDBY');
  }

  /** VIPADISTribute's DVIPA: an address, or (z/OS's IPv6 form) the interface name of one defined above. */
  private distributed(v: VipaDynamic): string {
    const t = this.peek();
    const what = 'DISTMethod, TIMEDAFFinity, the DVIPA address or the interface name of an IPv6 DVIPA defined above';
    const named = (x: string) => [...v.define, ...v.backup].find((d) => d.interface?.toUpperCase() === x.toUpperCase());
    if (t && !this.atStatement() && INTERFACE_NAME.test(t.text) && zosIpv4(t.text) === undefined) {
      this.rejectZos(t);
      const d = named(t.text);
      if (!d) this.fail(t, what);
      this.i++;
      return d.address;
    }
    return this.address(what);
  }

  private distribute(v: VipaDynamic, n: number, at: Token): void {
    this.zosOptions = ZOS_UNSUPPORTED.filter((k) => k.on.includes('VIPADISTribute')).map((k) => k.keyword);
    let method: DistMethod = { name: 'roundrobin' };
    let timedAffinity = 0;
    let remove = false;
    // Options come before the address, in any order.
    for (;;) {
      this.rejectZos(this.peek());
      if (this.accept('DEFINE')) continue;
      if (this.accept('DELEte')) remove = true;
      else if (this.accept('DISTMethod')) method = this.method();
      else if (this.accept('TIMEDAFFinity')) timedAffinity = this.int('seconds of affinity', ...LIMITS.timedAffinity);
      // NOOPTLOCAL is z/OS's default and dvipa's behaviour.
      else if (this.accept('NOOPTLOCAL')) continue;
      else break;
    }
    const address = this.distributed(v);
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
        const d: Destination = { xcf: this.address("ALL or a target's cluster (XCF) address") };
        if (this.accept('WEIGHT')) d.weight = this.int('a weight', ...LIMITS.weight);
        else if (this.accept('PREFerred')) d.role = 'preferred';
        else if (this.accept('BACKup')) {
          d.role = 'backup';
          d.rank = this.int('a backup rank', ...LIMITS.rank);
        }
        destinations.push(d);
      } while (!this.atStatement());
    }
    this.end('the next statement');
    const key = (p: PortRange[] | 'all') => (p === 'all' ? 'all' : p.map((r) => `${r.from}-${r.to}`).join(' '));
    if (remove) {
      const before = v.distribute.length;
      v.distribute = v.distribute.filter((d) => d.address !== address || key(d.ports) !== key(ports));
      if (v.distribute.length === before) {
        this.stop(at, `VIPADISTRIBUTE DELETE ${address}: no such VIPADISTribute above it to delete`);
      }
      return;
    }
    this.places.set(`${n}|distribute ${address}`, at);
    v.distribute.push({ address, ports, destinations, method, timedAffinity });
  }
}

function check(p: Parser, cfg: ClusterConfig, file: string): void {
  const at = (n: number, what: string) =>
    p.places.get(`${n}|${what}`) ?? p.places.get(`${n}|node`) ?? { line: 1, column: 1 };
  // Without the `unsupported` mark: a ConfigError's problems are places and messages.
  const problems = [...p.problems, ...validate(cfg, at)].map(({ line, column, message }) => ({
    line,
    column,
    message,
  }));
  if (problems.length)
    throw new ConfigError(
      file,
      problems.sort((a, b) => a.line - b.line || a.column - b.column),
    );
}

/** Parses and validates; throws ConfigError listing every problem. */
export function parseProfile(text: string, file = '<profile>'): ClusterConfig {
  const p = new Parser(tokenize(text));
  const cfg = p.parse();
  if (cfg.nodes.length === 0 && p.problems.length === 0)
    p.problems.push({ line: 1, column: 1, message: 'expected at least one NODE statement (NODE name XCF address)' });
  check(p, cfg, file);
  return cfg;
}

export interface ImportedProfile {
  config: ClusterConfig;
  notes: string[];
}

export interface ProfileToImport {
  text: string;
  file: string;
  node: string;
  xcf?: string;
}

/**
 * Whole z/OS PROFILE.TCPIPs, one per node: each profile's VIPADynamic blocks, its cluster
 * address from IPCONFIG DYNAMICXCF (or `xcf`), and a PEER for each DESTIP address that is no
 * imported node's, unless `etcd` is given (CLUSTER ETCD: the nodes find each other there). What is not carried over is in `notes`; real mistakes throw, each in its file.
 */
export function importProfiles(profiles: ProfileToImport[], opts: { etcd?: string[] } = {}): ImportedProfile {
  const config: ClusterConfig = { nodes: [], peers: [], ...(opts.etcd ? { coupling: { etcd: opts.etcd } } : {}) };
  const notes: string[] = [];
  const parsed = profiles.map((x) => {
    const p = new Parser(tokenize(x.text), { importNode: x.node });
    const node = p.parse().nodes[0] ?? { name: x.node, xcf: '', internal: [], vipaDynamic: emptyVipaDynamic() };
    if (!p.places.has('0|node')) p.notes.push('no VIPADynamic block in the profile');
    const [v4, v6] = [p.dynamicXcf?.address, p.dynamicXcf6?.address];
    node.xcf = x.xcf ?? v4 ?? v6 ?? '';
    if (v6 !== undefined && v6 !== node.xcf && ipFamily(node.xcf) === 4) node.xcf6 = v6;
    if (!node.xcf) {
      const message = "no IPCONFIG DYNAMICXCF address in the profile: give the node's cluster address (--xcf)";
      p.problems.push({ line: 1, column: 1, message });
    }
    notes.push(...p.notes.map((n) => (profiles.length > 1 ? `${x.file} ${n}` : n)));
    config.nodes.push(node);
    return { p, file: x.file };
  });
  const nodes = new Set(config.nodes.flatMap(clusterAddresses));
  const targets = config.nodes
    .flatMap((n) => n.vipaDynamic.distribute)
    .flatMap((d) => (d.destinations === 'all' ? [] : d.destinations))
    .map((x) => x.xcf);
  const others = [...new Set(targets)].filter((xcf) => !nodes.has(xcf));
  if (membersFromEtcd(config)) {
    // As XCF does for z/OS stacks, etcd's member records name the other nodes: no PEERs.
    if (others.length) notes.push(`DESTIP ${others.join(' ')}: nodes found through their etcd member records`);
  } else {
    for (const xcf of others) config.peers.push({ name: `stack-${xcf.replace(/[.:]+/g, '-')}`, xcf });
    if (others.length) {
      notes.push('each DESTIP address of no imported node became a PEER: name them as your nodes are named');
    }
  }
  // Each problem in the file it comes from: a profile's own, or one across them (validate).
  const at = (n: number, what: string) => {
    const { p, file } = parsed[n];
    return { file, ...(p.places.get(`0|${what}`) ?? p.places.get('0|node') ?? { line: 1, column: 1 }) };
  };
  const own = parsed.flatMap(({ p, file }) => p.problems.map((x) => ({ ...x, file })));
  const problems = [...own, ...validate(config, at)];
  if (problems.length) {
    const order = (f?: string) => profiles.findIndex((x) => x.file === f);
    throw new ConfigError(
      profiles[0]?.file ?? '<profile>',
      problems
        .map(({ file, line, column, message }) => ({ file, line, column, message }))
        .sort((a, b) => order(a.file) - order(b.file) || a.line - b.line || a.column - b.column),
    );
  }
  return { config, notes };
}

/** One profile: importProfiles for a single node. */
export function importProfile(
  text: string,
  opts: { node: string; xcf?: string; etcd?: string[] },
  file = '<profile>',
): ImportedProfile {
  const { etcd, ...one } = opts;
  return importProfiles([{ text, file, ...one }], etcd ? { etcd } : {});
}
