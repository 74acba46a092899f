/* Packet building and parsing, checksums, pcap reading and writing, address parsing. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildFrame, describeFrame, flowOf, parseFrame } from '../../src/net/packet.js';
import { checksum } from '../../src/net/checksum.js';
import { formatPcap, parsePcap, readPcap, writePcap } from '../../src/net/pcap.js';
import {
  canonicalIpv6,
  formatIpv4,
  formatIpv6,
  inPrefix6,
  ipFamily,
  parseIpv4,
  parseIpv6,
  parseMac,
} from '../../src/net/addr.js';

test('IPv4 and MAC addresses are parsed strictly', () => {
  assert.equal(parseIpv4('192.0.2.10'), 0xc000020a);
  assert.equal(formatIpv4(0xc000020a), '192.0.2.10');
  for (const bad of ['1.2.3', '256.1.1.1', '01.2.3.4', '1.2.3.4 ', '', '1..2.3'])
    assert.throws(() => parseIpv4(bad), /not an IPv4 address/, bad);
  assert.throws(() => parseMac('02:00:00:00:00'), /not a MAC address/);
});

test('IPv6 addresses are read in every RFC 4291 form and written in RFC 5952 form', () => {
  const cases: Array<[string, string]> = [
    ['2001:DB8:0:0:0:0:0:10', '2001:db8::10'],
    ['2001:0db8::0010', '2001:db8::10'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'], // the longest zero run
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of two equal runs
    ['2001:db8:1:1:1:1:0:1', '2001:db8:1:1:1:1:0:1'], // one zero group stays
    ['::ffff:192.0.2.1', '::ffff:c000:201'],
    ['2001:db8::198.18.0.1', '2001:db8::c612:1'],
  ];
  for (const [text, canonical] of cases) {
    assert.equal(canonicalIpv6(text), canonical, text);
    assert.equal(formatIpv6(parseIpv6(text)), canonical, text);
    assert.equal(ipFamily(text), 6, text);
  }
  const bad = [
    '',
    ':',
    ':::',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1::2::3',
    '12345::',
    'g::1',
    '2001:db8::10/64',
    'fe80::1%eth0',
    '1.2.3.4::',
    '::1.2.3',
    '::01.2.3.4',
    ' ::1',
    '1:2:3:4:5:6:7::8',
  ];
  for (const x of bad) {
    assert.equal(canonicalIpv6(x), undefined, x);
    assert.throws(() => parseIpv6(x), /not an IPv6 address/, x);
  }
  assert.equal(ipFamily('192.0.2.1'), 4);
  assert.equal(ipFamily('192.0.2'), undefined);
  const base = parseIpv6('2001:db8:ab00::');
  assert.ok(inPrefix6(parseIpv6('2001:db8:abff::1'), base, 40));
  assert.ok(!inPrefix6(parseIpv6('2001:db8:ac00::1'), base, 40));
  assert.ok(inPrefix6(parseIpv6('ffff::'), base, 0));
  assert.ok(!inPrefix6(parseIpv6('2001:db8:ab00::1'), base, 128));
});

test('the Internet checksum matches the RFC 1071 example', () => {
  // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (one's complement 220d).
  assert.equal(checksum(Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0x220d);
});

test('a built TCP frame parses back with valid checksums', () => {
  const f = buildFrame({
    saddr: '198.18.0.1',
    daddr: '192.0.2.10',
    sport: 1234,
    dport: 80,
    tcpFlags: { syn: true, ack: true },
    seq: 7,
    payload: Buffer.from('hello'),
    df: true,
    vlan: 9,
  });
  const p = parseFrame(f);
  assert.equal(p.error, undefined);
  assert.equal(p.eth!.vlan, 9);
  assert.ok(p.ipv4!.checksumOk && p.ipv4!.df);
  assert.deepEqual(p.ipv4!.tcp!.flags, { fin: false, syn: true, rst: false, psh: false, ack: true });
  assert.ok(p.ipv4!.tcp!.checksumOk);
  assert.deepEqual(flowOf(p), { saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 1234, dport: 80, proto: 6 });
  assert.equal(describeFrame(p), 'vlan 9 TCP 198.18.0.1:1234 > 192.0.2.10:80 [S.] len 45');
  // One flipped payload bit breaks the TCP checksum.
  f[f.length - 1] ^= 1;
  assert.equal(parseFrame(f).ipv4!.tcp!.checksumOk, false);
});

test('UDP and ICMP frames parse with valid checksums', () => {
  const u = parseFrame(
    buildFrame({ protocol: 'udp', saddr: '198.18.0.1', daddr: '192.0.2.10', sport: 5, dport: 53, payload: 11 }),
  );
  assert.ok(u.ipv4!.udp!.checksumOk);
  assert.equal(u.ipv4!.udp!.length, 19);
  const i = parseFrame(buildFrame({ protocol: 'icmp', saddr: '198.18.0.1', daddr: '192.0.2.10', payload: 16 }));
  assert.equal(i.ipv4!.icmp!.type, 8);
  assert.ok(i.ipv4!.icmp!.checksumOk);
});

test('the parser never throws on truncated or garbage input', () => {
  const f = buildFrame({ saddr: '198.18.0.1', daddr: '192.0.2.10', tcpFlags: { syn: true } });
  for (let len = 0; len <= f.length; len++) {
    const p = parseFrame(f.subarray(0, len));
    if (len < f.length) assert.ok(p.error, `length ${len} reports an error`);
    assert.equal(typeof describeFrame(p), 'string');
  }
  let seed = 7;
  for (let i = 0; i < 500; i++) {
    const junk = Buffer.from(Array.from({ length: i % 90 }, () => (seed = (seed * 1103515245 + 12345) >>> 0) & 255));
    describeFrame(parseFrame(junk));
  }
});

test('pcap: tcpdump (libpcap) reads what dvipa writes, checksums correct; dvipa reads what libpcap writes', () => {
  const frames = [
    buildFrame({
      saddr: '198.18.0.1',
      daddr: '192.0.2.10',
      sport: 40000,
      dport: 80,
      tcpFlags: { syn: true },
      payload: 5,
    }),
    buildFrame({ protocol: 'udp', saddr: '198.18.0.2', daddr: '192.0.2.10', sport: 40001, dport: 53, payload: 3 }),
    buildFrame({
      saddr: '198.18.0.3',
      daddr: '192.0.2.11',
      sport: 40002,
      dport: 443,
      vlan: 100,
      ipOptions: Buffer.from([1, 1, 1, 0]),
      payload: 10,
    }),
  ];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-pcap-'));
  try {
    const ours = path.join(dir, 'ours.pcap');
    writePcap(ours, frames);
    // tcpdump -vv checks the IP header and TCP/UDP checksums itself.
    const text = execFileSync('tcpdump', ['-r', ours, '-nn', '-vv', '-e'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const packets = text.split(/\n(?=\d\d:\d\d:\d\d)/).filter((p) => p.trim());
    assert.equal(packets.length, frames.length, text);
    assert.match(
      packets[0],
      /198\.18\.0\.1\.40000 > 192\.0\.2\.10\.80: Flags \[S\], cksum 0x[0-9a-f]+ \(correct\)/,
      text,
    );
    assert.match(packets[1], /198\.18\.0\.2\.40001 > 192\.0\.2\.10\.53: \[udp sum ok\]/, text);
    assert.match(
      packets[2],
      /vlan 100, .*options \(NOP,NOP,NOP,EOL\)[\s\S]*198\.18\.0\.3\.40002 > 192\.0\.2\.11\.443: .*cksum 0x[0-9a-f]+ \(correct\)/,
      text,
    );
    assert.doesNotMatch(text, /bad cksum|incorrect|truncated/i, text);
    // libpcap writes the same packets again, in its own way: dvipa reads them back unchanged.
    const theirs = path.join(dir, 'theirs.pcap');
    execFileSync('tcpdump', ['-r', ours, '-w', theirs], { stdio: 'ignore' });
    assert.deepEqual(
      readPcap(theirs).map((r) => r.frame),
      frames,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Ethernet (1), with the FCS flag (bit 28) and an FCS of 2 16-bit words (bits 29-31). */
