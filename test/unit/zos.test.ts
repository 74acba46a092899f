/*
 * z/OS profiles as they are written. A corpus of VIPADYNAMIC blocks, our own, written from
 * the syntax of the z/OS IP Configuration Reference, one or more per keyword: each is read to
 * the right model or gives one error that names the z/OS keyword at its line:column, also as
 * 80-column cards with sequence numbers. Whole profiles: other statements recognised as
 * statements, `dvipa config import`, and round trips through `config show`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importProfile, importProfiles, parseProfile } from '../../src/config/profile.js';
import { formatProfile } from '../../src/config/format.js';
import { formatYamlConfig, parseYamlConfig } from '../../src/config/yaml.js';
import { ConfigError, type VipaDynamic } from '../../src/config/model.js';
import { PROFILE_STATEMENTS, ZOS_UNSUPPORTED } from '../../src/config/zos.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** A node's block, the body starting on line 3; targets 10.1.0.2-4 are peers. */
const profile = (body: string) =>
  [
    'NODE MVS1 XCF 10.1.0.1',
    'VIPADYNAMIC',
    body,
    'ENDVIPADYNAMIC',
    'PEER MVS2 XCF 10.1.0.2',
    'PEER MVS3 XCF 10.1.0.3',
    'PEER MVS4 XCF 10.1.0.4',
  ].join('\n');

/** The same text as 80-column cards: padded to column 72, a sequence number in columns 73-80. */
const cards = (text: string) =>
  text
    .split('\n')
    .map((l, i) => {
      assert.ok(l.length <= 72, `a card holds 72 columns: ${l}`);
      return `${l.padEnd(72)}${String((i + 1) * 100).padStart(8, '0')}`;
    })
    .join('\n');

const D = 'VIPADEFINE 255.255.255.0 198.51.100.10';

type Expect = ((v: VipaDynamic) => void) | RegExp;

