/*
 * The configuration language and its YAML form: the seeds' Figure 4 cluster as a golden
 * model, every statement and abbreviation, every error with its place, round trips
 * between the forms, and random input that must end in a clear error, never a hang.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { importProfile, parseProfile } from '../../src/config/profile.js';
import { formatProfile } from '../../src/config/format.js';
import { formatYamlConfig, parseYamlConfig } from '../../src/config/yaml.js';
import { ConfigError, type ClusterConfig } from '../../src/config/model.js';

/*
 * Figure 4 of the seeds, with addresses for its names: MVS1 owns DVA1 and distributes it to
 * XCF1, XCF2 and XCF4; MVS5 owns DVB1, distributed to every stack (DESTIP ALL), and backs up
 * DVA1 with rank 10 and a distribution of its own; MVS2 backs up DVA1 with rank 30.
 */
const DVA1 = '198.51.100.1';
const DVB1 = '198.51.100.2';
const XCF = (n: number) => `10.1.0.${n}`;
const FIGURE4 = `
; The seeds' Figure 4
CLUSTER KEYFILE /etc/dvipa/cluster.key
NODE MVS1 XCF ${XCF(1)} EXTERNAL eth0 INTERNAL eth1
VIPADynamic
  VIPADEFine MOVEable IMMEDiate 255.255.255.0 ${DVA1}
  VIPADISTribute DISTMethod ROUNDROBIN ${DVA1} PORT 20-21 23
    DESTIP ${XCF(1)} ${XCF(2)} ${XCF(4)}
ENDVIPADynamic
NODE MVS2 XCF ${XCF(2)} INTERNAL eth1
VIPADynamic
  VIPABackup 30 ${DVA1}
ENDVIPADynamic
NODE MVS4 XCF ${XCF(4)}
NODE MVS5 XCF ${XCF(5)}
VIPADynamic
  VIPADEFine MOVEable IMMEDiate 255.255.255.0 ${DVB1}
  VIPADISTribute ${DVB1} DESTIP ALL
  VIPABackup 10 ${DVA1}
  VIPADISTribute ${DVA1} PORT 20-21 23 DESTIP ${XCF(1)} ${XCF(4)} ${XCF(5)}
ENDVIPADynamic
`;

const ports = [
  { from: 20, to: 21 },
  { from: 23, to: 23 },
];
const GOLDEN: ClusterConfig = {
  keyFile: '/etc/dvipa/cluster.key',
  peers: [],
  nodes: [
    {
      name: 'MVS1',
      xcf: XCF(1),
      external: 'eth0',
      internal: ['eth1'],
      vipaDynamic: {
        define: [{ address: DVA1, mask: '255.255.255.0', moveable: 'immediate' }],
        backup: [],
        distribute: [
          {
            address: DVA1,
            ports,
            destinations: [{ xcf: XCF(1) }, { xcf: XCF(2) }, { xcf: XCF(4) }],
            method: { name: 'roundrobin' },
            timedAffinity: 0,
          },
        ],
        range: [],
      },
    },
    {
      name: 'MVS2',
      xcf: XCF(2),
      internal: ['eth1'],
      vipaDynamic: { define: [], backup: [{ address: DVA1, rank: 30 }], distribute: [], range: [] },
    },
    { name: 'MVS4', xcf: XCF(4), internal: [], vipaDynamic: { define: [], backup: [], distribute: [], range: [] } },
    {
      name: 'MVS5',
      xcf: XCF(5),
      internal: [],
      vipaDynamic: {
        define: [{ address: DVB1, mask: '255.255.255.0', moveable: 'immediate' }],
        backup: [{ address: DVA1, rank: 10 }],
        distribute: [
          { address: DVB1, ports: 'all', destinations: 'all', method: { name: 'roundrobin' }, timedAffinity: 0 },
          {
            address: DVA1,
            ports,
            destinations: [{ xcf: XCF(1) }, { xcf: XCF(4) }, { xcf: XCF(5) }],
            method: { name: 'roundrobin' },
            timedAffinity: 0,
          },
        ],
        range: [],
      },
    },
  ],
};

