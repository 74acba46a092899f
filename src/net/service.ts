/* A distributed service (DVIPA, port, protocol) and the targets its connections go to. */
import type { Protocol } from './flow.js';

/** Port 0: every port of the DVIPA. */
export interface Service {
  vip: string;
  port: number;
  protocol: Protocol;
}
export interface Target {
  addr: string;
  weight: number;
}

export function serviceName(s: Service): string {
  return `${s.vip}:${s.port === 0 ? '*' : s.port}/${s.protocol}`;
}
