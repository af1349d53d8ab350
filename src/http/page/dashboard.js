// fraudflight live dashboard. Listens to /api/events (Server-Sent Events):
// `hello` brings the last five minutes and the latest alerts, then a `tick`
// a second brings the new point, the status and the alerts since the last
// tick. Charts are drawn on canvas by the small helpers below; the state
// outlines of the map come from /assets/us-states.json. Nothing is fetched
// from outside this server.
'use strict';

const HISTORY = 300;      // points kept (seconds)
const TABLE_ROWS = 50;    // alerts shown in the table
const MAP_POINTS = 1000;  // alerts kept on the map

const state = { points: [], alerts: [], mapAlerts: [], states: null, status: null };
const $ = (id) => document.getElementById(id);
const fmtInt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const fmt1 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// ---------- event stream ----------

function connect() {
  const events = new EventSource('/api/events');
  events.addEventListener('open', () => setConnection('live', 'ok'));
  events.addEventListener('error', () => setConnection('reconnecting', 'failing'));
  events.addEventListener('hello', (e) => {
    const hello = JSON.parse(e.data);
    state.points = hello.history;
    state.alerts = [];
    state.mapAlerts = [];
    addAlerts(hello.alerts, false);
    update(hello.status);
  });
  events.addEventListener('tick', (e) => {
    const tick = JSON.parse(e.data);
    state.points.push(tick.point);
    if (state.points.length > HISTORY) state.points.shift();
    addAlerts(tick.alerts, true);
    update(tick.status);
  });
}

function setConnection(text, cls) {
  const el = $('connection');
  el.textContent = text;
  el.className = 'badge ' + cls;
}

// Alerts arrive newest first.
function addAlerts(alerts, highlight) {
  state.alerts = alerts.concat(state.alerts).slice(0, TABLE_ROWS);
  const now = Date.now();
  for (const a of alerts.slice().reverse()) state.mapAlerts.push({ ...a, seen: now });
  state.mapAlerts = state.mapAlerts.slice(-MAP_POINTS);
  renderTable(highlight ? alerts.length : 0);
}

// ---------- numbers ----------

function update(status) {
  state.status = status;
  const c = status.counters;
  const last = state.points[state.points.length - 1];
  if (last) {
    $('in-rate').textContent = fmtInt.format(last.in_per_s);
    $('scored-rate').textContent = fmtInt.format(last.scored_per_s);
    $('stored-rate').textContent = fmtInt.format(last.stored_per_s);
    $('latency').textContent = last.latency_p50_ms == null ? '–'
      : `${fmtMs(last.latency_p50_ms)} / ${fmtMs(last.latency_p99_ms)}`;
  }
  const minute = state.points.slice(-60);
  const scored = minute.reduce((n, p) => n + p.scored_per_s, 0);
  const alerts = minute.reduce((n, p) => n + p.alerts_per_s, 0);
  $('fraud-rate').textContent = scored > 0 ? (100 * alerts / scored).toFixed(2) + ' %' : '–';
  $('alerts-total').textContent = fmtInt.format(c.alerts);
  $('scored-total').textContent = fmtInt.format(c.scored);
  $('rejected').textContent = `${fmtInt.format(c.invalid)} / ${fmtInt.format(c.dead_letters)}`;
  const l = status.labels;
  $('precision').textContent = l && l.alerts_labelled > 0
    ? `${(100 * l.alerts_confirmed / l.alerts_labelled).toFixed(1)} % of ${fmtInt.format(l.alerts_labelled)}` : '–';
  $('missed').textContent = l ? `${fmtInt.format(l.frauds_missed)} of ${fmtInt.format(l.frauds)}` : '–';

  const m = status.model;
  $('model-version').textContent = m.version;
  const metrics = m.metrics || {};
  const parts = [`threshold ${Number(m.threshold).toFixed(3)}`];
  if (metrics.roc_auc != null) parts.push(`ROC AUC ${Number(metrics.roc_auc).toFixed(4)}`);
  if (metrics.pr_auc != null) parts.push(`PR AUC ${Number(metrics.pr_auc).toFixed(4)}`);
  $('model-metrics').textContent = '· ' + parts.join(' · ');

  $('sinks').replaceChildren(...Object.entries(status.sinks).map(([name, health]) => {
    const b = document.createElement('span');
    b.className = 'badge ' + health;
    b.textContent = `${name} ${health}`;
    return b;
  }));
  renderLag(status.consumer_lag);
  renderQuality(status.model_quality, m);
  draw();
}