test('Figure 4 parses to the golden model', () => {
  assert.deepEqual(parseProfile(FIGURE4, 'figure4.cfg'), GOLDEN);
});

test('both forms round-trip: profile -> model -> profile/YAML -> the same model', () => {
  const model = parseProfile(FIGURE4);
  assert.deepEqual(parseProfile(formatProfile(model)), model);
  assert.deepEqual(parseYamlConfig(formatYamlConfig(model)), model);
  assert.equal(formatProfile(parseProfile(formatProfile(model))), formatProfile(model), 'the written form is stable');
});

test('CLUSTER ETCD: the coupling facility and its options, in both forms', () => {
  const cfg = parseProfile(
    `CLUSTER ETCD http://10.1.0.100:2379 https://10.1.0.101:2379 LEASETTL 2 NOPREEMPT TAKEBACKDELAY 30\n${FIGURE4}`,
  );
  assert.deepEqual(cfg.coupling, {
    etcd: ['http://10.1.0.100:2379', 'https://10.1.0.101:2379'],
    leaseTtl: 2,
    nopreempt: true,
    takebackDelay: 30,
  });
  assert.deepEqual(parseProfile(formatProfile(cfg)), cfg);
  assert.deepEqual(parseYamlConfig(formatYamlConfig(cfg)), cfg);
  assert.deepEqual(parseProfile(`cluster etcd http://[2001:db8::1]:2379\n${FIGURE4}`).coupling, {
    etcd: ['http://[2001:db8::1]:2379'],
  });
  for (const [text, why] of [
    ['CLUSTER ETCD', /^f:4:1: expected an etcd URL .*found "CLUSTER"/],
    [
      'CLUSTER ETCD 10.1.0.100:2379',
      /^f:1:14: expected an etcd URL \(http:\/\/host:port or https:\/\/host:port\), found "10.1.0.100:2379"/,
    ],
    ['CLUSTER ETCD http://x:2379 LEASETTL 0', /^f:1:37: expected lease seconds \(1 to 300\), found "0"/],
    [
      'CLUSTER ETCD http://x:2379 LEASETTL 1 PREEMPT',
      /expected LEASETTL, NOPREEMPT, TAKEBACKDELAY or the next statement, found "PREEMPT"/,
    ],
  ] as Array<[string, RegExp]>)
    assert.throws(
      () => parseProfile(`${text}\n${FIGURE4}`, 'f'),
      (e: Error) => why.test(e.message),
      text,
    );
  assert.throws(
    () =>
      parseYamlConfig(
        'coupling: { etcd: [ftp://x], leaseTtl: 0, nopreempt: 1 }\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n',
        'c.yaml',
      ),
    (e: Error) =>
      /etcd\.0: expected an etcd URL/.test(e.message) &&
      /leaseTtl.*1 to 300/s.test(e.message) &&
      /nopreempt.*true or false/s.test(e.message),
  );
});

test('CLUSTER IDENTITIES: the directory of node keys, in both forms', () => {
  const cfg = parseProfile(`CLUSTER IDENTITIES /etc/dvipa/nodes\n${FIGURE4}`);
  assert.equal(cfg.identities, '/etc/dvipa/nodes');
  assert.deepEqual(parseProfile(formatProfile(cfg)), cfg);
  assert.deepEqual(parseYamlConfig(formatYamlConfig(cfg)), cfg);
  assert.equal(parseYamlConfig('identities: /k\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n').identities, '/k');
  assert.throws(() => parseProfile(`CLUSTER IDENT\n${FIGURE4}`, 'f'), /expected a directory of node keys/);
});

test('CLUSTER NEWFLOWRATE: the new-flow rate guard, in both forms, within its limits', () => {
  const cfg = parseProfile(`CLUSTER NEWFLOWRATE 50000\n${FIGURE4}`);
  assert.equal(cfg.newFlowRate, 50000);
  assert.deepEqual(parseProfile(formatProfile(cfg)), cfg);
  assert.deepEqual(parseYamlConfig(formatYamlConfig(cfg)), cfg);
  assert.equal(parseYamlConfig('newFlowRate: 0\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n').newFlowRate, 0);
  assert.throws(() => parseProfile(`CLUSTER NEWFLOWRATE -5\n${FIGURE4}`, 'f'), /new flows per second per CPU/);
  assert.throws(
    () => parseYamlConfig('newFlowRate: 1.5\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n'),
    /newFlowRate.*expected an integer from 0 to 100000000/s,
  );
});

