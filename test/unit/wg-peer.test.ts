/**
 * Peer behaviour: two peers on a fake network with a manual clock. Traces read as
 * "who:type" (1 initiation, 2 response, 3 cookie reply, 4 transport).
 */
import { describe, expect, it } from 'vitest';
import type { Datagram } from '../../src/wireguard/endpoint.js';
import { Keypair, Keypairs, REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES } from '../../src/wireguard/keypair.js';
import { Peer } from '../../src/wireguard/peer.js';
import {
  KEEPALIVE_TIMEOUT_MS,
  REJECT_AFTER_TIME_MS,
  REKEY_AFTER_TIME_MS,
  REKEY_TIMEOUT_JITTER_MAX_MS,
  REKEY_TIMEOUT_MS,
} from '../../src/wireguard/timers.js';
import { advance, deliver, EP_A, EP_B, icmpEcho, IP_A, IP_B, makePair, runUntil, toHex, type Delivery, type Pair } from './wg-harness.js';

const S = 1000;

function trace(d: Delivery): string[] {
  return d.trace.map((t) => `${t.from}:${t.data[0]}${t.data[0] === 4 && t.data.length === 32 ? 'k' : ''}`);
}

function keypairsOf(p: Peer): Keypairs {
  return (p as unknown as { keypairs: Keypairs }).keypairs;
}

function nonZero(c: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(c).filter(([, n]) => n > 0));
}

/** A and B with an established, confirmed session. */
function established(opts: Parameters<typeof makePair>[0] = {}): Pair {
  const p = makePair(opts);
  const d = deliver(p, p.a, p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 0)));
  expect(trace(d)).toEqual(['a:1', 'b:2', 'a:4']);
  return p;
}

describe('handshake on demand', () => {
  it('the responder queues its packets until the initiator confirms the session', () => {
    const p = makePair();
    const init = p.a.initiate(p.clock.now());
    const r1 = p.b.receive(p.clock.now(), init[0].data, EP_A);
    expect(r1.datagrams.map((d) => d.data[0])).toEqual([2]);
    // B holds only an unconfirmed keypair ("next"): its packet waits.
    expect(p.b.send(p.clock.now(), icmpEcho(IP_B, IP_A, 5))).toEqual([]);
    expect(p.b.stagedCount).toBe(1);
    expect(p.b.counters.initiationsRateLimited).toBe(1); // it would initiate, but just responded
    // A consumes the response and confirms with a keepalive; B then sends what waited.
    const r2 = p.a.receive(p.clock.now(), r1.datagrams[0].data, EP_B);
    expect(r2.datagrams.map((d) => d.data.length)).toEqual([32]);
    const r3 = p.b.receive(p.clock.now(), r2.datagrams[0].data, EP_A);
    expect(r3.datagrams.map((d) => d.data[0])).toEqual([4]);
    const r4 = p.a.receive(p.clock.now(), r3.datagrams[0].data, EP_B);
    expect(toHex(r4.packets[0])).toBe(toHex(icmpEcho(IP_B, IP_A, 5)));
    expect(p.a.counters.keepalivesSent).toBe(1);
    expect(p.b.counters.keepalivesReceived).toBe(1);
  });

  it('simultaneous initiations from both sides settle within one REKEY_TIMEOUT, nothing lost', () => {
    const p = makePair({ b: { endpoint: EP_A } });
    const t0 = p.clock.now();
    const fromA = p.a.send(t0, icmpEcho(IP_A, IP_B, 1));
    const fromB = p.b.send(t0, icmpEcho(IP_B, IP_A, 1));
    expect([...fromA, ...fromB].map((d) => d.data[0])).toEqual([1, 1]);
    // The two initiations cross: each side answers the other's and forgets its own.
    const d1 = deliver(p, p.a, fromA);
    const d2 = deliver(p, p.b, fromB);
    const got = { a: [...d1.toA, ...d2.toA], b: [...d1.toB, ...d2.toB] };
    const d3 = runUntil(p, t0 + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS);
    got.a.push(...d3.toA);
    got.b.push(...d3.toB);
    expect(got.b.map(toHex)).toEqual([toHex(icmpEcho(IP_A, IP_B, 1))]);
    expect(got.a.map(toHex)).toEqual([toHex(icmpEcho(IP_B, IP_A, 1))]);
    expect(p.a.hasSession(p.clock.now()) || p.b.hasSession(p.clock.now())).toBe(true);
  });

  it('packets queued during the handshake are bounded; the newest are kept', () => {
    const p = makePair({ a: { maxStagedPackets: 4 } });
    const lostB = (_d: Datagram, from: 'a' | 'b'): boolean => from === 'b';
    for (let i = 1; i <= 10; i++) deliver(p, p.a, p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, i)), lostB);
    expect(p.a.stagedCount).toBe(4);
    expect(p.a.counters.dropped.queue_overflow).toBe(6);
    expect(p.a.counters.initiationsSent).toBe(1);
    expect(p.a.counters.initiationsRateLimited).toBe(9);
    // The retransmitted initiation gets through: the 4 newest packets arrive, in order.
    const d = runUntil(p, p.clock.now() + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS);
    expect(d.toB.map((x) => x[5])).toEqual([7, 8, 9, 10]); // IP ident carries the sequence number
  });

  it('initiations are rate limited to one per REKEY_TIMEOUT', () => {
    const p = makePair();
    expect(p.a.initiate(p.clock.now())).toHaveLength(1);
    p.clock.advance(REKEY_TIMEOUT_MS - 1);
    expect(p.a.initiate(p.clock.now())).toHaveLength(0);
    p.clock.advance(1);
    expect(p.a.initiate(p.clock.now())).toHaveLength(1);
    expect(p.a.counters.initiationsRateLimited).toBe(1);
  });

  it('without an endpoint nothing can be initiated; packets wait', () => {
    const p = makePair();
    expect(p.b.send(p.clock.now(), icmpEcho(IP_B, IP_A, 1))).toEqual([]);
    expect(p.b.counters.noEndpoint).toBe(1);
    expect(p.b.stagedCount).toBe(1);
  });
});

