/**
 * The connection table (RFC 9293 §3.10.7.1-2): demux by 4-tuple, the onSyn hook (accept →
 * connection with deferred SYN-ACK, reject → RST), resets for unknown segments, the connection
 * limit (RST + counter, never a silent drop), TIME-WAIT reuse, removal of closed connections,
 * and one timer for many connections.
 */
import { describe, expect, it } from 'vitest';
import {
  ACK,
  FIN,
  PSH,
  RST,
  SYN,
  TcpTable,
  type TcpConnection,
  type TcpSegment,
  type TcpSynRequest,
} from '../../src/stack/tcp/index.js';
import { bytes, flagsOf } from './tcp-table-helpers.js';

const LOCAL = 0x0a00_0001; // 10.0.0.1: the address routed into tun0
const REMOTE = 0xc0a8_0002; // 192.168.0.2: the application's host

interface Sent {
  src: number;
  dst: number;
  seg: TcpSegment;
}

function mkSeg(p: Partial<TcpSegment> & { srcPort: number; dstPort: number }): TcpSegment {
  return { seq: 0, ack: 0, flags: ACK, window: 65535, options: {}, payload: new Uint8Array(0), ...p };
}

function drain(t: TcpTable, now: number): Sent[] {
  const out: Sent[] = [];
  t.poll(now, (src, dst, seg) => out.push({ src, dst, seg }));
  return out;
}

const connOpts = { iss: 1000, mss: 1000, rcvBufSize: 8000, sack: false, timestamps: false, windowScaling: false, timeWaitMs: 500 };

/** A table whose owner accepts every SYN (keeping the connections) unless told otherwise. */
function table(mode: 'accept' | 'reject' | 'ignore' = 'accept', maxConnections?: number) {
  const requests: TcpSynRequest[] = [];
  const conns: TcpConnection[] = [];
  const t = new TcpTable({
    maxConnections,
    onSyn: (req) => {
      requests.push(req);
      if (mode === 'accept') conns.push(req.accept(connOpts));
      else if (mode === 'reject') req.reject();
    },
  });
  return { t, requests, conns };
}

function syn(srcPort: number, dstPort = 80, seq = 5000): TcpSegment {
  return mkSeg({ srcPort, dstPort, seq, flags: SYN, options: { mss: 1000 } });
}

describe('unknown segments', () => {
  it('an ACK segment for no connection gets <SEQ=SEG.ACK><CTL=RST>', () => {
    const { t, requests } = table();
    t.input(0, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 7, ack: 1234, flags: ACK, payload: bytes('x') }));
    expect(t.pollAt()).toBe(0);
    const out = drain(t, 0);
    expect(out).toHaveLength(1);
    expect(out[0].src).toBe(LOCAL);
    expect(out[0].dst).toBe(REMOTE);
    expect(out[0].seg).toMatchObject({ srcPort: 80, dstPort: 4000, seq: 1234, flags: RST });
    expect(t.counters.unknownSegments).toBe(1);
    expect(t.counters.resetsSent).toBe(1);
    expect(requests).toHaveLength(0);
  });

  it('a segment without ACK gets <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>', () => {
    const { t } = table();
    t.input(0, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 0xffff_fffe, flags: FIN, payload: bytes('abc') }));
    const [r] = drain(t, 0);
    expect(r.seg).toMatchObject({ seq: 0, ack: 2, flags: RST | ACK });
  });

  it('a RST for no connection is not answered', () => {
    const { t } = table();
    t.input(0, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, flags: RST }));
    expect(drain(t, 0)).toHaveLength(0);
    expect(t.pollAt()).toBeUndefined();
  });

  it('queued resets are bounded and the excess is counted', () => {
    const t = new TcpTable({ onSyn: () => undefined, maxPendingResets: 3 });
    for (let i = 0; i < 5; i++) t.input(0, REMOTE, LOCAL, mkSeg({ srcPort: 4000 + i, dstPort: 80, ack: 1 }));
    expect(drain(t, 0)).toHaveLength(3);
    expect(t.counters.resetsDropped).toBe(2);
  });
});