// The roles of the versions in service, for the quality table.
function roleOf(version, model) {
  if (version === model.version) return 'champion';
  if (version === model.shadow) return 'shadow';
  if (version === model.previous) return 'previous';
  return '';
}

function renderQuality(q, model) {
  if (!q) return;
  // A fraud-rate finding on a day whose labels are not all in yet is shown,
  // not flagged: that day's fraud rate is low by construction.
  const driftCell = (drift) => {
    if (drift.flagged.length) return [drift.flagged.join('; '), 'drift'];
    if (drift.provisional) return [drift.fraud_rate_flag + ' (provisional: labels still coming)', 'muted'];
    return ['none', 'muted'];
  };
  const pct = (v) => (v == null ? '–' : (100 * v).toFixed(1) + ' %');
  const dec = (v) => (v == null ? '–' : Number(v).toFixed(3));
  $('quality').querySelector('tbody').replaceChildren(...q.latest.map((d) => row([
    d.version,
    roleOf(d.version, model),
    d.date + (d.complete ? '' : ' (provisional)'),
    [fmtInt.format(d.transactions), 'num'],
    [fmtInt.format(d.frauds), 'num'],
    [pct(d.precision), 'num'],
    [pct(d.recall), 'num'],
    [dec(d.average_precision), 'num'],
    [dec(d.roc_auc), 'num'],
    [d.card_precision == null ? '–' : pct(d.card_precision) + ' at ' + d.card_precision_k
      + (d.card_precision_estimated ? ' (ties estimated)' : ''), 'num'],
    [dec(d.score_psi), 'num'],
    driftCell(d.drift),
  ])));
  $('decisions-none').hidden = q.decisions.length > 0;
  $('decisions').replaceChildren(...q.decisions.slice(0, 5).map((d) => {
    const li = document.createElement('li');
    const verdict = document.createElement('span');
    verdict.className = d.deployed ? 'deployed' : 'kept';
    verdict.textContent = d.deployed ? (d.mode === 'shadow' ? 'shadowed' : 'deployed') : 'kept champion';
    const when = new Date(d.decided_at_ms).toISOString().replace('T', ' ').slice(0, 16);
    li.append(verdict, ` ${d.challenger} vs ${d.champion}, ${when} UTC: ${d.reason}`);
    return li;
  }));
}

// 4.3 ms, 175 ms, 3.2 s, 12 min: short enough for a card.
const fmtMs = (ms) => (ms < 10 ? ms.toFixed(1) + ' ms' : ms < 1000 ? fmtInt.format(ms) + ' ms'
  : ms < 60000 ? fmt1.format(ms / 1000) + ' s' : fmt1.format(ms / 60000) + ' min');

function renderLag(lag) {
  $('lag-none').hidden = lag.length > 0;
  $('lag').querySelector('tbody').replaceChildren(...lag.map((l) =>
    row([l.topic, [l.partition, 'num'], [fmtInt.format(l.lag), 'num']])));
}

function renderTable(fresh) {
  const rows = state.alerts.map((a, i) => {
    const time = a.trans_date_trans_time || new Date(a.unix_time * 1000).toISOString().replace('T', ' ').slice(0, 19);
    const tr = row([
      time,
      ['$' + Number(a.amt).toFixed(2), 'num'],
      a.category,
      (a.merchant || '').replace(/^fraud_/, ''),
      [a.city, a.state].filter(Boolean).join(', '),
      [fmtInt.format(a.distance_km), 'num'],
      [Number(a.fraud_score).toFixed(3), 'num score'],
      labelText(a),
      [num(a.card_tx_1d, 0), 'num'],
      [a.card_amt_ratio_30d == null || a.card_amt_ratio_30d < 0 ? '–' : num(a.card_amt_ratio_30d, 1) + ' x', 'num'],
      [sincePrev(a.card_secs_since_prev), 'num'],
      [a.card_km_from_prev == null || a.card_km_from_prev < 0 ? '–' : fmtInt.format(a.card_km_from_prev), 'num'],
      [a.merch_fraud_rate_30d == null ? '–' : num(100 * a.merch_fraud_rate_30d, 1) + ' %', 'num'],
      [why(a.top_features), 'why'],
    ]);
    tr.append(decide(a));
    if (i < fresh) tr.className = 'new';
    return tr;
  });
  $('alerts').querySelector('tbody').replaceChildren(...rows);
}