describe('data both ways and rekeying', () => {
  it('rekeys every ~120 s under steady traffic without losing a packet', () => {
    const p = established();
    const t0 = p.clock.now();
    const sentAB: number[] = [];
    const sentBA: number[] = [];
    const gotB: number[] = [];
    const gotA: number[] = [];
    const handshakesAtA: number[] = [];
    let lastCompleted = p.a.counters.handshakesCompleted;
    for (let i = 1; i <= 400; i++) {
      const seq = i & 0xffff;
      const d1 = deliver(p, p.a, p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, seq, 100)));
      const d2 = deliver(p, p.b, p.b.send(p.clock.now(), icmpEcho(IP_B, IP_A, seq, 100)));
      sentAB.push(seq);
      sentBA.push(seq);
      for (const d of [d1, d2]) {
        gotB.push(...d.toB.map((x) => (x[4] << 8) | x[5]));
        gotA.push(...d.toA.map((x) => (x[4] << 8) | x[5]));
      }
      const d3 = runUntil(p, t0 + i * S);
      gotB.push(...d3.toB.map((x) => (x[4] << 8) | x[5]));
      gotA.push(...d3.toA.map((x) => (x[4] << 8) | x[5]));
      if (p.a.counters.handshakesCompleted !== lastCompleted) {
        lastCompleted = p.a.counters.handshakesCompleted;
        handshakesAtA.push(p.clock.now() - t0);
      }
    }
    expect(gotB).toEqual(sentAB);
    expect(gotA).toEqual(sentBA);
    // Rekeyed with the first packet sent after REKEY_AFTER_TIME: every 121-122 s at 1 packet/s.
    expect(handshakesAtA).toHaveLength(3);
    [0, ...handshakesAtA].slice(1).forEach((t, k, arr) => {
      const gap = t - (k === 0 ? 0 : arr[k - 1]);
      expect(gap).toBeGreaterThan(REKEY_AFTER_TIME_MS);
      expect(gap).toBeLessThanOrEqual(REKEY_AFTER_TIME_MS + 2 * S);
    });
    expect(nonZero(p.a.counters.dropped)).toEqual({});
    expect(nonZero(p.b.counters.dropped)).toEqual({});
  });

  it('a session that only receives is renewed by the initiator before REJECT_AFTER_TIME', () => {
    const p = established();
    const t0 = p.clock.now();
    const got: number[] = [];
    for (let i = 1; i <= 250; i++) {
      got.push(...deliver(p, p.b, p.b.send(p.clock.now(), icmpEcho(IP_B, IP_A, i))).toA.map((x) => x[5] | (x[4] << 8)));
      got.push(...runUntil(p, t0 + i * S).toA.map((x) => x[5] | (x[4] << 8)));
    }
    expect(got).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
    // A rekeyed on receive once its keypair passed 180 - 10 - 5 = 165 s.
    expect(p.a.counters.initiationsSent).toBe(2);
    expect(nonZero(p.b.counters.dropped)).toEqual({});
  });

  it('REKEY_AFTER_MESSAGES starts a handshake; REJECT_AFTER_MESSAGES stops sending with that keypair', () => {
    const p = established();
    p.clock.advance(REKEY_TIMEOUT_MS);
    keypairsOf(p.a).current!.sendCounter = REKEY_AFTER_MESSAGES + 1n;
    const out = p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 1));
    expect(out.map((d) => d.data[0])).toEqual([4, 1]);
    expect(p.b.receive(p.clock.now(), out[0].data, EP_A).packets).toHaveLength(1); // counter 2^60 + 1 is fine

    const q = established({ seed: 'reject-msgs' });
    q.clock.advance(REKEY_TIMEOUT_MS);
    keypairsOf(q.a).current!.sendCounter = REJECT_AFTER_MESSAGES;
    const out2 = q.a.send(q.clock.now(), icmpEcho(IP_A, IP_B, 2));
    expect(out2.map((d) => d.data[0])).toEqual([1]); // no data with an exhausted keypair
    expect(q.a.stagedCount).toBe(1);
  });

  it('counter near the limit: the last valid counter is sealed, then nothing', () => {
    const p = established();
    const kp = keypairsOf(p.a).current as Keypair;
    kp.sendCounter = REJECT_AFTER_MESSAGES - 1n;
    expect(kp.seal(new Uint8Array(0))).toBeDefined();
    expect(kp.seal(new Uint8Array(0))).toBeUndefined();
  });
});

