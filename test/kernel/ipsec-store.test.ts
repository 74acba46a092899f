/*
 * The IPsec SA store: records sealed (AES-256-GCM, key derived from the cluster key, bound
 * to their place), refused when sealed with another key, moved, corrupt, malformed, ahead
 * of the DVIPA's epoch or older than the newest records; the sequence-number jump for a
 * re-install; and on a real etcd, writes fenced by ownership.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  forReinstall,
  openRecord,
  readRecords,
  recordKey,
  sealRecord,
  storeKey,
  StoreError,
  type SaRecord,
} from '../../src/ipsec/store.js';
import { ANY_SELECTOR, NO_LIMITS, type Sa } from '../../src/ipsec/xfrm.js';
import { etcdFixture } from '../helpers/etcd.js';

const DVIPA = '192.0.2.10';
const SA: Sa = {
  src: DVIPA,
  dst: '203.0.113.7',
  spi: 0xc0ffee01,
  proto: 'esp',
  mode: 'tunnel',
  reqid: 7,
  flags: 0,
  selector: { ...ANY_SELECTOR, src: '198.18.10.0', srcPrefix: 24, dst: '198.18.20.0', dstPrefix: 24 },
  aead: { name: 'rfc4106(gcm(aes))', key: randomBytes(20), icvBits: 128 },
  lifetime: NO_LIMITS,
  replay: { oseq: 4000000000, seq: 17, oseqHi: 0, seqHi: 0, window: 128, bitmap: Buffer.alloc(16, 0xff), esn: true },
};
const record = (epoch: number, sa = SA): SaRecord => ({
  dvipa: DVIPA,
  epoch,
  owner: 'r1',
  savedAt: '2026-11-23T10:00:00.000Z',
  sa,
  policies: [],
});
const KEY = storeKey(randomBytes(32));
const WHERE = recordKey(DVIPA, SA);

test('a sealed record opens with the same key at the same place, every field intact (keys, bigints)', () => {
  const r = record(3);
  assert.deepEqual(openRecord(KEY, WHERE, sealRecord(KEY, WHERE, r), 3), r);
  assert.equal(WHERE, 'ipsec/192.0.2.10/esp-203.0.113.7-c0ffee01');
  assert.ok(!sealRecord(KEY, WHERE, r).includes(SA.aead!.key), 'the key material is not stored in the clear');
});

test('refused, each with a clear reason: another key, another place, corrupt, not a record, ahead of the epoch', () => {
  const blob = sealRecord(KEY, WHERE, record(3));
  const cases: Array<[() => unknown, RegExp]> = [
    [
      () => openRecord(storeKey(randomBytes(32)), WHERE, blob, 3),
      /does not open: sealed with another cluster key, moved from another place, or corrupt/,
    ],
    [() => openRecord(KEY, recordKey(DVIPA, { ...SA, spi: 1 }), blob, 3), /does not open/],
    [
      () =>
        openRecord(
          KEY,
          WHERE,
          Buffer.concat([blob.subarray(0, 40), Buffer.from([blob[40] ^ 1]), blob.subarray(41)]),
          3,
        ),
      /does not open/,
    ],
    [() => openRecord(KEY, WHERE, Buffer.from('{"epoch": 3}'), 3), /not a dvipa SA record/],
    [() => openRecord(KEY, WHERE, blob, 2), /written at epoch 3, ahead of the DVIPA's epoch 2: refused/],
  ];
  for (const [f, why] of cases)
    assert.throws(
      f,
      (e: Error) => e instanceof StoreError && why.test(e.message) && e.message.startsWith(`${e.key}: `),
    );
});

test("a deposed owner's older records are refused; the newest epoch's are kept", () => {
  const other = { ...SA, spi: 0xc0ffee02 };
  const blobs = new Map([
    [WHERE, sealRecord(KEY, WHERE, record(4))],
    [recordKey(DVIPA, other), sealRecord(KEY, recordKey(DVIPA, other), record(3, other))],
    ['ipsec/192.0.2.10/junk', Buffer.from('garbage')],
  ]);
  const { records, refused } = readRecords(KEY, blobs, 5);
  assert.deepEqual(
    records.map((r) => r.sa.spi),
    [SA.spi],
  );
  assert.deepEqual(refused.map((e) => e.message.replace(/: .*/, '')).sort(), [
    'ipsec/192.0.2.10/esp-203.0.113.7-c0ffee02',
    'ipsec/192.0.2.10/junk',
  ]);
  assert.match(
    refused.find((e) => e.key.endsWith('c0ffee02'))!.message,
    /epoch 3 by r1, older than the newest records \(epoch 4\): a deposed owner's, refused/,
  );
});

test('re-install: outbound sequence numbers jump by the margin (carrying into the ESN high half); without ESN a wrap is refused', () => {
  const j = forReinstall(SA, 500000000);
  assert.deepEqual([j.replay.oseq, j.replay.oseqHi, j.replay.seq], [4000000000 + 500000000 - 2 ** 32, 1, 17]);
  assert.equal(forReinstall(SA, 0).replay.oseq, SA.replay.oseq);
  const plain = { ...SA, replay: { ...SA.replay, esn: false } };
  assert.equal(forReinstall(plain, 1000).replay.oseq, 4000001000);
  assert.throws(() => forReinstall(plain, 500000000), /passes 2\^32 without ESN: re-key it instead/);
  assert.throws(() => forReinstall(SA, -1), /whole number/);
});

const etcd = etcdFixture();

test('on etcd: only the owner of the epoch writes; records are listed and cleared per DVIPA', async () => {
  const cf = await etcd.join('r1');
  const owner = await cf.claim(DVIPA, 256, cf.view(DVIPA));
  assert.ok(owner);
  assert.equal(await cf.putBlobsFenced([[WHERE, sealRecord(KEY, WHERE, record(owner.epoch))]], DVIPA, owner), true);
  assert.equal(
    await cf.putBlobsFenced([[WHERE, sealRecord(KEY, WHERE, record(owner.epoch - 1))]], DVIPA, {
      ...owner,
      epoch: owner.epoch - 1,
    }),
    false,
    "a deposed owner's write fails",
  );
  const blobs = await cf.getBlobs(`ipsec/${DVIPA}/`);
  const { records, refused } = readRecords(KEY, blobs, owner.epoch);
  assert.deepEqual([records.length, refused.length, records[0].epoch], [1, 0, owner.epoch]);
  assert.equal(
    await cf.deleteBlobsFenced(`ipsec/${DVIPA}/`, DVIPA, { ...owner, epoch: owner.epoch - 1 }),
    false,
    "a deposed owner's delete fails",
  );
  assert.equal((await cf.getBlobs(`ipsec/${DVIPA}/`)).size, 1);
  assert.equal(await cf.deleteBlobsFenced(`ipsec/${DVIPA}/`, DVIPA, owner), true);
  assert.equal((await cf.getBlobs(`ipsec/${DVIPA}/`)).size, 0);
});
