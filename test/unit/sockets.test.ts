/* The reconciliation scan's reading of /proc/net/tcp and tcp6: both families, wildcards, mapped addresses. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as os from 'node:os';
import { connectionsOn, listensOn, parseProcNetTcp } from '../../src/cluster/sockets.js';

// /proc/net/tcp6 as a little-endian kernel prints it: each 32-bit word of the address as a host-order number.
const HEADER = '  sl  local_address                         remote_address                        st tx_queue rx_queue';
const TCP6 = [
  HEADER,
  // [::]:8080 listening
  '   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000',
  // [2001:db8:9::10]:8080 <- [2001:db8:9::1]:40000 established
  '   1: B80D0120000009000000000010000000:1F90 B80D0120000009000000000001000000:9C40 01 00000000:00000000',
  // [::ffff:192.0.2.10]:80 <- [::ffff:198.18.0.5]:1234 established (a dual-stack socket's IPv4 peer)
  '   2: 0000000000000000FFFF00000A0200C0:0050 0000000000000000FFFF0000050012C6:04D2 01 00000000:00000000',
  // malformed: skipped, never a crash
  '   3: B80D01200000:1F90 zz:0000 01 00000000:00000000',
].join('\n');

test(
  'tcp6: IPv6 addresses in RFC 5952 form, :: as the wildcard of both families, mapped addresses as IPv4',
  {
    skip: os.endianness() !== 'LE' && "the sample is a little-endian kernel's",
  },
  () => {
    const s = parseProcNetTcp(TCP6);
    assert.deepEqual(
      s.map((x) => `${x.local}:${x.localPort} ${x.remote}:${x.remotePort} ${x.state}`),
      [
        ':::8080 :::0 listen',
        '2001:db8:9::10:8080 2001:db8:9::1:40000 established',
        '192.0.2.10:80 198.18.0.5:1234 established',
      ],
    );
    assert.ok(listensOn(s, '2001:db8:9::10', 8080));
    assert.ok(listensOn(s, '192.0.2.77', 8080), ':: is dual-stack');
    assert.ok(!listensOn(s, '2001:db8:9::10', 80));
    const v4only = parseProcNetTcp(`${HEADER}\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000`);
    assert.ok(listensOn(v4only, '192.0.2.77', 8080));
    assert.ok(!listensOn(v4only, '2001:db8:9::10', 8080), '0.0.0.0 does not serve IPv6');
    assert.deepEqual(connectionsOn(s, new Set(['2001:db8:9::10', '192.0.2.10'])), [
      { saddr: '2001:db8:9::1', daddr: '2001:db8:9::10', sport: 40000, dport: 8080 },
      { saddr: '198.18.0.5', daddr: '192.0.2.10', sport: 1234, dport: 80 },
    ]);
  },
);