describe('expiry and key erasure', () => {
  it('after REJECT_AFTER_TIME a keypair is neither used nor accepted, and its keys are wiped', () => {
    const p = established();
    const t0 = p.clock.now();
    const kpA = keypairsOf(p.a).current as Keypair;
    const kpB = keypairsOf(p.b).current as Keypair;
    // A transport message sealed now, delivered late.
    const late = p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 9));
    expect(late.map((d) => d.data[0])).toEqual([4]);
    p.clock.set(t0 + REJECT_AFTER_TIME_MS);
    expect(p.a.hasSession(p.clock.now())).toBe(false);
    expect(p.b.receive(p.clock.now(), late[0].data, EP_A).packets).toEqual([]);
    expect(p.b.counters.dropped.expired_key).toBe(1);
    // poll drops and wipes expired keypairs.
    expect(p.a.pollAt()).toBeLessThanOrEqual(t0 + REJECT_AFTER_TIME_MS);
    // A also starts a new handshake: its last data got no answer (the late message).
    expect(p.a.poll(p.clock.now()).map((d) => d.data[0])).toEqual([1]);
    p.b.poll(p.clock.now());
    expect(kpA.wiped).toBe(true);
    expect(kpB.wiped).toBe(true);
    expect(p.a.sessionInfo()).toEqual({ current: undefined, previous: undefined, next: undefined });
    expect(p.b.receive(p.clock.now(), late[0].data, EP_A).packets).toEqual([]);
    expect(p.b.counters.dropped.wrong_key).toBe(1);
    // Sending again waits for the new handshake.
    expect(p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 10))).toEqual([]);
    expect(p.a.stagedCount).toBe(1);
  });

  it('keypairs pushed out by rotation are wiped', () => {
    const p = established();
    const first = keypairsOf(p.a).current as Keypair;
    advance(p, REKEY_TIMEOUT_MS);
    deliver(p, p.a, p.a.initiate(p.clock.now()));
    expect(keypairsOf(p.a).previous).toBe(first);
    expect(first.wiped).toBe(false);
    advance(p, REKEY_TIMEOUT_MS);
    deliver(p, p.a, p.a.initiate(p.clock.now()));
    expect(first.wiped).toBe(true);
  });

  it('everything is erased REJECT_AFTER_TIME × 3 after the last session was derived', () => {
    const p = established();
    const t0 = p.clock.now();
    expect(p.a.timerDeadline('zeroKeyMaterial')).toBe(t0 + 3 * REJECT_AFTER_TIME_MS);
    runUntil(p, t0 + 3 * REJECT_AFTER_TIME_MS);
    const hs = (p.a as unknown as { handshake: { state: string; chainKey: Uint8Array } }).handshake;
    expect(hs.state).toBe('zeroed');
    expect(toHex(hs.chainKey)).toBe('00'.repeat(32));
    expect(p.a.pollAt()).toBeUndefined();
    expect(p.b.pollAt()).toBeUndefined();
  });

  it('destroy wipes the keys and makes the peer inert', () => {
    const p = established();
    const kp = keypairsOf(p.a).current as Keypair;
    p.a.destroy();
    expect(kp.wiped).toBe(true);
    expect(p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 1))).toEqual([]);
    expect(p.a.pollAt()).toBeUndefined();
  });
});

