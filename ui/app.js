// The tunroute dashboard: plain JS over the Clash API (/traffic, /connections) and the
// /tunroute/* endpoints of the same listener. Same origin only; the login cookie authorizes
// both fetch and the WebSockets.
'use strict';

const $ = (sel) => document.querySelector(sel);
const wsUrl = (path) => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;

function bytes(n) {
  const u = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
}
const rate = (n) => `${bytes(n)}/s`;
function age(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
}
function cell(tr, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
async function getJson(path) {
  const r = await fetch(path, { headers: { accept: 'application/json' } });
  if (r.status === 401) { location.reload(); throw new Error('logged out'); }
  const body = await r.json();
  if (!r.ok) throw new Error(body.message || r.statusText);
  return body;
}
/** A WebSocket that comes back after the daemon restarts or the network blips. */
function stream(path, onMessage) {
  const open = () => {
    const ws = new WebSocket(wsUrl(path));
    ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
    ws.onclose = () => setTimeout(open, 2000);
  };
  open();
}

// ---- throughput graph (uPlot), the last 120 s
const POINTS = 120;
const series = [[], [], []];
let plot;
function initGraph() {
  const el = $('#graph');
  plot = new uPlot({
    width: el.clientWidth || 800,
    height: 220,
    series: [
      {},
      { label: 'up', stroke: '#2f6fde', width: 2, value: (u, v) => (v == null ? '' : rate(v)) },
      { label: 'down', stroke: '#2f9e6e', width: 2, value: (u, v) => (v == null ? '' : rate(v)) },
    ],
    axes: [{}, { values: (u, vals) => vals.map((v) => rate(v)), size: 80 }],
  }, series, el);
  window.addEventListener('resize', () => plot.setSize({ width: el.clientWidth, height: 220 }));
}
function onTraffic(t) {
  series[0].push(Date.now() / 1000);
  series[1].push(t.up);
  series[2].push(t.down);
  if (series[0].length > POINTS) series.forEach((s) => s.shift());
  plot.setData(series);
  $('#rate').textContent = `↑ ${rate(t.up)}  ↓ ${rate(t.down)}`;
  document.body.dataset.trafficSamples = String(series[0].length);
  document.body.dataset.trafficDownMax = String(Math.max(...series[2]));
}

// ---- flows
let sortKey = 'download';
let sortAsc = false;
let rows = [];
const last = new Map(); // id → [bytes up + down, time]
function onConnections(c) {
  const now = Date.now();
  const seen = new Set();
  rows = c.connections.map((x) => {
    const total = x.upload + x.download;
    const prev = last.get(x.id);
    const r = prev === undefined ? 0 : Math.max(0, (total - prev[0]) / ((now - prev[1]) / 1000 || 1));
    last.set(x.id, [total, now]);
    seen.add(x.id);
    const m = x.metadata;
    return {
      id: x.id,
      network: m.network,
      source: `${m.sourceIP}:${m.sourcePort}`,
      destination: `${m.destinationIP || m.host}:${m.destinationPort}`,
      host: m.host,
      outbound: x.chains[0] || '',
      upload: x.upload,
      download: x.download,
      age: now - Date.parse(x.start),
      rate: r,
    };
  });
  for (const id of last.keys()) if (!seen.has(id)) last.delete(id);
  renderFlows();
}
function renderFlows() {
  const q = $('#filter').value.trim().toLowerCase();
  const shown = rows
    .filter((r) => q === '' || `${r.network} ${r.source} ${r.destination} ${r.host} ${r.outbound}`.toLowerCase().includes(q))
    .sort((a, b) => {
      const x = a[sortKey];
      const y = b[sortKey];
      const c = typeof x === 'number' ? x - y : String(x).localeCompare(String(y));
      return sortAsc ? c : -c;
    });
  const body = $('#flows tbody');
  body.replaceChildren(...shown.map((r) => {
    const tr = document.createElement('tr');
    tr.dataset.id = r.id;
    cell(tr, r.network);
    cell(tr, r.source);
    cell(tr, r.destination);
    cell(tr, r.host);
    cell(tr, r.outbound);
    cell(tr, bytes(r.upload), 'num');
    cell(tr, bytes(r.download), 'num');
    cell(tr, age(r.age), 'num');
    cell(tr, rate(r.rate), 'num');
    const b = document.createElement('button');
    b.className = 'close';
    b.textContent = 'close';
    b.title = r.network === 'tcp' ? 'reset this connection (the app sees RST)' : 'end this flow';
    b.addEventListener('click', () => closeFlow(r.id, b));
    cell(tr, '').appendChild(b);
    return tr;
  }));
  $('#flow-count').textContent = `${shown.length} of ${rows.length}`;
  document.querySelectorAll('#flows th[data-key]').forEach((th) => {
    th.classList.toggle('sorted', th.dataset.key === sortKey);
    th.classList.toggle('asc', th.dataset.key === sortKey && sortAsc);
  });
}
async function closeFlow(id, button) {
  button.disabled = true;
  const r = await fetch(`/connections/${encodeURIComponent(id)}`, { method: 'DELETE' });
  button.textContent = r.ok ? 'closed' : 'gone';
}

// ---- status: drops, DNS, tunnels
function kv(table, entries) {
  const body = table.querySelector('tbody');
  body.replaceChildren(...entries.map(([k, v]) => {
    const tr = document.createElement('tr');
    cell(tr, k);
    cell(tr, String(v), 'num');
    return tr;
  }));
}
async function refreshStatus() {
  try {
    const s = await getJson('/tunroute/status');
    $('#summary').textContent = `v${s.version} · ${s.device.name} ${s.device.address} · ${s.routes} routes · up ${age(s.uptimeMs)}`;
    const drops = Object.entries(s.packets.drops).filter(([, n]) => n > 0);
    if (s.udp && s.udp.dropped > 0) drops.push(['udp relay', s.udp.dropped]);
    if (s.tcp.refusedLimit > 0) drops.push(['tcp flow limit', s.tcp.refusedLimit]);
    for (const t of s.tunnels || []) for (const [k, n] of Object.entries(t.drops)) drops.push([`${t.name}: ${k}`, n]);
    kv($('#drops'), drops.length ? drops : [['none', 0]]);
    $('#dns-counters').textContent = s.udp ? `queries ${s.udp.dnsQueries} · answered ${s.udp.dnsAnswered} · failed ${s.udp.dnsFailed}` : 'no UDP relay';
    const t = $('#tunnels');
    if (!s.tunnels || s.tunnels.length === 0) t.textContent = 'none';
    else {
      t.replaceChildren(...s.tunnels.map((tn) => {
        const div = document.createElement('div');
        const peers = tn.peers.map((p) => `  ${p.publicKey.slice(0, 10)}… ${p.endpoint || '-'} handshake ${p.lastHandshakeAgoMs === undefined ? 'never' : age(p.lastHandshakeAgoMs) + ' ago'} rx ${bytes(p.rxBytes)} tx ${bytes(p.txBytes)}`);
        div.textContent = `${tn.name} :${tn.listenPort} tx ${bytes(tn.txBytes)} rx ${bytes(tn.rxBytes)}\n${peers.join('\n')}`;
        div.className = 'pre';
        return div;
      }));
    }
    const d = await getJson('/tunroute/dns');
    kv($('#dns'), d.answers.slice(-20).reverse());
  } catch (e) {
    $('#summary').textContent = `status unavailable: ${e.message}`;
  }
}

function init() {
  initGraph();
  stream('/traffic', onTraffic);
  stream('/connections?interval=1000', onConnections);
  $('#filter').addEventListener('input', renderFlows);
  document.querySelectorAll('#flows th[data-key]').forEach((th) => th.addEventListener('click', () => {
    if (sortKey === th.dataset.key) sortAsc = !sortAsc;
    else { sortKey = th.dataset.key; sortAsc = false; }
    renderFlows();
  }));
  $('#why-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const addr = $('#why-addr').value.trim();
    try {
      const a = await getJson(`/tunroute/why?addr=${encodeURIComponent(addr)}&proto=${$('#why-proto').value}`);
      $('#why').textContent = a.text;
    } catch (e) {
      $('#why').textContent = e.message;
    }
  });
  $('#plan-load').addEventListener('click', async () => {
    const p = await getJson('/tunroute/plan');
    $('#plan').textContent = p.lines.join('\n') || '(no plan)';
  });
  refreshStatus();
  setInterval(refreshStatus, 2000);
}
document.addEventListener('DOMContentLoaded', init);