test('CLUSTER IPSEC: IPsec recovery and its options, in both forms', () => {
  const cfg = parseProfile(
    `CLUSTER ETCD http://10.1.0.100:2379\nCLUSTER IPSEC SEQMARGIN 5000 INTERVAL 250\n${FIGURE4}`,
  );
  assert.deepEqual(cfg.ipsec, { seqMargin: 5000, interval: 250 });
  assert.deepEqual(parseProfile(formatProfile(cfg)), cfg);
  assert.deepEqual(parseYamlConfig(formatYamlConfig(cfg)), cfg);
  assert.deepEqual(parseProfile(`cluster ipsec\n${FIGURE4}`).ipsec, {}, 'on, with the defaults');
  assert.deepEqual(
    parseYamlConfig('ipsec:\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n').ipsec,
    {},
    'YAML: an empty ipsec section turns it on',
  );
  for (const [text, why] of [
    ['CLUSTER IPSEC SEQMARGIN 0', /^f:1:25: expected a sequence number margin \(1 to 2147483648\), found "0"/],
    ['CLUSTER IPSEC INTERVAL 10', /expected a record interval in milliseconds \(100 to 60000\), found "10"/],
    ['CLUSTER IPSEC REKEY', /expected SEQMARGIN, INTERVAL or the next statement, found "REKEY"/],
    ['CLUSTER SOMETHING', /expected KEYfile, IDENTITIES, ETCD, IPSEC or NEWFLOWRATE, found "SOMETHING"/],
  ] as Array<[string, RegExp]>)
    assert.throws(
      () => parseProfile(`${text}\n${FIGURE4}`, 'f'),
      (e: Error) => why.test(e.message),
      text,
    );
  assert.throws(
    () =>
      parseYamlConfig(
        'ipsec: { seqMargin: -1, interval: x, rekey: true }\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n',
        'c.yaml',
      ),
    (e: Error) => /rekey/.test(e.message),
  );
  assert.throws(
    () => parseYamlConfig('ipsec: { seqMargin: -1, interval: x }\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n', 'c.yaml'),
    (e: Error) => /seqMargin.*1 to 2147483648/s.test(e.message) && /interval.*100 to 60000/s.test(e.message),
  );
});

const node = (body: string) =>
  `NODE n1 XCF 10.1.0.1\nVIPADynamic\n${body}\nENDVIPADynamic\nPEER t2 XCF 10.1.0.2\nPEER t3 XCF 10.1.0.3\nPEER t4 XCF 10.1.0.4\n`;
const only = (body: string) => parseProfile(node(body)).nodes[0].vipaDynamic;

test('keywords: case-insensitive, shortened down to their capitalised part', () => {
  for (const kw of ['VIPADEF', 'vipadefi', 'VipaDefine', 'VIPADEFINE']) {
    assert.equal(only(`${kw} 255.255.255.255 198.51.100.1`).define.length, 1, kw);
  }
  for (const kw of ['VIPADE', 'VIPADEFINES', 'VIPAD']) {
    assert.throws(() => only(`${kw} 255.255.255.255 198.51.100.1`), ConfigError, kw);
  }
  const v = parseProfile(
    'node n1 xcf 10.1.0.1\nvipad\n vipadist distm weightedact 198.51.100.1 desTIP all\n vipadef 255.255.255.255 198.51.100.1\nendvipad\n',
  );
  assert.equal(v.nodes[0].vipaDynamic.distribute[0].method.name, 'weightedactive');
});