/** [keywords covered, block body, the model it gives or the one error (line:column: message)] */
const CORPUS: Array<[string[], string, Expect]> = [
  [
    ['VIPADEFine', 'MOVEable', 'IMMEDiate'],
    'VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 198.51.100.10 198.51.100.11',
    (v) =>
      assert.deepEqual(
        v.define.map((d) => [d.address, d.moveable]),
        [
          ['198.51.100.10', 'immediate'],
          ['198.51.100.11', 'immediate'],
        ],
      ),
  ],
  [
    ['WHENIDLE'],
    'VIPADEF MOVE WHENIDLE 255.255.255.240 198.51.100.10',
    (v) => assert.equal(v.define[0].moveable, 'whenidle'),
  ],
  [
    ['DISRUPTive'],
    'VIPADEF MOVEABLE DISRUPT 255.255.255.0 198.51.100.10',
    (v) => assert.equal(v.define[0].moveable, 'disruptive'),
  ],
  [
    ['leading zeros'],
    'VIPADEFINE 255.255.255.000 198.051.100.010',
    (v) => assert.deepEqual(v.define[0], { address: '198.51.100.10', mask: '255.255.255.0', moveable: 'immediate' }),
  ],
  [
    ['octet above 255'],
    'VIPADEFINE 255.255.255.0 198.51.100.256',
    /^f:3:26: expected a DVIPA address, found "198.51.100.256"/,
  ],
  [
    ['not IPv6'],
    'VIPADEFINE 255.255.255.0 198.51.100.1:80',
    /^f:3:26: expected a DVIPA address, found "198.51.100.1:80"/,
  ],
  [
    ['TIER1'],
    'VIPADEFINE TIER1 255.255.255.0 198.51.100.10',
    /^f:3:12: TIER1 is a z\/OS option dvipa does not support: multi-tier/,
  ],
  [['TIER2', 'CPCSCOPE'], 'VIPADEFINE TIER2 CPCSCOPE 255.255.255.0 198.51.100.10', /^f:3:12: TIER2 is a z\/OS option/],
  [
    ['CPCSCOPE'],
    'VIPADEFINE CPCSCOPE 255.255.255.0 198.51.100.10',
    /^f:3:12: CPCSCOPE is a z\/OS option dvipa does not support/,
  ],
  [
    ['SERVICEMGR'],
    'VIPADEFINE MOVEABLE IMMEDIATE SERVICEMGR 255.255.255.0 198.51.100.10',
    /^f:3:31: SERVICEMGR is a z\/OS option/,
  ],
  [
    ['IPv6'],
    'VIPADEFINE MOVEABLE IMMEDIATE DVIPA1 2001:db8::10',
    /^f:3:31: DVIPA1: IPv6 DVIPAs .* dvipa does not support/,
  ],
  [
    ['VIPABackup', 'rank'],
    'VIPABACKUP 200 198.51.100.20 198.51.100.21',
    (v) =>
      assert.deepEqual(v.backup, [
        { address: '198.51.100.20', rank: 200 },
        { address: '198.51.100.21', rank: 200 },
      ]),
  ],
  [
    ['VIPABackup'],
    'VIPABACKUP MOVEABLE WHENIDLE 255.255.255.0 198.51.100.20',
    (v) =>
      assert.deepEqual(v.backup, [{ address: '198.51.100.20', rank: 1, moveable: 'whenidle', mask: '255.255.255.0' }]),
  ],
  [
    ['VIPABackup', 'SERVICEMGR'],
    'VIPABACKUP 50 MOVEABLE IMMEDIATE SERVICEMGR 255.255.255.0 198.51.100.20',
    /^f:3:34: SERVICEMGR is a z\/OS option/,
  ],
  [['VIPABackup', 'TIER1'], 'VIPABACKUP 50 TIER1 198.51.100.20', /^f:3:15: TIER1 is a z\/OS option/],
  [['VIPABackup', 'IPv6'], 'VIPABACKUP 50 MOVEABLE IMMEDIATE DVIPA6 2001:db8::20/64', /^f:3:34: DVIPA6: IPv6 DVIPAs/],
  [
    ['VIPADELete'],
    `${D}\nVIPADEFINE 255.255.255.0 198.51.100.11\nVIPADELETE 198.51.100.10\n${D}\n` +
      `VIPADISTRIBUTE 198.51.100.10 DESTIP ALL\nVIPADELETE 198.51.100.11`,
    (v) => {
      assert.deepEqual(
        v.define.map((d) => d.address),
        ['198.51.100.10'],
      );
      assert.equal(v.distribute.length, 1);
    },
  ],
  [
    ['VIPADELete'],
    `${D}\nVIPADISTRIBUTE 198.51.100.10 DESTIP ALL\nVIPADELETE 198.51.100.10`,
    (v) => assert.deepEqual([v.define, v.distribute], [[], []]),
  ],
  [
    ['VIPADELete'],
    'VIPADELETE 198.51.100.99',
    /^f:3:1: VIPADELETE 198.51.100.99: no VIPADEFine or VIPABackup of 198.51.100.99 above it/,
  ],
  [['VIPADELete', 'IPv6'], 'VIPADELETE DVIPA1', /^f:3:12: expected a DVIPA address, found "DVIPA1"/],
  [
    ['VIPADISTribute', 'DEFINE', 'PORT', 'DESTIP', 'ALL'],
    `${D}\nVIPADISTRIBUTE DEFINE 198.51.100.10 PORT 20 21 DESTIP ALL`,
    (v) =>
      assert.deepEqual(v.distribute[0], {
        address: '198.51.100.10',
        ports: [
          { from: 20, to: 20 },
          { from: 21, to: 21 },
        ],
        destinations: 'all',
        method: { name: 'roundrobin' },
        timedAffinity: 0,
      }),
  ],
  [
    ['DELEte'],
    `${D}\nVIPADISTRIBUTE 198.51.100.10 PORT 80 DESTIP ALL\n` +
      `VIPADISTRIBUTE 198.51.100.10 PORT 443 DESTIP ALL\n` +
      `VIPADISTRIBUTE DELETE 198.51.100.10 PORT 80 DESTIP ALL`,
    (v) =>
      assert.deepEqual(
        v.distribute.map((d) => d.ports),
        [[{ from: 443, to: 443 }]],
      ),
  ],
  [
    ['ROUNDROBIN'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD ROUNDROBIN 198.51.100.10\n  PORT 8000-8010\n  DESTIP 10.1.0.2\n         10.1.0.3`,
    (v) =>
      assert.deepEqual(
        [v.distribute[0].ports, v.distribute[0].destinations],
        [[{ from: 8000, to: 8010 }], [{ xcf: '10.1.0.2' }, { xcf: '10.1.0.3' }]],
      ),
  ],
  [
    ['WEIGHTEDActive', 'WEIGHT'],
    `${D}\nVIPADISTRIBUTE DISTM WEIGHTEDACTIVE 198.51.100.10 PORT 5000\n  DESTIP 10.1.0.2 WEIGHT 10 10.1.0.3 WEIGHT 20`,
    (v) =>
      assert.deepEqual(v.distribute[0].destinations, [
        { xcf: '10.1.0.2', weight: 10 },
        { xcf: '10.1.0.3', weight: 20 },
      ]),
  ],
  [
    ['SERVERWLM'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD SERVERWLM 198.51.100.10 PORT 23 DESTIP ALL`,
    (v) => assert.deepEqual(v.distribute[0].method, { name: 'serverwlm' }),
  ],
  [
    ['BASEWLM'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD BASEWLM 198.51.100.10 PORT 23 DESTIP ALL`,
    (v) => assert.deepEqual(v.distribute[0].method, { name: 'basewlm' }),
  ],
  [
    ['PROCTYPE'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD BASEWLM PROCTYPE CP 20 ZAAP 80 ZIIP 0\n  198.51.100.10 DESTIP ALL`,
    /^f:4:35: PROCTYPE is a z\/OS option .*WLM/,
  ],
  [
    ['PROCTYPE'],
    `${D}\nVIPADISTRIBUTE 198.51.100.10 PORT 23 DESTIP ALL\n  PROCTYPE CP 20 ZAAP 80 ZIIP 0`,
    /^f:5:3: PROCTYPE is a z\/OS option/,
  ],
  [
    ['PROCXCOST'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD SERVERWLM PROCXCOST ZAAP 1 ZIIP 5\n  198.51.100.10 DESTIP ALL`,
    /^f:4:37: PROCXCOST is a z\/OS option/,
  ],
  [
    ['ILWEIGHTING'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD SERVERWLM ILWEIGHTING 1\n  198.51.100.10 DESTIP ALL`,
    /^f:4:37: ILWEIGHTING is a z\/OS option/,
  ],
  [
    ['HOTSTANDBY', 'PREFerred', 'BACKup'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD HOTSTANDBY 198.51.100.10 PORT 443\n` +
      `  DESTIP 10.1.0.2 PREFERRED 10.1.0.3 BACKUP 100 10.1.0.4 BACKUP 50`,
    (v) => {
      assert.deepEqual(v.distribute[0].method, { name: 'hotstandby', autoSwitchBack: true, healthSwitch: true });
      assert.deepEqual(v.distribute[0].destinations, [
        { xcf: '10.1.0.2', role: 'preferred' },
        { xcf: '10.1.0.3', role: 'backup', rank: 100 },
        { xcf: '10.1.0.4', role: 'backup', rank: 50 },
      ]);
    },
  ],
  [
    ['AUTOSWITCHBack', 'NOHEALTHSWITCH'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD HOTSTANDBY AUTOSWITCHBACK NOHEALTHSWITCH\n` +
      `  198.51.100.10 DESTIP 10.1.0.2 PREF 10.1.0.3 BACK 1`,
    (v) => assert.deepEqual(v.distribute[0].method, { name: 'hotstandby', autoSwitchBack: true, healthSwitch: false }),
  ],
  [
    ['NOAUTOSWITCHBack', 'HEALTHSWITCH'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD HOTSTANDBY HEALTHSWITCH NOAUTOSWITCHB\n` +
      `  198.51.100.10 DESTIP 10.1.0.2 PREF 10.1.0.3 BACK 1`,
    (v) => assert.deepEqual(v.distribute[0].method, { name: 'hotstandby', autoSwitchBack: false, healthSwitch: true }),
  ],
  [
    ['TARGCONTROLLED'],
    `${D}\nVIPADISTRIBUTE DISTMETHOD TARGCONTROLLED 198.51.100.10 DESTIP ALL`,
    /^f:4:27: TARGCONTROLLED is a z\/OS option/,
  ],
  [
    ['TIMEDAFFinity', 'NOOPTLOCAL'],
    `${D}\nVIPADISTRIBUTE NOOPTLOCAL TIMEDAFF 30 DISTM ROUNDROBIN\n  198.51.100.10 DESTIP ALL`,
    (v) => assert.equal(v.distribute[0].timedAffinity, 30),
  ],
  [
    ['OPTLOCAL'],
    `${D}\nVIPADISTRIBUTE OPTLOCAL 2 198.51.100.10 DESTIP ALL`,
    /^f:4:16: OPTLOCAL is a z\/OS option dvipa does not support/,
  ],
  [
    ['SYSPLEXPorts'],
    `${D}\nVIPADISTRIBUTE SYSPLEXPORTS DISTM SERVERWLM 198.51.100.10\n  PORT 20 21 DESTIP ALL`,
    /^f:4:16: SYSPLEXPORTS is a z\/OS option/,
  ],
  [
    ['TIER1', 'GRE', 'CONTROLPORT'],
    `${D}\nVIPADISTRIBUTE TIER1 GROUP1 GRE CONTROLPORT 1702\n  DISTMETHOD TARGCONTROLLED\n` +
      `  198.51.100.10 PORT 80 DESTIP 10.1.0.2`,
    /^f:4:16: TIER1 is a z\/OS option/,
  ],
  [['GRE'], `${D}\nVIPADISTRIBUTE GRE 198.51.100.10 DESTIP ALL`, /^f:4:16: GRE is a z\/OS option/],
  [['ENCAP'], `${D}\nVIPADISTRIBUTE ENCAP 198.51.100.10 DESTIP ALL`, /^f:4:16: ENCAP is a z\/OS option/],
  [
    ['CONTROLPORT'],
    `${D}\nVIPADISTRIBUTE CONTROLPORT 1702 198.51.100.10 DESTIP ALL`,
    /^f:4:16: CONTROLPORT is a z\/OS option/,
  ],
  [
    ['TIER2'],
    `${D}\nVIPADISTRIBUTE DEFINE DISTMETHOD SERVERWLM TIER2 GROUP1\n  198.51.100.10 PORT 9001 DESTIP ALL`,
    /^f:4:44: TIER2 is a z\/OS option/,
  ],
  [
    ['VIPADISTribute', 'IPv6'],
    `${D}\nVIPADISTRIBUTE DVIPA1 PORT 80 DESTIP 2001:db8::2`,
    /^f:4:16: expected DISTMethod, TIMEDAFFinity or the DVIPA address, found "DVIPA1"/,
  ],
  [
    ['VIPARange', 'NONDISRUPTive'],
    'VIPARANGE DEFINE MOVEABLE NONDISRUPTIVE 255.255.255.0 198.51.100.0',
    (v) => assert.deepEqual(v.range, [{ address: '198.51.100.0', mask: '255.255.255.0', moveable: 'nondisruptive' }]),
  ],
  [
    ['VIPARange', 'DELEte'],
    'VIPARANGE 255.255.255.0 198.51.100.0\nVIPARANGE 255.255.0.0 198.18.0.0\n' +
      'VIPARANGE DELETE 255.255.255.0 198.51.100.0',
    (v) =>
      assert.deepEqual(
        v.range.map((r) => r.address),
        ['198.18.0.0'],
      ),
  ],
  [
    ['SAF'],
    'VIPARANGE DEFINE 255.255.255.0 198.51.100.0 SAF VIPAR1',
    /^f:3:45: SAF is a z\/OS option dvipa does not support/,
  ],
  [
    ['VIPARange', 'IPv6'],
    'VIPARANGE DEFINE MOVEABLE NONDISRUPTIVE DVIPAR6 2001:db8::/64',
    /^f:3:41: DVIPAR6: IPv6 DVIPAs/,
  ],
  [
    ['VIPAROUTE', 'DEFINE'],
    'VIPAROUTE DEFINE 10.1.0.2 192.0.2.2\nVIPAROUTE 10.1.0.3 192.0.2.3',
    (v) =>
      assert.deepEqual(v.route, [
        { xcf: '10.1.0.2', via: '192.0.2.2' },
        { xcf: '10.1.0.3', via: '192.0.2.3' },
      ]),
  ],
  [
    ['VIPAROUTE', 'DELEte'],
    'VIPAROUTE DEFINE 10.1.0.2 192.0.2.2\nVIPAROUTE DELETE 10.1.0.2 192.0.2.2',
    (v) => assert.equal(v.route, undefined),
  ],
  [
    ['VIPAROUTE'],
    'VIPAROUTE DEFINE 10.1.0.9 192.0.2.2',
    /^f:3:1: VIPAROUTE 10.1.0.9 is not the cluster address of any node/,
  ],
  [
    ['VIPAROUTE'],
    'VIPAROUTE DEFINE 10.1.0.2',
    /^f:4:1: expected the target's address to encapsulate to, found "ENDVIPADYNAMIC"/,
  ],
  [
    ['VIPASMparms'],
    'VIPASMPARMS SMMCAST 224.0.1.2 SMPORT 1637',
    /^f:3:1: VIPASMPARMS is a z\/OS statement dvipa does not support/,
  ],
];

function oneError(e: unknown, re: RegExp): boolean {
  return e instanceof ConfigError && e.problems.length === 1 && re.test(e.message);
}

function read(text: string): VipaDynamic {
  return parseProfile(text, 'f').nodes[0].vipaDynamic;
}

test('the corpus: each block gives its model, or one error naming the z/OS keyword at its place; also as cards', () => {
  for (const [keywords, body, expect] of CORPUS) {
    for (const text of [profile(body), cards(profile(body))]) {
      const what = `${keywords.join(', ')}: ${body}`;
      if (typeof expect === 'function') {
        expect(read(text));
        // What config show writes, in either form, reads back to the same model.
        const cfg = parseProfile(text);
        assert.deepEqual(parseProfile(formatProfile(cfg)), cfg, what);
        assert.deepEqual(parseYamlConfig(formatYamlConfig(cfg)), cfg, what);
        continue;
      }
      assert.throws(
        () => read(text),
        (e: unknown) => {
          assert.ok(e instanceof ConfigError, what);
          assert.equal(e.problems.length, 1, `${what}: one error, got\n${e.message}`);
          assert.match(e.message, expect, what);
          return true;
        },
      );
    }
  }
});

test('every z/OS keyword dvipa does not support is in the corpus and in docs/zos.md', () => {
  const covered = new Set(CORPUS.flatMap(([k]) => k));
  const doc = fs.readFileSync(path.join(ROOT, 'docs', 'zos.md'), 'utf8');
  const table = doc
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .join('\n');
  for (const k of ZOS_UNSUPPORTED) {
    assert.ok(covered.has(k.keyword), `${k.keyword} has a corpus block`);
    const row = new RegExp(`\\b${k.keyword.toUpperCase()}\\b.*\\| not supported`);
    assert.match(table, row, `${k.keyword} is in docs/zos.md's table`);
  }
  for (const s of PROFILE_STATEMENTS) assert.ok(doc.includes(s.name.toUpperCase()), `${s.name} is in docs/zos.md`);
});

test('mistakes after an unsupported keyword are still found, each once', () => {
  const text = profile(
    [
      'VIPADEFINE TIER1 255.255.255.0 198.51.100.10',
      'VIPABACKUP 999 198.51.100.20',
      'VIPADISTRIBUTE SYSPLEXPORTS 198.51.100.10 PORT 20',
      '   21 DESTIP ALL',
      'VIPADEFINE 255.255.255.0 198.51.100.30',
    ].join('\n'),
  );
  assert.throws(
    () => parseProfile(text, 'f'),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual(
        e.problems.map((p) => `${p.line}:${p.column}`),
        ['3:12', '4:12', '5:16'],
      );
      return true;
    },
  );
});

/** A whole profile as a z/OS system programmer keeps it: cards, `;` comments, statements over lines. */
const WHOLE = cards(
  [
    '; PROFILE.TCPIP for stack TCPCS1',
    'ARPAGE 20',
    'GLOBALCONFIG NOTCPIPSTATISTICS',
    'IPCONFIG DATAGRAMFWD SYSPLEXROUTING',
    '   DYNAMICXCF 010.001.000.001 255.255.255.0 1       ; the XCF address',
    'AUTOLOG 5',
    '   FTPD JOBNAME FTPD1',
    'ENDAUTOLOG',
    'VIPADYNAMIC',
    '  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 198.051.100.010',
    '  VIPADISTRIBUTE DEFINE SYSPLEXPORTS DISTMETHOD SERVERWLM',
    '     198.51.100.10 PORT 20 21 DESTIP 10.1.0.2 10.1.0.3',
    '  VIPADISTRIBUTE DISTMETHOD HOTSTANDBY NOHEALTHSWITCH 198.51.100.10',
    '     PORT 443 DESTIP 10.1.0.2 PREFERRED',
    '                     10.1.0.3 BACKUP 100',
    '  VIPABACKUP 100 198.51.100.20',
    '  VIPAROUTE DEFINE 10.1.0.2 192.0.2.2',
    'ENDVIPADYNAMIC',
    'PORT',
    '   21 TCP OMVS BIND 198.51.100.10     ; FTP',
    '   23 TCP INTCLIEN',
    'HOME',
    '   10.2.2.2 OSAL1',
    'INCLUDE SYS1.TCPPARMS(VIPARNG)',
    'BEGINROUTES',
    '  ROUTE DEFAULT 10.2.2.1 OSAL1 MTU 1492',
    'ENDROUTES',
    'START OSA1',
  ].join('\n'),
);

test('config check: each other PROFILE.TCPIP statement is one error naming it, never an operand', () => {
  assert.throws(
    () => parseProfile(WHOLE, 'p'),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      const named = e.problems.map((p) => `${p.line} ${p.message.split(' ')[0]}`);
      assert.deepEqual(named, [
        '2 ARPAGE',
        '3 GLOBALCONFIG',
        '4 IPCONFIG',
        '6 AUTOLOG',
        '9 expected',
        '11 SYSPLEXPORTS',
        '19 PORT',
        '22 HOME',
        '24 INCLUDE',
        '25 BEGINROUTES',
        '28 START',
      ]);
      assert.match(e.message, /p:9:1: expected a NODE statement before VIPADynamic/);
      return true;
    },
  );
  // After a statement over several lines (NODE ... INTERNAL), a profile statement is not an interface name.
  assert.throws(
    () => parseProfile('NODE n1 XCF 10.1.0.1 INTERNAL eth1\n  eth2\nIPCONFIG DATAGRAMFWD\n', 'f'),
    (e: unknown) => oneError(e, /^f:3:1: IPCONFIG is a z\/OS PROFILE.TCPIP statement/),
  );
  // A block statement without its END keyword does not take the rest of the file with it.
  assert.throws(
    () => parseProfile('AUTOLOG 5\n FTPD\nNODE n1 XCF 10.1.0\n', 'f'),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, /^f:1:1: AUTOLOG without ENDAUTOLOG is a z\/OS PROFILE.TCPIP statement/);
      assert.match(e.message, /\nf:3:13: expected the node's cluster \(XCF\) address, found "10.1.0"$/);
      return true;
    },
  );
  const inBlock = `${D}\nVIPADISTRIBUTE 198.51.100.10 PORT 80\n DESTIP 10.1.0.2\nINTERFACE OSA1 DEFINE IPAQENET`;
  assert.throws(
    () => parseProfile(profile(inBlock), 'f'),
    (e: unknown) => oneError(e, /^f:6:1: INTERFACE is a z\/OS/),
  );
});

test('every other PROFILE.TCPIP statement, operands over lines: one error each, one note each in import', () => {
  const lines: string[] = [];
  const at: Array<[number, string]> = [];
  for (const st of PROFILE_STATEMENTS) {
    const name = st.name.toUpperCase();
    at.push([lines.length + 1, name]);
    lines.push(`${name} OPERAND1`, '   OPERAND2 10.1.2.3 ; a comment');
    if (st.end) lines.push(st.end.toUpperCase());
  }
  const text = `${lines.join('\n')}\n${profile(D)}`;
  assert.throws(
    () => parseProfile(text, 'f'),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual(
        e.problems.map((p) => [p.line, p.message.split(' ')[0]]),
        at,
      );
      return true;
    },
  );
  const { notes, config } = importProfile(text, { node: 'MVS1', xcf: '10.1.0.1' });
  assert.equal(notes.filter((n) => / skipped \(/.test(n)).length, at.length, notes.join('\n'));
  assert.equal(config.nodes[0].vipaDynamic.define.length, 1);
});

test('config import: the block and the DYNAMICXCF address, the rest as notes; checks and round-trips', () => {
  const { config, notes } = importProfile(WHOLE, { node: 'MVS1' }, 'p');
  assert.equal(config.nodes[0].xcf, '10.1.0.1');
  const v = config.nodes[0].vipaDynamic;
  assert.deepEqual(v.define, [{ address: '198.51.100.10', mask: '255.255.255.0', moveable: 'immediate' }]);
  assert.deepEqual(v.backup, [{ address: '198.51.100.20', rank: 100 }]);
  assert.deepEqual(
    v.distribute.map((d) => [d.method, d.ports]),
    [[{ name: 'hotstandby', autoSwitchBack: true, healthSwitch: false }, [{ from: 443, to: 443 }]]],
  );
  const peers = config.peers.map((x) => `${x.name} ${x.xcf}`);
  assert.deepEqual(peers, ['stack-10-1-0-2 10.1.0.2', 'stack-10-1-0-3 10.1.0.3']);
  assert.deepEqual(v.route, [{ xcf: '10.1.0.2', via: '192.0.2.2' }], 'VIPAROUTE carried over');
  for (const n of [
    'line 2: ARPAGE skipped',
    'line 4: IPCONFIG DYNAMICXCF 10.1.0.1',
    'line 11: not carried over: VIPADISTRIBUTE DEFINE SYSPLEXPORTS',
    'line 19: PORT skipped',
    'line 24: INCLUDE skipped (import the included data set too',
    'line 28: START skipped',
  ]) {
    assert.ok(
      notes.some((x) => x.startsWith(n)),
      `${n} in\n${notes.join('\n')}`,
    );
  }
  assert.deepEqual(parseProfile(formatProfile(config)), config);
  assert.deepEqual(parseYamlConfig(formatYamlConfig(config)), config);
  assert.equal(importProfile(WHOLE, { node: 'MVS1', xcf: '10.1.0.9' }).config.nodes[0].xcf, '10.1.0.9');
  const block = (define: string) => `VIPADYNAMIC\nVIPADEFINE 255.255.255.0 ${define}\nENDVIPADYNAMIC\n`;
  const n = { node: 'n' };
  assert.throws(() => importProfile(block('198.51.100.10'), n, 'p'), /p:1:1: no IPCONFIG DYNAMICXCF address/);
  assert.throws(
    () => importProfile(`IPCONFIG DYNAMICXCF 10.1.0.1 255.255.255.0 1\n${block('198.51.100')}`, n, 'p'),
    /p:3:26: expected a DVIPA address, found "198.51.100"/,
    'a real mistake is an error, not a note',
  );
});

/** The second stack: backs the DVIPA up, is a target, and defines one of its own. */
const SECOND = [
  'IPCONFIG SYSPLEXROUTING DYNAMICXCF 10.1.0.2 255.255.255.0 1',
  'VIPADYNAMIC',
  '  VIPABACKUP 100 198.51.100.10',
  '  VIPADEFINE 255.255.255.0 198.51.100.30',
  '  VIPADISTRIBUTE 198.51.100.30 PORT 80 DESTIP 10.1.0.1 10.1.0.2',
  'ENDVIPADYNAMIC',
  'PORT 80 TCP HTTPD',
].join('\n');

test('config import of several profiles: one cluster file, DESTIP addresses resolved to imported nodes', () => {
  const first = { text: WHOLE, file: 'mvs1', node: 'MVS1' };
  const both = importProfiles([first, { text: SECOND, file: 'mvs2', node: 'MVS2' }]);
  assert.deepEqual(
    both.config.nodes.map((n) => `${n.name} ${n.xcf}`),
    ['MVS1 10.1.0.1', 'MVS2 10.1.0.2'],
  );
  assert.deepEqual(both.config.peers, [{ name: 'stack-10-1-0-3', xcf: '10.1.0.3' }], 'only what no imported node is');
  assert.ok(
    both.notes.includes('mvs2 line 7: PORT skipped (not part of a dvipa configuration)'),
    both.notes.join('\n'),
  );
  assert.deepEqual(parseProfile(formatProfile(both.config)), both.config);
  assert.deepEqual(parseYamlConfig(formatYamlConfig(both.config)), both.config);
  // A problem across profiles is placed in the file of the statement it concerns.
  const twice = SECOND.replace('VIPABACKUP 100 198.51.100.10', 'VIPADEFINE 255.255.255.0 198.51.100.10');
  assert.throws(
    () => importProfiles([first, { text: twice, file: 'mvs2', node: 'MVS2' }]),
    (e: unknown) => oneError(e, /^mvs2:3:3: 198.51.100.10 is defined \(VIPADEFine\) on MVS1 and MVS2/),
  );
});

test('dvipa config import, check and show: text and YAML, through the CLI (8 runs of the CLI)', () => {
  const cli = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-zos-'));
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'config', ...args], { encoding: 'utf8' });
  try {
    fs.writeFileSync(path.join(dir, 'PROFILE'), WHOLE);
    const text = run('import', path.join(dir, 'PROFILE'), '--node', 'MVS1');
    assert.equal(text.status, 0, text.stderr);
    assert.match(text.stdout, /^; Imported by dvipa config import .* for node MVS1\.\n; line 2: ARPAGE skipped/);
    assert.match(text.stdout, /^ {2}VIPAROUTE DEFINE 10.1.0.2 192.0.2.2$/m);
    const yaml = run('import', path.join(dir, 'PROFILE'), '--node', 'MVS1', '--yaml');
    assert.match(yaml.stdout, /^# line 11: not carried over: VIPADISTRIBUTE/m);
    fs.writeFileSync(path.join(dir, 'mvs1.cfg'), text.stdout);
    fs.writeFileSync(path.join(dir, 'mvs1.yaml'), yaml.stdout);
    const checked = run('check', path.join(dir, 'mvs1.cfg'));
    assert.equal(checked.status, 0, checked.stderr);
    // What config show prints, in both forms, reads back to the model import made.
    const model = importProfile(WHOLE, { node: 'MVS1' }).config;
    assert.deepEqual(JSON.parse(run('show', path.join(dir, 'mvs1.yaml'), '--json').stdout), model);
    assert.deepEqual(parseProfile(formatProfile(model)), model);
    assert.deepEqual(parseYamlConfig(formatYamlConfig(model)), model);
    const bad = run('check', path.join(dir, 'PROFILE'));
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /11 problems in .*PROFILE:\n.*PROFILE:2:1: ARPAGE is a z\/OS PROFILE.TCPIP statement/);
    fs.writeFileSync(path.join(dir, 'SECOND'), SECOND);
    const two = run('import', path.join(dir, 'PROFILE'), path.join(dir, 'SECOND'), '--node', 'MVS1', '--node', 'MVS2');
    assert.equal(two.status, 0, two.stderr);
    assert.match(two.stdout, /^NODE MVS2 XCF 10.1.0.2$/m);
    const badName = run('import', path.join(dir, 'PROFILE'), '--node', 'MVS 1');
    assert.equal(badName.status, 2);
    assert.match(badName.stderr, /--node "MVS 1": a name without spaces/);
    const noXcf = run('import', path.join(dir, 'PROFILE'), '--node', 'MVS1', '--xcf', '10.1.0');
    assert.equal(noXcf.status, 2);
    assert.match(noXcf.stderr, /--xcf 10.1.0: not an IPv4 address/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
