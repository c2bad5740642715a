/**
 * Route management: the pure plan (plan.ts), its application (apply.ts), the journal and
 * teardown (journal.ts, teardown.ts), the running side (manager.ts), `why` (why.ts).
 */
import type { Config } from '../config/schema.js';
import { hostProbe, probeRouteEnv, type HostProbe } from './host.js';
import { planRoutes, type RoutePlan } from './plan.js';

export { planRoutes, describePlan, describePlanLines, invert, toIpBatch, toIpCommand, ROUTE_PROTO, KILL_SWITCH_METRIC } from './plan.js';
export type { RoutePlan, RouteOp, Change, ExplainData, PlanMode, Table } from './plan.js';
export { applyPlan, removePlan, createIpRunner, ipBatchRunner } from './apply.js';
export type { IpRunner, BatchResult } from './apply.js';
export { hostProbe, probeRouteEnv, parseNetworkView, readCidrFiles } from './host.js';
export type { HostProbe, RouteEnv, NetworkView } from './host.js';
export { journalPath, readJournal, readStateFile, writeStateFile, defaultStateDir, resolveStateDir, HOST_STATE_DIR } from './journal.js';
export type { Journal } from './journal.js';
export { cleanupJournals, describeCleanup } from './teardown.js';
export type { CleanupEntry, CleanupOptions } from './teardown.js';
export { RouteManager, ipMonitorWatcher } from './manager.js';
export type { RouteManagerOptions, RouteWatcher, RunAs } from './manager.js';
export { DomainRoutes, domainRoutesOf, domainRoutesOfPlan } from './domain-routes.js';
export type { DomainRouteAnswer } from './domain-routes.js';
export type { DnsPlan } from './plan.js';
export { parseDestination, explainDestination, explainDataFromJournal, whyFromConfig, whyFromJournal } from './why.js';
export { explainName, parseNameDestination } from './why-name.js';
export type { WhyNameAnswer, NameDestination, NameDecider, FakeIpEntry } from './why-name.js';
export type { WhyAnswer, Destination, OutboundDecider } from './why.js';
// measureRouteApply lives in ./measure.js (it needs the lab, so it is not re-exported here).

/** The plan `up` would apply on this host now (`--dry-run`, `check`): reads, never changes. */
export async function planForHost(config: Config, host: HostProbe = hostProbe()): Promise<RoutePlan> {
  return planRoutes(config, await probeRouteEnv(config, host));
}