describe('timers', () => {
  it('retransmits the initiation every REKEY_TIMEOUT + jitter and gives up after REKEY_ATTEMPT_TIME', () => {
    const p = makePair();
    const t0 = p.clock.now();
    const lost = (): boolean => true;
    deliver(p, p.a, p.a.send(t0, icmpEcho(IP_A, IP_B, 1)), lost);
    const times: number[] = [0];
    let sent = p.a.counters.initiationsSent;
    for (let guard = 0; guard < 100; guard++) {
      const at = p.a.pollAt();
      if (at === undefined || at > t0 + 200 * S) break;
      p.clock.set(at);
      deliver(p, p.a, p.a.poll(at), lost);
      if (p.a.counters.initiationsSent !== sent) {
        sent = p.a.counters.initiationsSent;
        times.push(at - t0);
      }
    }
    // One initiation and 19 retransmissions ("MaxTimerHandshakes + 2" attempts in wireguard-go's
    // words, counting the one that found no answer), each REKEY_TIMEOUT + [0, 334) ms apart.
    expect(times).toHaveLength(20);
    for (let i = 1; i < times.length; i++) {
      const gap = times[i] - times[i - 1];
      expect(gap).toBeGreaterThanOrEqual(REKEY_TIMEOUT_MS);
      expect(gap).toBeLessThan(REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS);
    }
    expect(p.a.counters.dropped.handshake_failed).toBe(1);
    expect(p.a.stagedCount).toBe(0);
    expect(p.a.timerDeadline('retransmitHandshake')).toBeUndefined();
    expect(p.a.timerDeadline('zeroKeyMaterial')).toBeGreaterThan(p.clock.now());
  });

  it('passive keepalive: data received and nothing sent back for KEEPALIVE_TIMEOUT → a keepalive', () => {
    const p = established();
    const t0 = p.clock.now();
    const d = runUntil(p, t0 + KEEPALIVE_TIMEOUT_MS + 1);
    expect(trace(d)).toEqual(['b:4k']); // B answers A's data with a keepalive; A sends none back
    expect(p.b.counters.keepalivesSent).toBe(1);
    expect(runUntil(p, t0 + 100 * S).trace).toEqual([]);
  });

  it('new handshake when data was sent and nothing came back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT', () => {
    const p = established();
    const t0 = p.clock.now();
    const lostB = (_d: Datagram, from: 'a' | 'b'): boolean => from === 'b';
    deliver(p, p.a, p.a.send(t0, icmpEcho(IP_A, IP_B, 1)), lostB);
    const d = runUntil(p, t0 + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS, lostB);
    const inits = d.trace.filter((t) => t.from === 'a' && t.data[0] === 1);
    expect(inits).toHaveLength(1);
  });

  it('persistent keepalive: a keepalive after every idle interval, starting with a handshake at up', () => {
    const p = makePair({ a: { persistentKeepaliveSec: 25 } });
    const t0 = p.clock.now();
    const up = deliver(p, p.a, p.a.up(t0));
    expect(trace(up)).toEqual(['a:1', 'b:2', 'a:4k']);
    const d = runUntil(p, t0 + 100 * S);
    expect(trace(d)).toEqual(['a:4k', 'a:4k', 'a:4k', 'a:4k']); // at 25, 50, 75, 100 s
    p.a.persistentKeepaliveSec = 0;
    expect(runUntil(p, t0 + 200 * S).trace.filter((t) => t.from === 'a')).toEqual([]);
  });
});