test('every statement form', () => {
  const v = only(`
    VIPADEFine 255.255.255.0 198.51.100.1 198.51.100.2   ; two DVIPAs, MOVEable IMMEDiate by default
    VIPADEFine MOVEable WHENIDLE 255.255.255.0 198.51.100.3
    VIPADEFine MOVEable DISRUPTive 255.255.255.0 198.51.100.4
    VIPABackup 198.51.100.10                              # rank 1 by default
    VIPABackup 200 MOVEable WHENIDLE 255.255.255.0 198.51.100.11
    VIPADISTribute DEFINE TIMEDAFFinity 60 DISTMethod HOTSTANDBY NOAUTOSWITCHBack 198.51.100.1
      PORT 443 DESTIP 10.1.0.2 PREFerred 10.1.0.3 BACKup 50 10.1.0.4 BACKup 20
    VIPADISTribute DISTMethod WEIGHTEDActive 198.51.100.2 PORT 8000-8010
      DESTIP 10.1.0.2 WEIGHT 30 10.1.0.3 WEIGHT 10
    VIPADISTribute DISTMethod SERVERWLM 198.51.100.3 DESTIP ALL
    VIPARange 255.255.255.0 198.51.100.0
    VIPARange DEFINE MOVEable DISRUPTive 255.255.0.0 198.18.0.0`);
  assert.deepEqual(
    v.define.map((d) => [d.address, d.moveable]),
    [
      ['198.51.100.1', 'immediate'],
      ['198.51.100.2', 'immediate'],
      ['198.51.100.3', 'whenidle'],
      ['198.51.100.4', 'disruptive'],
    ],
  );
  assert.deepEqual(v.backup, [
    { address: '198.51.100.10', rank: 1 },
    { address: '198.51.100.11', rank: 200, moveable: 'whenidle', mask: '255.255.255.0' },
  ]);
  assert.deepEqual(v.distribute[0], {
    address: '198.51.100.1',
    ports: [{ from: 443, to: 443 }],
    method: { name: 'hotstandby', autoSwitchBack: false, healthSwitch: true },
    timedAffinity: 60,
    destinations: [
      { xcf: '10.1.0.2', role: 'preferred' },
      { xcf: '10.1.0.3', role: 'backup', rank: 50 },
      { xcf: '10.1.0.4', role: 'backup', rank: 20 },
    ],
  });
  assert.deepEqual(v.distribute[1].destinations, [
    { xcf: '10.1.0.2', weight: 30 },
    { xcf: '10.1.0.3', weight: 10 },
  ]);
  assert.deepEqual(v.distribute[1].ports, [{ from: 8000, to: 8010 }]);
  assert.deepEqual(v.distribute[2].method, { name: 'serverwlm' });
  assert.deepEqual(v.range, [
    { address: '198.51.100.0', mask: '255.255.255.0', moveable: 'nondisruptive' },
    { address: '198.18.0.0', mask: '255.255.0.0', moveable: 'disruptive' },
  ]);
});

