/**
 * Two in-memory TCP stacks on the two ends of a memory link, as the relay tests use them:
 * `stack` is tunroute's side of tun0 (its dispatcher answers ICMP, a relay sets its SYN
 * handler), `appStack` stands for an app's kernel, whose table makes the active opens.
 */
import { createMemoryLinkPair, type MemoryFaults, type MemoryLink } from '../../src/link/memory.js';
import { monotonicClock } from '../../src/clock.js';
import type { Logger } from '../../src/logger.js';
import { PacketDispatcher } from '../../src/stack/dispatcher.js';
import { TcpStack } from '../../src/stack/tcp-stack.js';

export interface StackPair {
  readonly appLink: MemoryLink;
  readonly tunLink: MemoryLink;
  /** tunroute's side. */
  readonly stack: TcpStack;
  /** The app's side. */
  readonly appStack: TcpStack;
  close(): void;
}

export function stackPair(log: Logger, faults?: MemoryFaults): StackPair {
  const [appLink, tunLink] = createMemoryLinkPair({ mtu: 1500, ...(faults === undefined ? {} : { faults }) });
  const stack = new TcpStack({ link: tunLink, clock: monotonicClock, logger: log });
  const d = new PacketDispatcher({ link: tunLink, icmp: 'reply', logger: log, tcp: stack.input });
  tunLink.onReceive((b) => d.onBatch(b));
  const appStack = new TcpStack({ link: appLink, clock: monotonicClock, logger: log });
  const ad = new PacketDispatcher({ link: appLink, icmp: 'drop', logger: log, tcp: appStack.input });
  appLink.onReceive((b) => ad.onBatch(b));
  return {
    appLink,
    tunLink,
    stack,
    appStack,
    close() {
      stack.close();
      appStack.close();
      appLink.close();
      tunLink.close();
    },
  };
}
