import { describe, expect, it } from 'vitest';
import { encodeRequest, encodeResponse, errorResponse, okResponse, parseRequest, parseResponse, type StatusSnapshot } from '../../src/control/protocol.js';
import { newOutboundStats } from '../../src/outbound/outbound.js';
import { newDropCounters } from '../../src/wire/drop.js';

function snapshot(): StatusSnapshot {
  return {
    version: '0.1.0',
    pid: 1,
    startedAt: '2024-05-01T10:00:00.000Z',
    uptimeMs: 5,
    device: { name: 'tun0', mtu: 1500, address: '198.18.0.1/15' },
    routes: 1,
    link: { rxPackets: 1, rxBytes: 2, txPackets: 3, txBytes: 4, txErrors: 0 },
    packets: { rxPackets: 1, tcpPackets: 1, udpPackets: 0, icmpEchoReplied: 0, icmpEchoDropped: 0, fragments: 0, dropped: 0, drops: newDropCounters() },
    tcp: { flowsOpen: 1, flowsTotal: 1, refusedLimit: 0, refusedMemory: 0, refusedFds: 0, refusedUid: 0, refusedNoName: 0, upstreamErrors: newOutboundStats().tcpFailures, bytesUp: 10, bytesDown: 20 },
    outbounds: { proxy: newOutboundStats() },
    flows: [{ id: 1, src: '198.18.0.1:1000', dst: '10.0.0.1:80', outbound: 'proxy', state: 'ESTABLISHED', bytesUp: 10, bytesDown: 20, ageMs: 5 }],
  };
}

describe('parseRequest', () => {
  it('accepts every command of version 1, ignoring fields it does not know', () => {
    expect(parseRequest(encodeRequest('status').trimEnd())).toEqual({ ok: true, request: { v: 1, cmd: 'status' } });
    expect(parseRequest('{"v":1,"cmd":"flows","limit":5}')).toEqual({ ok: true, request: { v: 1, cmd: 'flows' } });
    expect(parseRequest('{"cmd":"ping","v":1}')).toEqual({ ok: true, request: { v: 1, cmd: 'ping' } });
  });

  it.each([
    ['not JSON', '{"v":1,', /^the request is not JSON/],
    ['a JSON number', '42', /^a request is one JSON object per line/],
    ['a JSON array', '[1]', /^a request is one JSON object per line/],
    ['null', 'null', /^a request is one JSON object per line/],
    ['no version', '{"cmd":"status"}', /^the request has no "v"/],
    ['another version', '{"v":2,"cmd":"status"}', /^protocol version 2 is not supported: this daemon speaks v1$/],
    ['no command', '{"v":1}', /^the request has no "cmd": use one of status, flows, ping, probe, fakeip, source, reload$/],
    ['an unknown command', '{"v":1,"cmd":"stats"}', /^unknown command "stats": use one of status, flows, ping, probe, fakeip, source, reload$/],
    ['a command of the wrong type', '{"v":1,"cmd":{"x":1}}', /^unknown command \{"x":1\}/],
  ])('refuses %s with a sentence', (_name, line, message) => {
    const r = parseRequest(line);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(message);
  });

  it('quotes at most 40 characters of what it refuses', () => {
    const r = parseRequest(`{"v":1,"cmd":"${'x'.repeat(5000)}"}`);
    expect(r.ok).toBe(false);
    // 40 characters of the input and an ellipsis, then the list of commands.
    if (!r.ok) expect(r.error).toMatch(/^unknown command "x{39}…: use one of /);
  });
});

describe('parseResponse', () => {
  it('round-trips a status snapshot', () => {
    const s = snapshot();
    const r = parseResponse('status', encodeResponse(okResponse(s)).trimEnd());
    expect(r).toEqual({ ok: true, data: s });
  });

  it('round-trips a status with WireGuard tunnels', () => {
    const s = snapshot();
    s.tunnels = [
      {
        name: 'office',
        listenPort: 40000,
        mtu: 1420,
        txPackets: 1,
        txBytes: 100,
        rxPackets: 2,
        rxBytes: 200,
        drops: {},
        peers: [{ publicKey: 'K=', allowedIPs: ['10.8.0.0/16'], rxBytes: 0, txBytes: 148, drops: { forged: 1 } }],
      },
    ];
    expect(parseResponse('status', encodeResponse(okResponse(s)).trimEnd())).toEqual({ ok: true, data: s });
  });

  it('passes the daemon\'s error through', () => {
    expect(parseResponse('status', encodeResponse(errorResponse('no')).trimEnd())).toEqual({ ok: false, error: 'no' });
  });

  it('reads a status from an older daemon (missing counters are 0) and a newer one (extra fields)', () => {
    const s = snapshot() as unknown as Record<string, Record<string, unknown>>;
    delete s.link.txErrors;
    delete s.packets.drops;
    s.tcp.udpFlowsOpen = 3;
    const r = parseResponse('status', JSON.stringify({ v: 1, ok: true, data: s }));
    expect(r.ok).toBe(true);
    if (r.ok === true) {
      expect(r.data.link.txErrors).toBe(0);
      expect(r.data.packets.drops.ipv6).toBe(0);
    }
  });

  it.each([
    ['not JSON', 'SSH-2.0-OpenSSH', /^not JSON/],
    ['not a reply', '{"hello":1}', /^not a v1 reply/],
    ['another version', '{"v":2,"ok":true,"data":{}}', /^not a v1 reply/],
    ['status data of the wrong shape', '{"v":1,"ok":true,"data":{"version":"x"}}', /^bad "status" data at pid/],
  ])('calls %s invalid', (_name, line, problem) => {
    const r = parseResponse('status', line);
    expect(r.ok).toBe('invalid');
    if (r.ok === 'invalid') expect(r.problem).toMatch(problem);
  });
});