// "amt +2.31, hour +1.02": the inputs that raised the score most.
function why(topFeatures) {
  if (!topFeatures) return '–';
  try {
    return JSON.parse(topFeatures).map((f) => `${f.feature} +${Number(f.contribution).toFixed(2)}`).join(', ') || '–';
  } catch (e) {
    return '–';
  }
}

// Who labelled it and when, after the label itself.
function labelText(a) {
  if (a.is_fraud == null) return '–';
  const label = a.is_fraud === 1 ? 'fraud' : 'genuine';
  if (!a.label_by) return label;
  const when = a.label_reported_at ? new Date(a.label_reported_at * 1000).toISOString().slice(11, 16) : '';
  return `${label} · ${a.label_by} ${when}`.trim();
}

// The two buttons that turn an analyst's decision into a label.
function decide(a) {
  const td = document.createElement('td');
  for (const [text, isFraud] of [['fraud', true], ['genuine', false]]) {
    const b = document.createElement('button');
    b.className = text;
    b.textContent = text;
    b.title = isFraud ? 'Confirm: this was fraud' : 'Mark genuine: a false alarm';
    b.addEventListener('click', () => sendLabel(a, isFraud));
    td.append(b);
  }
  return td;
}

async function sendLabel(alert, isFraud) {
  const by = $('analyst').value.trim();
  const status = $('label-status');
  if (!by) {
    status.textContent = 'type your name (analyst) first';
    $('analyst').focus();
    return;
  }
  localStorage.setItem('fraudflight-analyst', by);
  const response = await fetch('/api/labels', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ trans_num: alert.trans_num, is_fraud: isFraud, by }),
  });
  const text = await response.text();
  if (!response.ok) {
    status.textContent = `label refused: ${text.trim()}`;
    return;
  }
  const done = JSON.parse(text);
  for (const a of state.alerts.filter((x) => x.trans_num === alert.trans_num)) {
    a.is_fraud = isFraud ? 1 : 0;
    a.label_by = done.by;
    a.label_reported_at = done.reported_at;
  }
  status.textContent = `${alert.trans_num}: ${isFraud ? 'fraud' : 'genuine'} (${done.via})`;
  renderTable(0);
}

// History columns are null when history is off.
function num(v, digits) {
  return v == null ? '–' : Number(v).toFixed(digits);
}

// Seconds as the largest whole unit; "none" past 30 days (the cap).
function sincePrev(secs) {
  if (secs == null) return '–';
  if (secs > 30 * 86400) return 'none';
  if (secs < 120) return `${secs} s`;
  if (secs < 7200) return `${Math.round(secs / 60)} min`;
  if (secs < 172800) return `${Math.round(secs / 3600)} h`;
  return `${Math.round(secs / 86400)} d`;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) {
    const [text, cls] = Array.isArray(cell) ? cell : [cell, ''];
    const td = document.createElement('td');
    td.textContent = text == null ? '' : String(text);
    if (cls) td.className = cls;
    tr.append(td);
  }
  return tr;
}

// ---------- charts ----------

function draw() {
  const p = state.points;
  const t = p.map((x) => x.t);
  lineChart($('throughput-chart'), t, [
    { label: 'in', color: css('--in'), values: p.map((x) => x.in_per_s) },
    { label: 'scored', color: css('--scored'), values: p.map((x) => x.scored_per_s) },
    { label: 'stored', color: css('--stored'), values: p.map((x) => x.stored_per_s) },
  ], fmtInt.format);
  lineChart($('fraud-chart'), t, [
    { label: 'fraud rate', color: css('--alert'), values: p.map((x) => x.fraud_rate == null ? null : 100 * x.fraud_rate) },
  ], (v) => v.toFixed(2));
  lineChart($('latency-chart'), t, [
    { label: 'p50', color: css('--scored'), values: p.map((x) => x.latency_p50_ms) },
    { label: 'p95', color: css('--warn'), values: p.map((x) => x.latency_p95_ms) },
    { label: 'p99', color: css('--alert'), values: p.map((x) => x.latency_p99_ms) },
  ], fmt1.format);
  scoreChart($('score-chart'), state.status ? state.status.counters.score_histogram : []);
  qualityChart($('quality-chart'), state.status ? state.status.model_quality : null);
  mapChart($('alert-map'));
}

// A canvas sized for the device, with its 2-D context and CSS-pixel size.
function surface(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
  }
  const g = canvas.getContext('2d');
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = '11px system-ui, sans-serif';
  return { g, w, h };
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((m) => m >= v);
}