test('every error form, each with its line, column and what was expected', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /^f:1:1: expected at least one NODE statement/],
    ['NODE n1 XCF 10.1.0', /^f:1:13: expected the node's cluster \(XCF\) address, found "10.1.0"/],
    ['NODE n1 10.1.0.1', /^f:1:9: expected XCF, found "10.1.0.1"/],
    ['NODE n1 XCF 10.1.0.1 MTU 9000', /^f:1:22: expected EXTernal, INTernal or the next statement, found "MTU"/],
    ['NODE n1 XCF 2001:db8::1 10.1.0.1', /^f:1:25: 10.1.0.1: the node's second cluster address is its IPv6 one/],
    [
      'NODE n1 XCF 10.1.0.1 2001:db8::1 2001:db8::2',
      /^f:1:34: expected EXTernal, INTernal or the next statement, found "2001:db8::2"/,
    ],
    ['NODE n1 XCF 10.1.0.1 2001:db8::1::2', /^f:1:22: expected EXTernal, INTernal or the next statement, found "2001:/],
    // IPv4-mapped: IPv4 to the data plane, so never an IPv6 cluster address, DVIPA or target.
    [
      'NODE n1 XCF 10.1.0.1 ::ffff:10.1.0.9',
      /^f:1:22: ::ffff:10.1.0.9: an IPv4-mapped IPv6 address is IPv4 to dvipa: write 10.1.0.9/,
    ],
    ['NODE n1 XCF ::FFFF:a01:9', /^f:1:13: ::FFFF:a01:9: an IPv4-mapped IPv6 address is IPv4 to dvipa: write 10.1.0.9/],
    [
      node('VIPADEF DV6 ::ffff:198.51.100.1/64'),
      /^f:3:13: ::ffff:198.51.100.1: an IPv4-mapped IPv6 address is IPv4 to dvipa: write 198.51.100.1/,
    ],
    [
      node('VIPADEF DV6 2001:db8:9::1\nVIPADIST DV6 PORT 80 DESTIP ::ffff:10.1.0.1'),
      /^f:4:29: ::ffff:10.1.0.1: an IPv4-mapped IPv6 address is IPv4 to dvipa: write 10.1.0.1/,
    ],
    [
      'NODE n1 XCF 10.1.0.1 2001:db8::1\nNODE n2 XCF 10.1.0.2 2001:DB8::1',
      /^f:2:1: cluster address 2001:db8::1 is used by two nodes/,
    ],
    [
      'NODE n1 XCF 10.1.0.1\nNODE n2 XCF 2001:db8::2',
      /^f:1:1: n1 \(10.1.0.1\) and n2 \(2001:db8::2\) have no cluster address of one family/,
    ],
    [
      node('VIPADEF DV6 2001:db8:9::1\nVIPADIST DV6 PORT 80 DESTIP 10.1.0.5 2001:db8::2') +
        'PEER t5 XCF 10.1.0.5 2001:db8::2\n',
      /^f:4:1: DESTIP 10.1.0.5 and 2001:db8::2 are both t5's: name a target once/,
    ],
    ['VIPADynamic\nENDVIPADynamic', /^f:1:1: expected a NODE statement before VIPADynamic/],
    [
      'NODE n1 XCF 10.1.0.1\nVIPADEF 255.255.255.0 198.51.100.1',
      /^f:2:1: expected VIPADynamic before this statement, found "VIPADEF"/,
    ],
    [
      node('VIPADEF'),
      /^f:4:1: expected an address mask, or an IPv6 interface name and address, found "ENDVIPADynamic"/,
    ],
    [
      node('VIPADEF MOVEable SOMETIMES 255.0.0.0 198.51.100.1'),
      /^f:3:18: expected IMMEDiate, WHENIDLE or DISRUPTive, found "SOMETIMES"/,
    ],
    [node('VIPADEF 255.0.255.0 198.51.100.1'), /^f:3:1: 255.0.255.0 is not a contiguous address mask/],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADEF 255.0.0.0 198.51.100.1'),
      /^f:4:1: 198.51.100.1 is defined twice on n1/,
    ],
    [node('VIPAB 255 198.51.100.1'), /^f:3:7: expected a rank \(1 to 254\), found "255"/],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPAB 198.51.100.1'),
      /198.51.100.1 is both defined \(VIPADEFine\) and backed up \(VIPABackup\) on n1/,
    ],
    [
      node('VIPADIST 198.51.100.9 DESTIP ALL'),
      /^f:3:1: VIPADISTribute 198.51.100.9: the DVIPA must be defined on n1 by VIPADEFine or VIPABackup/,
    ],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST 198.51.100.1 PORT 0 DESTIP ALL'),
      /^f:4:28: expected a port \(1 to 65535\) or range \(from-to\), or DESTIP, found "0"/,
    ],
    [node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST 198.51.100.1 PORT 90-80 DESTIP ALL'), /found "90-80"/],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST 198.51.100.1 PORT 80'),
      /^f:5:1: expected a port \(1 to 65535\) or range \(from-to\), or DESTIP, found "ENDVIPADynamic"/,
    ],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST 198.51.100.1 DESTIP'),
      /expected ALL or a target's cluster \(XCF\) address, found "ENDVIPADynamic"/,
    ],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST OPTLOCAL 198.51.100.1 DESTIP ALL'),
      /^f:4:10: OPTLOCAL is a z\/OS option dvipa does not support/,
    ],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST DELETE 198.51.100.1 DESTIP ALL'),
      /^f:4:1: VIPADISTRIBUTE DELETE 198.51.100.1: no such VIPADISTribute above it/,
    ],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST DISTM HOTSTANDBY 198.51.100.1 DESTIP 10.1.0.2 BACK 1'),
      /needs exactly one PREFerred target, found 0/,
    ],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST DISTM HOTSTANDBY 198.51.100.1 DESTIP ALL'),
      /HOTSTANDBY needs an explicit DESTIP list/,
    ],
    [
      node(
        'VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST 198.51.100.1 PORT 80 DESTIP ALL\nVIPADIST 198.51.100.1 PORT 80 DESTIP ALL',
      ),
      /198.51.100.1 port 80-80 is distributed twice on n1/,
    ],
    [
      node('VIPASMPARMS SMMCAST 224.0.1.2 SMPORT 1637'),
      /^f:3:1: VIPASMPARMS is a z\/OS statement dvipa does not support/,
    ],
    [node('VIPARANGE 255.255.255.0'), /expected the range's base address, found "ENDVIPADynamic"/],
    [
      'NODE n1 XCF 10.1.0.1\nVIPADynamic\nVIPADEF 255.0.0.0 198.51.100.1',
      /^f:3:31: expected ENDVIPADynamic, found end of file/,
    ],
    [
      'NODE n1 XCF 10.1.0.1\nNODE n1 XCF 10.1.0.1',
      /^f:2:1: node n1 is defined twice[\s\S]*cluster address 10.1.0.1 is used by two nodes/,
    ],
    [
      node('VIPADEF 255.0.0.0 198.51.100.1\nVIPADIST 198.51.100.1 DESTIP 10.1.0.9'),
      /^f:4:1: DESTIP 10.1.0.9 is not the cluster address of any node or peer/,
    ],
    [
      'NODE a XCF 10.1.0.1\nVIPADynamic\nVIPADEF 255.0.0.0 198.51.100.1\nENDVIPADynamic\nNODE b XCF 10.1.0.2\nVIPADynamic\nVIPADEF 255.0.0.0 198.51.100.1\nENDVIPADynamic',
      /^f:7:1: 198.51.100.1 is defined \(VIPADEFine\) on a and b: one node owns a DVIPA, the others back it up/,
    ],
    ['BOGUS\nNODE n1 XCF 10.1.0.1', /^f:1:1: expected a statement \(CLUSTER, NODE, PEER, VIPADynamic\), found "BOGUS"/],
    ['NODE n1 XCF 10.1.0.1\nBOGUS', /^f:2:1: expected EXTernal, INTernal or the next statement, found "BOGUS"/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => parseProfile(text, 'f'),
      (e: unknown) => e instanceof ConfigError && re.test(e.message),
      `${JSON.stringify(text)} should fail with ${re}`,
    );
  }
  // One mistake is one problem: no cascade after it.
  const several = node('VIPADEF 255.0.0.0 1.2.3\nVIPADEF 255.0.0.0 198.51.100.7\nVIPAB 999 198.51.100.8');
  assert.throws(
    () => parseProfile(several, 'f'),
    (e: unknown) => e instanceof ConfigError && e.problems.length === 2,
  );
});