describe('SYN handling', () => {
  it('offers the SYN to onSyn; the accepted connection answers after completeAccept', () => {
    const { t, requests, conns } = table();
    t.input(0, REMOTE, LOCAL, syn(4000));
    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({ srcIp: REMOTE, srcPort: 4000, dstIp: LOCAL, dstPort: 80 });
    expect(t.size).toBe(1);
    expect(drain(t, 0)).toHaveLength(0);
    // The SYN is retransmitted while the upstream connects: it goes to the pending connection.
    t.input(1000, REMOTE, LOCAL, syn(4000));
    expect(requests).toHaveLength(1);
    expect(drain(t, 1000)).toHaveLength(0);
    conns[0].completeAccept(1200);
    // The table learns of it at once: a pollAt() at or before now means "poll now".
    expect(t.pollAt()).toBeLessThanOrEqual(1200);
    const [sa] = drain(t, 1200);
    expect(sa.src).toBe(LOCAL);
    expect(sa.dst).toBe(REMOTE);
    expect(sa.seg).toMatchObject({ srcPort: 80, dstPort: 4000, seq: 1000, ack: 5001, flags: SYN | ACK });
    t.input(1210, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 5001, ack: 1001 }));
    expect(conns[0].state).toBe('ESTABLISHED');
    expect(t.counters.accepted).toBe(1);
  });

  it('routes by the full 4-tuple', () => {
    const { t, conns } = table();
    t.input(0, REMOTE, LOCAL, syn(4000, 80));
    t.input(0, REMOTE, LOCAL, syn(4001, 80));
    t.input(0, REMOTE, LOCAL + 1, syn(4000, 80));
    t.input(0, REMOTE + 1, LOCAL, syn(4000, 80));
    t.input(0, REMOTE, LOCAL, syn(4000, 81));
    expect(t.size).toBe(5);
    expect(t.get(REMOTE, 4001, LOCAL, 80)).toBe(conns[1]);
    expect(t.get(REMOTE, 4000, LOCAL + 1, 80)).toBe(conns[2]);
    expect(t.get(REMOTE, 4000, LOCAL, 81)).toBe(conns[4]);
    expect([...t.connections()].map((e) => e.conn)).toHaveLength(5);
  });

  it('connections that share a remote end are found and removed one by one', () => {
    const { t, conns } = table();
    for (const port of [80, 81, 82]) t.input(0, REMOTE, LOCAL, syn(4000, port));
    conns[1].abort(1);
    drain(t, 1);
    expect(t.size).toBe(2);
    expect(t.get(REMOTE, 4000, LOCAL, 80)).toBe(conns[0]);
    expect(t.get(REMOTE, 4000, LOCAL, 81)).toBeUndefined();
    conns[0].abort(2);
    drain(t, 2);
    expect(t.get(REMOTE, 4000, LOCAL, 80)).toBeUndefined();
    expect(t.get(REMOTE, 4000, LOCAL, 82)).toBe(conns[2]);
    expect([...t.connections()].map((e) => e.conn)).toEqual([conns[2]]);
    conns[2].abort(3);
    drain(t, 3);
    expect(t.size).toBe(0);
    expect([...t.connections()]).toHaveLength(0);
  });

  it('reject() answers RST|ACK and keeps no connection', () => {
    const { t } = table('reject');
    t.input(0, REMOTE, LOCAL, syn(4000));
    const [r] = drain(t, 0);
    expect(r.seg).toMatchObject({ srcPort: 80, dstPort: 4000, seq: 0, ack: 5001, flags: RST | ACK });
    expect(t.size).toBe(0);
    expect(t.counters.rejected).toBe(1);
  });

  it('a hook that decides nothing also answers RST (never a silent drop)', () => {
    const { t } = table('ignore');
    t.input(0, REMOTE, LOCAL, syn(4000));
    expect(flagsOf(drain(t, 0))).toEqual([RST | ACK]);
    expect(t.counters.rejected).toBe(1);
  });

  it('a connection rejected later (upstream refused) sends RST and is removed', () => {
    const { t, conns } = table();
    t.input(0, REMOTE, LOCAL, syn(4000));
    conns[0].reject(50);
    expect(t.pollAt()).toBeLessThanOrEqual(50);
    const out = drain(t, 50);
    expect(out.map((o) => o.seg.flags)).toEqual([RST | ACK]);
    expect(out[0].seg.ack).toBe(5001);
    expect(t.size).toBe(0);
    expect(t.counters.removed).toBe(1);
  });

  it('at the connection limit a SYN is refused with RST and counted', () => {
    const { t, conns } = table('accept', 2);
    t.input(0, REMOTE, LOCAL, syn(4000));
    t.input(0, REMOTE, LOCAL, syn(4001));
    t.input(0, REMOTE, LOCAL, syn(4002));
    expect(t.size).toBe(2);
    expect(t.counters.refusedLimit).toBe(1);
    const out = drain(t, 0);
    expect(out.filter((o) => o.seg.flags === (RST | ACK)).map((o) => o.seg.dstPort)).toEqual([4002]);
    // A slot frees up: the next SYN is accepted.
    conns[0].abort(10);
    drain(t, 10);
    expect(t.size).toBe(1);
    t.input(20, REMOTE, LOCAL, syn(4002));
    expect(t.size).toBe(2);
  });
});