function lineChart(canvas, times, series, yFormat) {
  const { g, w, h } = surface(canvas);
  const left = 48, right = 8, top = 16, bottom = 18;
  const all = series.flatMap((s) => s.values).filter((v) => v != null);
  const max = niceMax(Math.max(0, ...all));
  // The newest point at the right edge, one step per second.
  const x = (i) => left + (w - left - right) * (HISTORY - times.length + i) / (HISTORY - 1);
  const y = (v) => top + (h - top - bottom) * (1 - v / max);
  g.strokeStyle = css('--line');
  g.fillStyle = css('--muted');
  g.textAlign = 'right';
  for (let k = 0; k <= 4; k++) {
    const v = max * k / 4;
    g.beginPath(); g.moveTo(left, y(v)); g.lineTo(w - right, y(v)); g.stroke();
    g.fillText(yFormat(v), left - 4, y(v) + 4);
  }
  g.textAlign = 'left';
  g.fillText(times.length ? `last ${Math.round((times[times.length - 1] - times[0]) / 1000)} s` : 'waiting for data', left, h - 4);
  let lx = w - right;
  g.textAlign = 'right';
  for (const s of series.slice().reverse()) {
    g.fillStyle = s.color;
    g.fillText(s.label, lx, 11);
    lx -= g.measureText(s.label).width + 12;
  }
  for (const s of series) {
    g.strokeStyle = s.color;
    g.lineWidth = 1.5;
    g.beginPath();
    let pen = false;
    s.values.forEach((v, i) => {
      if (v == null) { pen = false; return; }
      const px = x(i), py = y(v);
      if (pen) g.lineTo(px, py); else g.moveTo(px, py);
      pen = true;
    });
    g.stroke();
    g.lineWidth = 1;
  }
}

function scoreChart(canvas, bins) {
  const { g, w, h } = surface(canvas);
  const left = 48, right = 8, top = 8, bottom = 18;
  const max = Math.max(1, ...bins);
  const logMax = Math.log10(max + 1);
  const bw = (w - left - right) / Math.max(1, bins.length);
  const threshold = state.status ? Number(state.status.model.threshold) : null;
  g.fillStyle = css('--muted');
  g.textAlign = 'right';
  for (let k = 0; k <= Math.ceil(logMax); k++) {
    const yy = top + (h - top - bottom) * (1 - k / Math.max(1, logMax));
    if (yy < top - 1) break;
    g.fillText(fmtInt.format(Math.pow(10, k)), left - 4, yy + 4);
  }
  bins.forEach((n, i) => {
    const bh = (h - top - bottom) * Math.log10(n + 1) / Math.max(1e-9, logMax);
    const lower = i / bins.length;
    g.fillStyle = threshold != null && lower >= threshold ? css('--alert') : css('--in');
    g.fillRect(left + i * bw + 1, h - bottom - bh, bw - 2, bh);
  });
  g.fillStyle = css('--muted');
  g.textAlign = 'left';
  g.fillText('0', left, h - 4);
  g.textAlign = 'right';
  g.fillText('score 1', w - right, h - 4);
  if (threshold != null) {
    const tx = left + (w - left - right) * threshold;
    g.strokeStyle = css('--alert');
    g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(tx, top); g.lineTo(tx, h - bottom); g.stroke();
    g.setLineDash([]);
    g.textAlign = 'left';
    g.fillText('threshold', tx + 4, top + 10);
  }
}

// AP, precision and recall per UTC day, a colour per model version.
const VERSION_COLORS = ['--scored', '--in', '--stored', '--warn'];