test('YAML: same model, problems with line and column', () => {
  const yaml = formatYamlConfig(GOLDEN);
  assert.deepEqual(parseYamlConfig(yaml), GOLDEN);
  const bad = [
    'nodes:',
    '  - name: n1',
    '    xcf: 10.1.0',
    '    vipaDynamic:',
    '      define: [{ address: 198.51.100.1, mask: 255.255.255.0, moveable: later }]',
    '      distribute:',
    '        - address: 198.51.100.9',
    '          ports: [80, "90-80"]',
    '          destinations: all',
    '          method: fastest',
    '    colour: blue',
  ].join('\n');
  assert.throws(
    () => parseYamlConfig(bad, 'c.yaml'),
    (e: unknown) => {
      const m = (e as Error).message;
      return (
        e instanceof ConfigError &&
        /c.yaml:3:10: nodes.0.xcf: expected an IPv4 or IPv6 address, found "10.1.0"/.test(m) &&
        /c.yaml:5:\d+: nodes.0.vipaDynamic.define.0.moveable: expected one of immediate, whenidle, disruptive, found "later"/.test(
          m,
        ) &&
        /c.yaml:8:\d+: nodes.0.vipaDynamic.distribute.0.ports.1: expected a port/.test(m) &&
        /c.yaml:10:\d+: nodes.0.vipaDynamic.distribute.0.method: expected one of roundrobin/.test(m) &&
        /c.yaml:11:5: nodes.0.colour: unknown key/.test(m)
      );
    },
  );
  assert.throws(() => parseYamlConfig('nodes: [\n', 'broken.yaml'), /broken.yaml:\d+:\d+: /);
  assert.throws(
    () => parseYamlConfig('nodes: [{ name: n1, xcf: 010.001.000.001 }]\n', 'z.yaml'),
    /z.yaml:1:\d+: nodes.0.xcf: expected an IPv4 address without leading zeros: 10.1.0.1, found "010.001.000.001"/,
  );
});

