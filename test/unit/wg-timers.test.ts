import { describe, expect, it } from 'vitest';
import {
  KEEPALIVE_TIMEOUT_MS,
  MAX_TIMER_HANDSHAKES,
  PeerTimers,
  REJECT_AFTER_TIME_MS,
  REKEY_TIMEOUT_MS,
} from '../../src/wireguard/timers.js';

describe('PeerTimers (deadlines, no real timers)', () => {
  const jitter = (): number => 100;

  it('constants of §6.1', () => {
    expect(MAX_TIMER_HANDSHAKES).toBe(18);
    expect(REKEY_TIMEOUT_MS).toBe(5000);
    expect(KEEPALIVE_TIMEOUT_MS).toBe(10_000);
    expect(REJECT_AFTER_TIME_MS).toBe(180_000);
  });

  it('arming and disarming follow the events', () => {
    const t = new PeerTimers(jitter, 25_000);
    expect(t.pollAt()).toBeUndefined();
    t.dataSent(1000);
    expect(t.deadline('newHandshake')).toBe(1000 + 15_000 + 100);
    t.dataSent(2000); // already pending: not pushed back
    expect(t.deadline('newHandshake')).toBe(16_100);
    t.anyAuthenticatedPacketReceived();
    expect(t.deadline('newHandshake')).toBeUndefined();
    t.dataReceived(3000);
    expect(t.deadline('sendKeepalive')).toBe(13_000);
    t.dataReceived(4000);
    expect(t.needAnotherKeepalive).toBe(true);
    t.anyAuthenticatedPacketSent();
    expect(t.deadline('sendKeepalive')).toBeUndefined();
    t.anyAuthenticatedPacketTraversal(5000);
    expect(t.deadline('persistentKeepalive')).toBe(30_000);
    t.handshakeInitiated(6000);
    expect(t.deadline('retransmitHandshake')).toBe(11_100);
    t.handshakeAttempts = 3;
    t.handshakeComplete();
    expect(t.deadline('retransmitHandshake')).toBeUndefined();
    expect(t.handshakeAttempts).toBe(0);
    t.sessionDerived(7000);
    expect(t.deadline('zeroKeyMaterial')).toBe(7000 + 540_000);
    expect(t.pollAt()).toBe(30_000);
  });

  it('takeDue returns due timers earliest first and disarms them', () => {
    const t = new PeerTimers(jitter);
    t.set('sendKeepalive', 300);
    t.set('newHandshake', 100);
    t.set('zeroKeyMaterial', 900);
    expect(t.takeDue(50)).toBeUndefined();
    expect(t.takeDue(400)).toBe('newHandshake');
    expect(t.takeDue(400)).toBe('sendKeepalive');
    expect(t.takeDue(400)).toBeUndefined();
    expect(t.pollAt()).toBe(900);
    t.stopAll();
    expect(t.pollAt()).toBeUndefined();
  });

  it('persistent keepalive off: traversal arms nothing', () => {
    const t = new PeerTimers(jitter, 0);
    t.anyAuthenticatedPacketTraversal(1);
    expect(t.pollAt()).toBeUndefined();
  });
});
