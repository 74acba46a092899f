/*
 * One table of limits and defaults (config/settings.ts): both configuration syntaxes accept
 * exactly its ranges, and the agent's settings take a flag over the file over the default.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseProfile } from '../../src/config/profile.js';
import { parseYamlConfig } from '../../src/config/yaml.js';
import { DEFAULTS, LIMITS, resolveAgentSettings, SettingError } from '../../src/config/settings.js';
import { EXIT } from '../../src/errors.js';

const NODE = 'NODE n1 XCF 10.1.0.1\n';
const profile = (lease: number, seq: number) =>
  parseProfile(`CLUSTER ETCD http://x:2379 LEASETTL ${lease}\nCLUSTER IPSEC SEQMARGIN ${seq}\n${NODE}`);
const yaml = (lease: number, seq: number) =>
  parseYamlConfig(
    `coupling: { etcd: [http://x:2379], leaseTtl: ${lease} }\nipsec: { seqMargin: ${seq} }\nnodes: [{ name: n1, xcf: 10.1.0.1 }]\n`,
  );

test('both syntaxes accept exactly the ranges of LIMITS', () => {
  for (const parse of [profile, yaml]) {
    const [lo, hi] = LIMITS.leaseTtl;
    const [slo, shi] = LIMITS.seqMargin;
    assert.equal(parse(lo, slo).coupling?.leaseTtl, lo);
    assert.equal(parse(hi, shi).ipsec?.seqMargin, shi);
    assert.throws(() => parse(lo - 1, slo), new RegExp(`${lo} to ${hi}`));
    assert.throws(() => parse(hi + 1, slo), new RegExp(`${lo} to ${hi}`));
    assert.throws(() => parse(lo, shi + 1));
  }
});

test('agent settings: a flag over the file over the default; out of range is a usage error naming the flag', () => {
  const none = resolveAgentSettings({}, {});
  assert.deepEqual(
    none,
    {
      leaseTtlSec: DEFAULTS.leaseTtl,
      renewMs: DEFAULTS.renewMs,
      takebackDelaySec: DEFAULTS.takebackDelay,
      nopreempt: DEFAULTS.nopreempt,
      restartGraceSec: DEFAULTS.restartGrace,
      port: DEFAULTS.port,
      scanMs: DEFAULTS.scanMs,
      readyTargets: DEFAULTS.readyTargets,
      newFlowRate: DEFAULTS.newFlowRate,
    },
    'no IPsec without CLUSTER IPSEC or an IPsec flag',
  );
  const file = {
    coupling: { etcd: ['http://x:2379'], leaseTtl: 5, takebackDelay: 60, nopreempt: true },
    ipsec: { interval: 500 },
  };
  const fromFile = resolveAgentSettings({ ...file, newFlowRate: 0 }, {});
  assert.equal(fromFile.newFlowRate, 0, 'CLUSTER NEWFLOWRATE 0: no guard');
  assert.equal(resolveAgentSettings({ newFlowRate: 0 }, { newFlowRate: 5000 }).newFlowRate, 5000);
  assert.equal(fromFile.leaseTtlSec, 5);
  assert.equal(fromFile.takebackDelaySec, 60);
  assert.equal(fromFile.nopreempt, true);
  assert.deepEqual(fromFile.ipsec, { seqMargin: DEFAULTS.seqMargin, intervalMs: 500 });
  const flags = resolveAgentSettings(file, { leaseTtl: 2, takebackDelay: 0, nopreempt: false, ipsecInterval: 200 });
  assert.equal(flags.leaseTtlSec, 2);
  assert.equal(flags.takebackDelaySec, 0, 'a flag of 0 wins over the file');
  assert.equal(flags.nopreempt, false);
  assert.deepEqual(flags.ipsec, { seqMargin: DEFAULTS.seqMargin, intervalMs: 200 });
  assert.ok(resolveAgentSettings({}, { ipsecSeqMargin: 10 }).ipsec, 'an IPsec flag turns IPsec recovery on');
  assert.deepEqual(
    resolveAgentSettings({}, { ipsecVici: '/run/charon.vici' }).ipsec,
    { seqMargin: DEFAULTS.seqMargin, intervalMs: DEFAULTS.recordInterval, vici: '/run/charon.vici' },
    '--ipsec-vici turns it on too',
  );
  for (const [flags, name] of [
    [{ leaseTtl: 0 }, 'lease-ttl'],
    [{ renewMs: 4 }, 'renew-ms'],
    [{ takebackDelay: 1.5 }, 'takeback-delay'],
    [{ port: 70000 }, 'port'],
    [{ scanMs: 10 }, 'scan-ms'],
    [{ restartGrace: -1 }, 'restart-grace'],
    [{ ipsecInterval: 50 }, 'ipsec-interval'],
    [{ readyTargets: 1025 }, 'ready-targets'],
    [{ newFlowRate: -1 }, 'new-flow-rate'],
  ] as const) {
    assert.throws(
      () => resolveAgentSettings({}, flags),
      (e: unknown) => e instanceof SettingError && e.exit === EXIT.usage && e.message.startsWith(`--${name} `),
      name,
    );
  }
});