function qualityChart(canvas, q) {
  const { g, w, h } = surface(canvas);
  const left = 48, right = 8, top = 16, bottom = 18;
  const days = q ? [...new Set(q.days.map((d) => d.day))].sort((a, b) => a - b) : [];
  const x = (i) => left + (w - left - right) * (days.length < 2 ? 0.5 : i / (days.length - 1));
  const y = (v) => top + (h - top - bottom) * (1 - v);
  g.strokeStyle = css('--line');
  g.fillStyle = css('--muted');
  g.textAlign = 'right';
  for (let k = 0; k <= 4; k++) {
    g.beginPath(); g.moveTo(left, y(k / 4)); g.lineTo(w - right, y(k / 4)); g.stroke();
    g.fillText((k / 4).toFixed(2), left - 4, y(k / 4) + 4);
  }
  if (!days.length) {
    g.textAlign = 'left';
    g.fillText('waiting for the first measured day', left, h - 4);
    return;
  }
  const date = (day) => q.days.find((d) => d.day === day).date;
  g.textAlign = 'left';
  g.fillText(date(days[0]), left, h - 4);
  g.textAlign = 'right';
  g.fillText(date(days[days.length - 1]), w - right, h - 4);
  const versions = [...new Set(q.days.map((d) => d.version))].slice(0, VERSION_COLORS.length);
  let lx = w - right;
  versions.forEach((version, vi) => {
    const color = css(VERSION_COLORS[vi]);
    g.fillStyle = color;
    g.fillText(version, lx, 11);
    lx -= g.measureText(version).width + 12;
    for (const [measure, dash] of [['average_precision', []], ['precision', [5, 3]], ['recall', [1, 3]]]) {
      g.strokeStyle = color;
      g.setLineDash(dash);
      g.lineWidth = measure === 'average_precision' ? 2 : 1;
      g.beginPath();
      let pen = false;
      days.forEach((day, i) => {
        const d = q.days.find((e) => e.day === day && e.version === version);
        const v = d ? d[measure] : null;
        if (v == null) { pen = false; return; }
        if (pen) g.lineTo(x(i), y(v)); else g.moveTo(x(i), y(v));
        pen = true;
      });
      g.stroke();
    }
    g.setLineDash([]);
    g.lineWidth = 1;
  });
}

// ---------- map ----------

// Lower 48 in an equirectangular frame (longitude shrunk by cos 38°), with
// Alaska and Hawaii in insets at the bottom left: plain coordinates, no tiles.
const FRAMES = [
  { test: (lon, lat) => lat > 50 && lon < -129, lon: [-180, -129], lat: [51, 72], box: [0.0, 0.70, 0.22, 0.30] },
  { test: (lon, lat) => lat < 23 && lon < -150, lon: [-161, -154], lat: [18.8, 22.4], box: [0.23, 0.82, 0.12, 0.18] },
  { test: () => true, lon: [-125, -66.5], lat: [24.3, 49.5], box: [0.0, 0.0, 1.0, 1.0] },
];

function projector(w, h) {
  return (lon, lat) => {
    if (lon > 0) lon -= 360; // the Aleutians cross the antimeridian
    const f = FRAMES.find((fr) => fr.test(lon, lat));
    const [bx, by, bw, bh] = f.box;
    const k = Math.cos(((f.lat[0] + f.lat[1]) / 2) * Math.PI / 180);
    const sx = (w * bw) / ((f.lon[1] - f.lon[0]) * k), sy = (h * bh) / (f.lat[1] - f.lat[0]);
    const s = Math.min(sx, sy);
    const ox = w * bx + (w * bw - s * (f.lon[1] - f.lon[0]) * k) / 2;
    const oy = h * by + (h * bh - s * (f.lat[1] - f.lat[0])) / 2;
    return [ox + s * (lon - f.lon[0]) * k, oy + s * (f.lat[1] - lat)];
  };
}

function mapChart(canvas) {
  const { g, w, h } = surface(canvas);
  const project = projector(w, h);
  if (state.states) {
    g.strokeStyle = css('--line');
    g.fillStyle = '#1b2530';
    for (const st of state.states) {
      for (const ring of st.rings) {
        g.beginPath();
        for (let i = 0; i < ring.length; i += 2) {
          const [px, py] = project(ring[i], ring[i + 1]);
          if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
        }
        g.closePath();
        g.fill();
        g.stroke();
      }
    }
  }
  const now = Date.now();
  for (const a of state.mapAlerts) {
    if (a.merch_lat == null || a.merch_long == null) continue;
    const [px, py] = project(Number(a.merch_long), Number(a.merch_lat));
    const age = Math.min(1, (now - a.seen) / 120000);
    g.fillStyle = `rgba(255, 93, 93, ${0.85 - 0.65 * age})`;
    g.beginPath();
    g.arc(px, py, 2 + Math.min(6, Math.sqrt(Number(a.amt) || 0) / 8), 0, 2 * Math.PI);
    g.fill();
  }
  $('map-count').textContent = `· ${fmtInt.format(state.mapAlerts.length)} alerts`;
}

// ---------- start ----------

$('analyst').value = localStorage.getItem('fraudflight-analyst') || '';

fetch('/assets/us-states.json')
  .then((r) => r.json())
  .then((s) => { state.states = s; draw(); })
  .catch(() => { /* the map draws its points without outlines */ });
window.addEventListener('resize', draw);
connect();