const LINKTYPE_ETHERNET_FCS4 = (1 | (1 << 28) | (2 << 29)) >>> 0;

test('pcap: written frames read back byte for byte; bad files get clear errors', () => {
  const frames = [
    buildFrame({ saddr: '198.18.0.1', daddr: '192.0.2.10' }),
    buildFrame({ protocol: 'udp', saddr: '198.18.0.1', daddr: '192.0.2.10', payload: 3 }),
  ];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dvipa-pcap-'));
  try {
    const file = path.join(dir, 'x.pcap');
    writePcap(file, frames);
    assert.deepEqual(readPcap(file), [
      { frame: frames[0], wireLength: frames[0].length },
      { frame: frames[1], wireLength: frames[1].length },
    ]);

    // Big-endian files read the same.
    const le = formatPcap(frames);
    const be = Buffer.from(le);
    for (const off of [0, 8, 12, 16, 20]) be.writeUInt32BE(le.readUInt32LE(off), off);
    be.writeUInt16BE(2, 4);
    be.writeUInt16BE(4, 6);
    let o = 24;
    for (const f of frames) {
      for (const k of [0, 4, 8, 12]) be.writeUInt32BE(le.readUInt32LE(o + k), o + k);
      o += 16 + f.length;
    }
    assert.deepEqual(
      parsePcap(be).map((r) => r.frame),
      frames,
    );

    // A frame cut by the snap length keeps its length on the wire; one longer than that is refused.
    const cut = Buffer.from(le);
    cut.writeUInt32LE(frames[0].length + 1000, 24 + 12);
    assert.deepEqual(parsePcap(cut)[0], { frame: frames[0], wireLength: frames[0].length + 1000 });
    const longer = Buffer.from(le);
    longer.writeUInt32LE(frames[0].length - 1, 24 + 12);
    assert.throws(
      () => parsePcap(longer, 'l.pcap'),
      new RegExp(`l.pcap: record 1 at offset 24: captured length ${frames[0].length} exceeds the frame's length`),
    );
    // Frames that end with their FCS (link type bit 28, 2 words): the 4 bytes are not the frame's.
    const withFcs = formatPcap(frames.map((f) => Buffer.concat([f, Buffer.from([1, 2, 3, 4])])));
    withFcs.writeUInt32LE(LINKTYPE_ETHERNET_FCS4, 20);
    assert.deepEqual(
      parsePcap(withFcs),
      frames.map((f) => ({ frame: f, wireLength: f.length })),
    );

    assert.throws(
      () => parsePcap(le.subarray(0, le.length - 3), 'cut.pcap'),
      /cut.pcap: record 2 at offset \d+: \d+ bytes announced/,
    );
    const ng = Buffer.alloc(28);
    ng.writeUInt32LE(0x0a0d0d0a, 0);
    assert.throws(() => parsePcap(ng), /pcapng is not supported/);
    const raw = Buffer.from(le);
    raw.writeUInt32LE(101, 20);
    assert.throws(() => parsePcap(raw), /link type 101 is not Ethernet/);
    assert.throws(() => readPcap(path.join(dir, 'missing.pcap')), /no such file/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