describe('what arrives from the network is counted, never thrown', () => {
  it('replayed, forged, truncated, wrong-key and garbage datagrams are dropped and counted', () => {
    const p = established();
    const now = p.clock.now();
    const [msg] = p.a.send(now, icmpEcho(IP_A, IP_B, 1));
    expect(p.b.receive(now, msg.data, EP_A).packets).toHaveLength(1);
    expect(p.b.receive(now, msg.data, EP_A).packets).toHaveLength(0);
    const forged = new Uint8Array(msg.data);
    forged[40] ^= 0x01;
    const forgedCounter = new Uint8Array(p.a.send(now, icmpEcho(IP_A, IP_B, 2))[0].data);
    forgedCounter[8] ^= 0x80; // a counter the sender never used: the tag does not match
    const wrongKey = new Uint8Array(msg.data);
    wrongKey[4] ^= 0xff;
    const inputs: [string, Uint8Array][] = [
      ['forged', forged],
      ['forged', forgedCounter],
      ['truncated', msg.data.subarray(0, 31)],
      ['truncated', new Uint8Array(0)],
      ['wrong_key', wrongKey],
      ['unknown_type', Uint8Array.of(9, 0, 0, 0, 1, 2, 3)],
      ['bad_length', new Uint8Array(149).fill(0).map((_, i) => (i === 0 ? 1 : 0))],
      ['bad_mac1', Uint8Array.from({ length: 148 }, (_, i) => (i === 0 ? 1 : i < 4 ? 0 : i))],
      ['bad_mac1', Uint8Array.from({ length: 92 }, (_, i) => (i === 0 ? 2 : i < 4 ? 0 : i))],
      ['forged_cookie', Uint8Array.from({ length: 64 }, (_, i) => (i === 0 ? 3 : i < 4 ? 0 : i))],
    ];
    for (const [, data] of inputs) expect(p.b.receive(now, data, EP_A)).toEqual({ packets: [], datagrams: [] });
    const want: Record<string, number> = { replayed: 1 };
    for (const [k] of inputs) want[k] = (want[k] ?? 0) + 1;
    expect(nonZero(p.b.counters.dropped)).toEqual(want);
    // None of it moved the endpoint or hurt the session.
    expect(p.b.endpoint).toEqual(EP_A);
    expect(deliver(p, p.a, p.a.send(now, icmpEcho(IP_A, IP_B, 3))).toB).toHaveLength(1);
  });

  it('a replayed initiation is refused (its timestamp is not newer)', () => {
    const p = makePair();
    const [init] = p.a.initiate(p.clock.now());
    expect(p.b.receive(p.clock.now(), init.data, EP_A).datagrams).toHaveLength(1);
    p.clock.advance(S);
    expect(p.b.receive(p.clock.now(), init.data, { address: '198.51.100.9', port: 1 }).datagrams).toHaveLength(0);
    expect(p.b.counters.dropped.replayed_timestamp).toBe(1);
    expect(p.b.endpoint).toEqual(EP_A);
  });

  it('an initiation from another key is not this peer’s', () => {
    const p = makePair();
    const q = makePair({ seed: 'stranger' });
    const [init] = q.a.initiate(q.clock.now());
    // q.a knows q.b's key, not p.b's: mac1 fails first.
    p.b.receive(p.clock.now(), init.data, EP_A);
    expect(p.b.counters.dropped.bad_mac1).toBe(1);
  });

  it('malformed inner packets and disallowed sources are dropped after decryption', () => {
    const p = established({ b: { allowedSource: (pkt) => pkt[12] === 10 && pkt[15] === 1 } });
    const now = p.clock.now();
    const junk = p.a.send(now, Uint8Array.of(0x45, 0, 0xff, 0xff, ...new Uint8Array(30)));
    expect(p.b.receive(now, junk[0].data, EP_A).packets).toEqual([]);
    const v5 = p.a.send(now, new Uint8Array(40).fill(0x50));
    expect(p.b.receive(now, v5[0].data, EP_A).packets).toEqual([]);
    const spoofed = p.a.send(now, icmpEcho(0x0a630009, IP_B, 1));
    expect(p.b.receive(now, spoofed[0].data, EP_A).packets).toEqual([]);
    expect(nonZero(p.b.counters.dropped)).toEqual({ bad_inner_packet: 2, disallowed_source: 1 });
  });
});