test('YAML: IPv6 DVIPAs with their interface names and prefix lengths, dual cluster addresses; precise errors', () => {
  const good = [
    'nodes:',
    '  - name: r1',
    '    xcf: 10.1.0.1',
    '    xcf6: 2001:db8:1::1',
    '    vipaDynamic:',
    '      define: [{ interface: DVIPA6A, address: "2001:DB8:100::10", mask: 64 }]',
    '      distribute: [{ address: 2001:db8:100::10, ports: [80], destinations: [2001:db8:1::2] }]',
    '      range: [{ interface: DVR6, address: "2001:db8:200::", mask: 48 }]',
    '  - name: r2',
    '    xcf: 2001:db8:1::2',
    '    vipaDynamic:',
    '      backup: [{ interface: DVIPA6A, address: 2001:db8:100::10, rank: 9 }]',
  ].join('\n');
  const cfg = parseYamlConfig(good, 'g.yaml');
  assert.deepEqual(cfg.nodes[0].vipaDynamic.define, [
    { address: '2001:db8:100::10', mask: '64', interface: 'DVIPA6A', moveable: 'immediate' },
  ]);
  assert.equal(cfg.nodes[0].xcf6, '2001:db8:1::1');
  assert.equal(cfg.nodes[1].xcf, '2001:db8:1::2');
  assert.deepEqual(parseYamlConfig(formatYamlConfig(cfg)), cfg);
  assert.deepEqual(parseProfile(formatProfile(cfg)), cfg);
  const bad = [
    'nodes:',
    '  - name: r1',
    '    xcf: 2001:db8:1::1',
    '    xcf6: 2001:db8:1::5',
    '    vipaDynamic:',
    '      define:',
    '        - { address: 2001:db8:100::10, mask: 129, interface: DVIPA6A }',
    '        - { address: 2001:db8:100::11 }',
    '        - { address: 2001:db8:100::12, interface: D6C, moveable: whenidle }',
    '        - { address: 198.51.100.1, mask: 255.255.255.0, interface: D4 }',
    '      range: [{ interface: DVR6, address: "2001:db8:200::" }]',
  ].join('\n');
  assert.throws(
    () => parseYamlConfig(bad, 'b.yaml'),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual(e.message.split('\n'), [
        'b.yaml:4:11: nodes.0.xcf6: xcf6 goes beside an IPv4 xcf (an IPv6-only node gives its address as xcf)',
        'b.yaml:7:46: nodes.0.vipaDynamic.define.0.mask: expected an integer from 0 to 128, found 129',
        "b.yaml:8:11: nodes.0.vipaDynamic.define.1.interface: expected the IPv6 DVIPA's interface name (a letter first, at most 16 characters)",
        'b.yaml:9:66: nodes.0.vipaDynamic.define.2.moveable: an IPv6 DVIPA moves immediate only (z/OS)',
        'b.yaml:10:68: nodes.0.vipaDynamic.define.3.interface: only for an IPv6 DVIPA (z/OS names its interface)',
        'b.yaml:11:15: nodes.0.vipaDynamic.range.0.mask: expected a prefix length (0 to 128)',
      ]);
      return true;
    },
  );
  const mapped = [
    'nodes:',
    '  - name: r1',
    '    xcf: 10.1.0.1',
    '    xcf6: "::ffff:10.1.0.5"',
    '    vipaDynamic:',
    '      define: [{ interface: DVIPA6A, address: "::ffff:198.51.100.1" }]',
  ].join('\n');
  assert.throws(
    () => parseYamlConfig(mapped, 'm.yaml'),
    (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.deepEqual(e.message.split('\n'), [
        'm.yaml:4:11: nodes.0.xcf6: ::ffff:10.1.0.5: an IPv4-mapped IPv6 address is IPv4 to dvipa: write 10.1.0.5',
        'm.yaml:6:47: nodes.0.vipaDynamic.define.0.address: ::ffff:198.51.100.1: an IPv4-mapped IPv6 address is IPv4 to dvipa: write 198.51.100.1',
      ]);
      return true;
    },
  );
});

