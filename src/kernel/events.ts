/* Kernel event sources read on Node's event loop: a BPF ring buffer, XFRM and rtnetlink notifications. */
import { native, type XfrmEventMessage } from './addon.js';
import { about } from './errors.js';

export type { XfrmEventMessage };

export interface EventSource {
  close(): void;
}

/** Reads the ring buffer map `name` (fd `mapFd`); `onRecords` gets each batch of records. */
export function openRingBuffer(name: string, mapFd: number, onRecords: (records: Buffer[]) => void): EventSource {
  return about(name, () => new native.RingBuffer(mapFd, onRecords));
}

/**
 * XFRM notifications of the calling thread's network namespace: `groups` the XFRMNLGRP_x
 * numbers to join, `rcvBuf` the socket's receive buffer (4 MiB by default).
 */
export function openXfrmEvents(
  groups: readonly number[],
  onMessages: (msgs: XfrmEventMessage[]) => void,
  rcvBuf?: number,
): EventSource {
  return about('xfrm events', () => new native.XfrmEvents(groups, onMessages, rcvBuf));
}

/**
 * rtnetlink notifications of the calling thread's network namespace, read as XFRM's are:
 * `groups` the RTNLGRP_x numbers to join.
 */
export function openRouteEvents(
  groups: readonly number[],
  onMessages: (msgs: XfrmEventMessage[]) => void,
  rcvBuf?: number,
): EventSource {
  return about('rtnetlink events', () => new native.RouteEvents(groups, onMessages, rcvBuf));
}