describe('connections in the table', () => {
  function establishedIn(t: TcpTable, conns: TcpConnection[], port: number, now = 0): TcpConnection {
    t.input(now, REMOTE, LOCAL, syn(port));
    const c = conns[conns.length - 1];
    c.completeAccept(now);
    drain(t, now);
    t.input(now, REMOTE, LOCAL, mkSeg({ srcPort: port, dstPort: 80, seq: 5001, ack: 1001 }));
    drain(t, now);
    return c;
  }

  it('an application write outside input() wakes the table', () => {
    const { t, conns } = table();
    const c = establishedIn(t, conns, 4000);
    expect(t.pollAt()).toBeUndefined();
    c.write(bytes('hello'));
    expect(t.pollAt()).toBeLessThanOrEqual(5);
    const [d] = drain(t, 5);
    expect(d.seg).toMatchObject({ flags: ACK | PSH, seq: 1001, dstPort: 4000 });
    expect(t.pollAt()).toBe(205);
  });

  it('removes connections once closed and answers their stray segments with RST', () => {
    const { t, conns } = table();
    const c = establishedIn(t, conns, 4000);
    t.input(10, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 5001, ack: 1001, flags: RST }));
    expect(c.state).toBe('CLOSED');
    drain(t, 10);
    expect(t.size).toBe(0);
    t.input(20, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 5001, ack: 1001, payload: bytes('x') }));
    expect(flagsOf(drain(t, 20))).toEqual([RST]);
  });

  it('a TIME-WAIT connection gives way to a new SYN with a higher sequence number', () => {
    const { t, conns, requests } = table();
    const c = establishedIn(t, conns, 4000);
    c.shutdownWrite();
    drain(t, 1);
    t.input(2, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 5001, ack: 1002, flags: ACK | FIN }));
    drain(t, 2);
    expect(c.state).toBe('TIME-WAIT');
    // An old duplicate SYN: answered by the TIME-WAIT connection with an ACK.
    t.input(3, REMOTE, LOCAL, syn(4000, 80, 4000));
    expect(flagsOf(drain(t, 3))).toEqual([ACK]);
    expect(requests).toHaveLength(1);
    // A new incarnation.
    t.input(4, REMOTE, LOCAL, syn(4000, 80, 9000));
    expect(requests).toHaveLength(2);
    expect(t.counters.timeWaitReused).toBe(1);
    expect(t.get(REMOTE, 4000, LOCAL, 80)).toBe(conns[1]);
  });

  it('TIME-WAIT connections leave the table when 2·MSL expires', () => {
    const { t, conns } = table();
    const c = establishedIn(t, conns, 4000);
    c.shutdownWrite();
    drain(t, 1);
    t.input(2, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 5001, ack: 1002, flags: ACK | FIN }));
    drain(t, 2);
    expect(t.pollAt()).toBe(502);
    drain(t, 502);
    expect(t.size).toBe(0);
    expect(t.pollAt()).toBeUndefined();
  });

  it('active open through the table', () => {
    const { t } = table();
    const c = t.connect(0, LOCAL, REMOTE, { ...connOpts, localPort: 50000, remotePort: 443 });
    const [s] = drain(t, 0);
    expect(s).toMatchObject({ src: LOCAL, dst: REMOTE });
    expect(s.seg).toMatchObject({ srcPort: 50000, dstPort: 443, flags: SYN });
    expect(() => t.connect(0, LOCAL, REMOTE, { ...connOpts, localPort: 50000, remotePort: 443 })).toThrow(RangeError);
    t.input(10, REMOTE, LOCAL, mkSeg({ srcPort: 443, dstPort: 50000, seq: 77, ack: 1001, flags: SYN | ACK, options: { mss: 1000 } }));
    expect(c.state).toBe('ESTABLISHED');
    expect(t.counters.connected).toBe(1);
  });
});

describe('one timer for many connections', () => {
  it('pollAt() is the earliest deadline; poll() serves exactly the connections due', () => {
    const { t, conns } = table();
    const N = 2000;
    for (let i = 0; i < N; i++) {
      const at = i / 4;
      t.input(at, REMOTE + (i >>> 8), LOCAL, syn(1024 + (i & 0xff)));
      conns[i].completeAccept(at);
      drain(t, at);
    }
    expect(t.size).toBe(N);
    // Every SYN-ACK is retransmitted one RTO (1 s) after it was sent: at 1000 + i/4.
    expect(t.pollAt()).toBe(1000);
    let sent = 0;
    for (let now = 1000; now < 1000 + N / 4; now += 10) {
      const out = drain(t, now);
      for (const o of out) expect(o.seg.flags).toBe(SYN | ACK);
      sent += out.length;
      const due = Math.min(N, Math.floor((now - 1000) * 4) + 1);
      expect(sent).toBe(due);
      expect(t.pollAt()).toBe(due < N ? 1000 + due / 4 : 3000);
    }
    expect(t.timerNodes).toBeLessThanOrEqual(2 * N + 1024);
  });

  it('a connection rescheduled many times does not grow the heap without bound', () => {
    const { t, conns } = table();
    t.input(0, REMOTE, LOCAL, syn(4000));
    const c = conns[0];
    c.completeAccept(0);
    drain(t, 0);
    t.input(0, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 5001, ack: 1001 }));
    drain(t, 0);
    for (let i = 1; i < 5000; i++) {
      // Data in, delayed ACK armed, then flushed: the deadline keeps moving.
      t.input(i * 100, REMOTE, LOCAL, mkSeg({ srcPort: 4000, dstPort: 80, seq: 5001 + i - 1, ack: 1001, payload: bytes('x') }));
      c.consumed(1);
      drain(t, i * 100);
      drain(t, i * 100 + 40);
    }
    expect(t.timerNodes).toBeLessThan(1100);
  });
});