test('random input ends in a clear error or a model, never a hang or a crash', () => {
  const words = [
    'NODE',
    'n1',
    'XCF',
    '10.1.0.1',
    'VIPADynamic',
    'ENDVIPADynamic',
    'VIPADEF',
    'VIPAB',
    'VIPADIST',
    'VIPARANGE',
    'DESTIP',
    'ALL',
    'PORT',
    '80',
    '1-2',
    '255.255.255.0',
    '198.51.100.1',
    'MOVEable',
    'IMMEDiate',
    'DISTM',
    'HOTSTANDBY',
    'PREF',
    'BACK',
    'WEIGHT',
    '7',
    ';',
    '\n',
    'CLUSTER',
    'KEYFILE',
    'PEER',
    'VIPADELETE',
    'x',
    // z/OS: unsupported keywords, other profile statements and blocks, leading zeros, IPv6 forms.
    'SYSPLEXPORTS',
    'OPTLOCAL',
    'TIER1',
    'VIPAROUTE',
    'VIPASMPARMS',
    'SAF',
    'DELETE',
    'IPCONFIG',
    'DYNAMICXCF',
    'AUTOLOG',
    'ENDAUTOLOG',
    'HOME',
    'BEGINROUTES',
    'ENDROUTES',
    '010.001.000.001',
    'DVIPA1',
    '2001:db8::1',
    'HEALTHSWITCH',
    'BASEWLM',
  ];
  let seed = 99;
  const rand = (n: number) => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n;
  for (let i = 0; i < 3000; i++) {
    const text = Array.from({ length: rand(40) }, () => words[rand(words.length)]).join(' ');
    for (const read of [() => parseProfile(text), () => importProfile(text, { node: 'n', xcf: '10.1.0.1' })]) {
      try {
        read();
      } catch (e) {
        assert.ok(e instanceof ConfigError, `${JSON.stringify(text)}: ${(e as Error).stack}`);
        assert.ok(e.problems.length > 0 && e.problems.every((p) => p.line >= 1 && p.column >= 1));
      }
    }
  }
});

test('dvipa config check and show', () => {
  const cli = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'cli', 'main.js');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-config-'));
  try {
    fs.writeFileSync(path.join(dir, 'figure4.cfg'), FIGURE4);
    fs.writeFileSync(path.join(dir, 'bad.cfg'), node('VIPAB 999 198.51.100.1'));
    const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'config', ...args], { encoding: 'utf8' });
    const ok = run('check', path.join(dir, 'figure4.cfg'));
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /ok \(4 nodes, 2 DVIPAs defined\)/);
    const bad = run('check', path.join(dir, 'bad.cfg'));
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /bad.cfg:3:7: expected a rank \(1 to 254\), found "999"/);
    const json = run('show', path.join(dir, 'figure4.cfg'), '--json');
    assert.deepEqual(JSON.parse(json.stdout), GOLDEN);
    const yaml = run('show', path.join(dir, 'figure4.cfg'), '--yaml');
    fs.writeFileSync(path.join(dir, 'figure4.yaml'), yaml.stdout);
    assert.deepEqual(JSON.parse(run('show', path.join(dir, 'figure4.yaml'), '--json').stdout), GOLDEN);
    assert.equal(run('check', path.join(dir, 'missing.cfg')).status, 2);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
