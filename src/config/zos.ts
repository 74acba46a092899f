/*
 * What dvipa knows of z/OS Communications Server's PROFILE.TCPIP beyond the statements it
 * implements: the VIPADynamic keywords it does not support (each with the reason, shown in
 * the error and in docs/zos.md), and the names of the profile's other statements, so that
 * one pasted from a whole profile is recognised as a statement, never read as an operand.
 */

/** One z/OS keyword dvipa rejects by name: where z/OS accepts it, and why dvipa does not. */
export interface ZosKeyword {
  keyword: string;
  on: string[];
  why: string;
}

const DIST = 'VIPADISTribute';
const DEF = 'VIPADEFine';
const BAK = 'VIPABackup';
const TIERS = 'multi-tier distribution (z/OS and DataPower tiers) is not implemented';

export const ZOS_UNSUPPORTED: readonly ZosKeyword[] = [
  { keyword: 'VIPASMparms', on: [], why: 'service manager parameters for Cisco MNLB; dvipa has no service manager' },
  { keyword: 'SERVICEMGR', on: [DEF, BAK], why: 'Cisco MNLB service manager; dvipa has none' },
  { keyword: 'TIER1', on: [DEF, BAK, DIST], why: TIERS },
  { keyword: 'TIER2', on: [DEF, BAK, DIST], why: TIERS },
  { keyword: 'CPCSCOPE', on: [DEF, BAK], why: 'a DVIPA bound to one CPC (central processor complex): none on Linux' },
  { keyword: 'GRE', on: [DIST], why: 'tier 1 distribution to non-z/OS targets; dvipa encapsulates in IPIP' },
  { keyword: 'ENCAP', on: [DIST], why: 'tier 1 distribution to non-z/OS targets; dvipa encapsulates in IPIP' },
  { keyword: 'CONTROLPORT', on: [DIST], why: "the DataPower distributor agent's port; dvipa agents use their own" },
  { keyword: 'TARGCONTROLLED', on: [DIST], why: 'weights from DataPower tier 1 targets; SERVERWLM with load reports' },
  { keyword: 'PROCTYPE', on: [DIST], why: 'BASEWLM processor proportions (CP, zAAP, zIIP) come from z/OS WLM' },
  { keyword: 'PROCXCOST', on: [DIST], why: 'SERVERWLM zAAP/zIIP crossover cost comes from z/OS WLM' },
  { keyword: 'ILWEIGHTING', on: [DIST], why: 'SERVERWLM importance-level weighting comes from z/OS WLM' },
  {
    keyword: 'OPTLOCAL',
    on: [DIST],
    why:
      "a client's own stack keeping its connections when it is a target needs " +
      'a choice in the socket layer dvipa does not make (a routing node serves its own share anyway); see docs/zos.md',
  },
  {
    keyword: 'SYSPLEXPorts',
    on: [DIST],
    why:
      'ephemeral ports unique across the sysplex need a sysplex-wide port ' +
      'assignment (the EZBEPORT structure) dvipa does not have',
  },
  { keyword: 'SAF', on: ['VIPARange'], why: 'the RACF SERVAUTH resource guarding binds in a range; Linux has no SAF' },
];

/**
 * The other statements of PROFILE.TCPIP, as the z/OS Communications Server IP Configuration
 * Reference names them (capitals: the shortest form accepted). `end`: the statement is a block
 * that runs to that keyword.
 */
export const PROFILE_STATEMENTS: ReadonlyArray<{ name: string; end?: string }> = [
  { name: 'ARPAGE' },
  { name: 'ATMARPSV' },
  { name: 'ATMLIS' },
  { name: 'ATMPVC' },
  { name: 'AUTOLog', end: 'ENDAUTOLog' },
  { name: 'BEGINROUTES', end: 'ENDROUTES' },
  { name: 'BSDROUTINGPARMS', end: 'ENDBSDROUTINGPARMS' },
  { name: 'DATASETPREFIX' },
  { name: 'DEFADDRTABLE' },
  { name: 'DELETE' },
  { name: 'DEVice' },
  { name: 'GATEWAY' },
  { name: 'GLOBALCONFig' },
  { name: 'HOME' },
  { name: 'INCLUDE' },
  { name: 'INTERFACE' },
  { name: 'IPCONFIG' },
  { name: 'IPCONFIG6' },
  { name: 'IPSEC', end: 'ENDIPSEC' },
  { name: 'ITRACE' },
  { name: 'LINK' },
  { name: 'NETACCESS', end: 'ENDNETACCESS' },
  { name: 'NETMONITOR' },
  { name: 'PKTTRACE' },
  { name: 'PORT' },
  { name: 'PORTRANGE' },
  { name: 'PRIMARYINTERFACE' },
  { name: 'SACONFIG' },
  { name: 'SMFCONFIG' },
  { name: 'SMFPARMS' },
  { name: 'SOMAXCONN' },
  { name: 'SRCIP', end: 'ENDSRCIP' },
  { name: 'START' },
  { name: 'STOP' },
  { name: 'TCPCONFIG' },
  { name: 'TRANSLATE' },
  { name: 'UDPCONFIG' },
];

/** Statement names that are also operands inside the VIPADynamic block (VIPADISTribute ... PORT, DELEte). */
export const ALSO_OPERANDS = new Set(['PORT', 'DELETE']);

/**
 * Dotted decimal as z/OS reads it: leading zeros in an octet are decimal (010 is ten, not
 * eight), as IBM's examples write addresses. Returns the address without them, or undefined.
 */
export function zosIpv4(text: string): string | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  const octets = m.slice(1).map(Number);
  return octets.every((o) => o <= 255) ? octets.join('.') : undefined;
}

/** A z/OS data set line: columns 73-80 hold a sequence number (8 digits) that z/OS ignores. */
export function withoutSequenceNumber(line: string): string {
  return /^.{72}\d{8}\s*$/.test(line) ? line.slice(0, 72) : line;
}