describe('roaming', () => {
  it('the endpoint follows the last authenticated packet, not forged ones', () => {
    const p = established();
    const moved = { address: '203.0.113.5', port: 40000 };
    p.where.set(p.a, moved);
    const d = deliver(p, p.a, p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 1)));
    expect(d.toB).toHaveLength(1);
    expect(p.b.endpoint).toEqual(moved);
    const back = deliver(p, p.b, p.b.send(p.clock.now(), icmpEcho(IP_B, IP_A, 1)));
    expect(back.trace[0].from).toBe('b');
    expect(back.toA).toHaveLength(1); // delivered at the new address
    // A forged transport message from elsewhere changes nothing.
    const [m] = p.a.send(p.clock.now(), icmpEcho(IP_A, IP_B, 2));
    const f = new Uint8Array(m.data);
    f[f.length - 1] ^= 1;
    p.b.receive(p.clock.now(), f, { address: '198.51.100.1', port: 9 });
    expect(p.b.endpoint).toEqual(moved);
  });
});

describe('cookies under load', () => {
  it('a responder under load answers with a cookie reply; the retransmitted initiation with mac2 is accepted', () => {
    let loaded = true;
    const p = makePair({ b: { underLoad: () => loaded } });
    const t0 = p.clock.now();
    const d = deliver(p, p.a, p.a.send(t0, icmpEcho(IP_A, IP_B, 1)));
    expect(trace(d)).toEqual(['a:1', 'b:3']);
    expect(p.b.counters.cookieRepliesSent).toBe(1);
    expect(p.b.counters.dropped.cookie_required).toBe(1);
    expect(p.b.counters.initiationsReceived).toBe(0);
    expect(p.a.counters.cookieRepliesReceived).toBe(1);
    // No new initiation at once (§6.6); the retransmission carries the cookie.
    const r = runUntil(p, t0 + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS);
    expect(trace(r)).toEqual(['a:1', 'b:2', 'a:4']);
    expect(r.toB).toHaveLength(1);
    expect(p.b.counters.initiationsReceived).toBe(1);
    // A cookie from another address does not help.
    loaded = true;
    const q = makePair({ seed: 'cookie-roam', b: { underLoad: () => true } });
    deliver(q, q.a, q.a.send(q.clock.now(), icmpEcho(IP_A, IP_B, 1)));
    q.where.set(q.a, { address: '203.0.113.9', port: 1 });
    runUntil(q, q.clock.now() + REKEY_TIMEOUT_MS + REKEY_TIMEOUT_JITTER_MAX_MS);
    expect(q.b.counters.cookieRepliesSent).toBe(2);
    expect(q.b.counters.initiationsReceived).toBe(0);
  });
});
