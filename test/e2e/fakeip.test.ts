/**
 * `--dns fakeip` end to end in the lab: the client cannot resolve anything itself (its
 * resolv.conf names 10.66.1.53, an address routed into tun0, where no resolver is reachable
 * except through tunroute); dnsmasq, the only real resolver, sits behind the proxy in s and
 * dante resolves names with it (s's resolv.conf). Then:
 *   - `curl http://web.lab:8080/health` works: the A answer is a fake address from 198.18.0.0/15
 *     given locally, the flow to it goes to dante *by name*, and dante asks dnsmasq;
 *   - dnsmasq sees web.lab asked by dante (10.99.0.2), never by the client;
 *   - AAAA for a tunneled name is empty (no IPv6 leak); MX goes to the upstream through the proxy;
 *   - a plain A query is answered at the device (native/fake_dns.c) with the very bytes the
 *     stack's answer has, counted, and leaves no DNS flow behind; AAAA still takes the stack.
 * Per-namespace resolv.conf: `ip netns exec NS` binds /etc/netns/NS/resolv.conf over
 * /etc/resolv.conf; the lab's overlay dirs hold them and are removed with the lab.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, startDante, startDnsmasq, startHttpServer, type Namespace } from '../../tools/lab/index.js';
import { CLI, e2eAvailable, startTunrouteIn } from '../helpers/e2e.js';
import { FAKE_IP_TTL_S } from '../../src/dns/fake-ip-resolver.js';
import { emitDnsMessage, writeAddressAnswer, DNS_TYPE_A, DNS_TYPE_AAAA } from '../../src/dns/message.js';
import { QueryQuestion, readQueryQuestion } from '../../src/dns/question-key.js';
import { fixture } from './tcp-lab.js';

const run = e2eAvailable('fake-IP DNS through dante (names resolved by the proxy only)');

const CLIENT = "10.99.0.1";
const DIRECT = '10.99.0.2';
const WEB = '10.66.1.7';
const DNS_IP = '10.66.1.53';
const NAME = 'web.lab';

describe.skipIf(!run)('dns fakeip (lab)', () => {
  let lab: Lab;
  let c: Namespace;
  let s: Namespace;
  let dnsmasqLog: () => string;
  /** The fake address web.lab got in the first run. */
  let fakeBefore = '';

  beforeAll(async () => {
    lab = await Lab.create();
    c = await lab.addNamespace('c');
    s = await lab.addNamespace('s');
    await lab.link(c, s, { cidrA: `${CLIENT}/24`, cidrB: `${DIRECT}/24` });
    for (const ip of [WEB, DNS_IP]) await s.exec(['ip', 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
    for (const ns of [c, s]) lab.setResolvConf(ns, [DNS_IP]); // removed by lab.destroy(), also on the exit hooks
    const dnsmasq = await startDnsmasq(s, { listen: DNS_IP, records: { [NAME]: WEB }, extraArgs: ['--log-queries'] });
    dnsmasqLog = () => dnsmasq.output().stderr;
    await startDante(s, { listen: DIRECT, port: 1080 });
    await startHttpServer(s, { port: 8080 });
    const echo = s.spawn(['node', fixture('udp-echo-server.mjs'), WEB, '7001'], { name: 'udp-echo' });
    await echo.waitForLine(/^listening/, 10_000);
  }, 60_000);

  afterAll(async () => {
    // The fake-IP table outlives `up` on purpose (state dir of c's namespace): not the lab's, though.
    if (c !== undefined) rmSync(`/run/tunroute/netns/${c.name}`, { recursive: true, force: true });
    await lab?.destroy();
  });

  it('curl by name works though the client resolves nothing; the proxy resolves the name', async () => {
    // Before tunroute: the client's resolver is unreachable (nothing routes 10.66.1.53).
    const before = await c.exec(['dig', '+time=1', '+tries=1', NAME, 'A'], { allowFail: true, timeoutMs: 10_000 });
    expect(before.stdout).not.toMatch(/status: NOERROR/);

    const config = join(lab.tmpDir, 'fakeip.json');
    writeFileSync(config, JSON.stringify({ dns: { mode: 'fakeip', upstream: `${DNS_IP}:53` } }));
    const up = await startTunrouteIn(c, ['-c', config, '--route', '10.66.1.0/24', '--proxy', `socks5://${DIRECT}:1080`]);
    try {
      const a = await c.exec(['dig', '+time=3', '+tries=2', NAME, 'A'], { allowFail: true, timeoutMs: 20_000 });
      const aaaa = await c.exec(['dig', '+time=3', '+tries=2', NAME, 'AAAA'], { allowFail: true, timeoutMs: 20_000 });
      const curl = await c.exec(['curl', '-sS', '--max-time', '10', `http://${NAME}:8080/health`], { allowFail: true, timeoutMs: 20_000 });
      // UDP by name too, on a connected socket: the echo must come back from the fake address.
      // (dd reads the whole datagram: bash's read takes one byte and the rest is lost.)
      const udp = await c.exec(['bash', '-c', `exec 3<>/dev/udp/${NAME}/7001; printf 'udp by name\\n' >&3; timeout 5 dd bs=2048 count=1 status=none <&3`], { allowFail: true, timeoutMs: 20_000 });
      const ctx = `${a.stdout}\n${aaaa.stdout}\n${curl.stdout}${curl.stderr}\n${udp.stdout}${udp.stderr}\n${up.outputTail(3000)}`;
      const fake = /^web\.lab\.\s+\d+\s+IN\s+A\s+(\S+)$/m.exec(a.stdout)?.[1];
      fakeBefore = fake ?? '';
      expect(fake, ctx).toMatch(/^198\.1[89]\./);
      expect(aaaa.stdout, ctx).toMatch(/status: NOERROR/);
      expect(aaaa.stdout, ctx).toMatch(/ANSWER: 0/);
      expect(curl.code, ctx).toBe(0);
      expect(curl.stdout, ctx).toBe('ok\n');
      expect(udp.stdout, ctx).toBe('udp by name\n');
      // dnsmasq answered dante (from s's own addresses), and never the client or tunroute: the
      // name went to the proxy as a name, and the client's own queries never left c.
      const log = dnsmasqLog();
      const askers = [...log.matchAll(/query\[A+\] web\.lab from (\S+)/g)].map((m) => m[1]);
      expect(askers.length, ctx).toBeGreaterThan(0);
      for (const who of askers) expect([DIRECT, DNS_IP, WEB], ctx).toContain(who);
    } finally {
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
  }, 90_000);

  it('after a restart of up, a connection to an address handed out before still reaches its name', async () => {
    expect(fakeBefore).toMatch(/^198\.1[89]\./);
    const config = join(lab.tmpDir, 'fakeip.json');
    const up = await startTunrouteIn(c, ['-c', config, '--route', '10.66.1.0/24', '--proxy', `socks5://${DIRECT}:1080`]);
    try {
      // No query this time: the app uses its cached answer, the address itself.
      const curl = await c.exec(['curl', '-sS', '--max-time', '10', `http://${fakeBefore}:8080/health`], { allowFail: true, timeoutMs: 20_000 });
      const ctx = `${curl.stdout}${curl.stderr}\n${up.outputTail(3000)}`;
      expect(curl.code, ctx).toBe(0);
      expect(curl.stdout, ctx).toBe('ok\n');
      expect(up.outputTail(20_000), ctx).toMatch(/fake-IP table restored/);
    } finally {
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
  }, 90_000);

  it('answers a plain A query at the device: the bytes of the stack\'s answer, counted, no DNS flow', async () => {
    const config = join(lab.tmpDir, 'fakeip.json');
    const control = join(lab.tmpDir, 'fast-dns.sock');
    const up = await startTunrouteIn(c, ['-c', config, '--route', '10.66.1.0/24', '--proxy', `socks5://${DIRECT}:1080`, '--control', control]);
    try {
      // Mixed case, RD, and an EDNS OPT record, as resolvers send them.
      const query = (id: number, qtype: number): Buffer =>
        Buffer.from(emitDnsMessage({ id, flags: 0x0100, question: { name: 'WeB.LaB', qtype }, additional: [{ name: '.', type: 41, rclass: 1232, ttl: 0, data: new Uint8Array(0) }] }));
      // One socket per query: the one the device answers leaves no flow; the AAAA one does.
      const ask = async (q: Buffer): Promise<{ port: number; answer: Buffer }> => {
        const script = `const s=require('dgram').createSocket('udp4');s.on('message',(m)=>{console.log(s.address().port+' '+m.toString('hex'));process.exit(0)});s.send(Buffer.from(process.argv[1],'hex'),53,'${DNS_IP}');setTimeout(()=>process.exit(2),3000)`;
        const r = await c.exec(['node', '-e', script, q.toString('hex')], { allowFail: true, timeoutMs: 10_000 });
        const [port, hex] = r.stdout.trim().split(' ');
        expect(r.code, `${r.stdout}${r.stderr}\n${up.outputTail(2000)}`).toBe(0);
        return { port: Number(port), answer: Buffer.from(hex ?? '', 'hex') };
      };
      const qa = query(0x1234, DNS_TYPE_A);
      const a = await ask(qa);
      const aaaa = await ask(query(0x4321, DNS_TYPE_AAAA));
      const status = JSON.parse((await c.exec(['node', CLI, 'status', '--json', '--control', control])).stdout) as {
        udpFlows?: Array<{ src: string; dst: string; outbound: string }>;
        udp?: { dnsQueries: number; dnsAnswered: number };
      };
      const ctx = `${JSON.stringify(status)}\n${up.outputTail(3000)}`;
      // The answer's address is the pool's; every other byte is what the stack writes for it.
      const ip = a.answer.readUInt32BE(a.answer.length - 4);
      expect(ip >>> 17, ctx).toBe(0xc612 >>> 1); // 198.18.0.0/15
      const q = new QueryQuestion();
      expect(readQueryQuestion(qa, q)).toBe(true);
      const expected = Buffer.alloc(512);
      const n = writeAddressAnswer(qa, q.end, [ip], FAKE_IP_TTL_S, expected);
      expect(a.answer.toString('hex'), ctx).toBe(expected.subarray(0, n).toString('hex'));
      expect(aaaa.answer.readUInt16BE(6), ctx).toBe(0); // NODATA, from the stack
      const flows = status.udpFlows ?? [];
      expect(flows.some((f) => f.src.endsWith(`:${aaaa.port}`) && f.outbound === 'dns'), ctx).toBe(true);
      expect(flows.some((f) => f.src.endsWith(`:${a.port}`)), ctx).toBe(false);
      expect(status.udp?.dnsQueries, ctx).toBe(2);
      expect(status.udp?.dnsAnswered, ctx).toBe(2);
    } finally {
      expect(await up.stop('SIGTERM', 5000)).toEqual({ code: 0, signal: null });
    }
  }, 90_000);
});
