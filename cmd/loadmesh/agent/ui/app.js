// loadmesh dashboard: plain JavaScript, no dependencies, no build step.
//
// It polls the agent's JSON API every POLL_MS (status, plan, events, and
// the time series once per sample interval). Polling rather than a stream:
// fetch can send the Authorization header (EventSource cannot, so a token
// would have to travel in the URL and end up in logs), a follower serves
// the same reads as the leader, and an agent that restarts needs nothing
// re-established.
//
// Safety: data from the API enters the page only through textContent (via
// el/svg below, which create text nodes) and setAttribute; never as HTML.
'use strict';

(() => {
  const POLL_MS = 3000;
  const API = '../v1/';
  const READ_KEY = 'loadmesh.readToken';
  const OP_KEY = 'loadmesh.operatorToken';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const STALE_LOAD_SECONDS = 5;

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers: text only, never HTML --------------------------------

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (/^on/i.test(k)) throw new Error('attach handlers with addEventListener, not ' + k);
      e.setAttribute(k, String(v));
    }
  }

  function appendAll(e, children) {
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    appendAll(e, children);
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    appendAll(e, children);
    return e;
  }

  // ---- tokens (sessionStorage only) --------------------------------------

  function getStored(key) {
    try { return window.sessionStorage.getItem(key) || ''; } catch (e) { return ''; }
  }

  function setStored(key, value) {
    try {
      if (value) window.sessionStorage.setItem(key, value);
      else window.sessionStorage.removeItem(key);
    } catch (e) { /* storage disabled: the token lasts for this page only */ }
  }

  // An operator token also grants reads.
  const readToken = () => getStored(OP_KEY) || getStored(READ_KEY);

  function renderAuthState() {
    const parts = [];
    if (getStored(OP_KEY)) parts.push('operator token set');
    if (getStored(READ_KEY)) parts.push('read token set');
    $('auth-state').textContent = parts.length ? parts.join(', ') : 'no token';
  }

  // ---- API ----------------------------------------------------------------

  class APIError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, opts = {}) {
    const headers = { Accept: 'application/json' };
    const token = opts.token !== undefined ? opts.token : readToken();
    if (token) headers.Authorization = 'Bearer ' + token;
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    let res;
    try {
      res = await fetch(API + path, { method: opts.method || 'GET', headers, body, cache: 'no-store', credentials: 'omit' });
    } catch (e) {
      throw new APIError(0, 'cannot reach the agent (' + e.message + ')');
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!res.ok) {
      const msg = (data && typeof data.error === 'string') ? data.error : (text.trim() || res.statusText);
      throw new APIError(res.status, msg);
    }
    return data;
  }

  // ---- formatting ---------------------------------------------------------

  function fmtNum(v) {
    if (v === null || v === undefined || !isFinite(v)) return '—';
    const digits = Math.abs(v) < 10 && !Number.isInteger(v) ? 1 : 0;
    return v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined || !isFinite(s)) return '—';
    if (s === 0) return '0 ms';
    if (s < 1) {
      const ms = s * 1000;
      return (ms < 10 ? ms.toFixed(1) : ms.toFixed(0)) + ' ms';
    }
    return s.toFixed(2) + ' s';
  }

  const fmtPct = (r) => (r === null || r === undefined || !isFinite(r)) ? '—' : (r * 100).toFixed(0) + ' %';

  function fmtAge(s) {
    if (s < 10) return s.toFixed(1) + ' s';
    if (s < 120) return s.toFixed(0) + ' s';
    return (s / 60).toFixed(0) + ' min';
  }

  function fmtTime(iso, withDate) {
    const d = new Date(iso);
    if (isNaN(d)) return String(iso);
    const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false };
    if (withDate) Object.assign(opts, { month: 'short', day: 'numeric' });
    return d.toLocaleString('en-GB', opts);
  }

  const isZeroTime = (iso) => !iso || iso.startsWith('0001-01-01');

  function badge(text, cls, attrs) {
    return el('span', Object.assign({ class: 'badge ' + (cls || '') }, attrs || {}), text);
  }

  const GOSSIP_CLASS = { alive: 'good', suspect: 'warn', dead: 'bad', left: '' };
  const STATE_CLASS = { active: 'good', standby: 'info', draining: 'warn', cordoned: 'bad' };

  // ---- state and polling --------------------------------------------------

  const state = {
    status: null, plan: null, events: [], series: null, seriesAt: 0,
    autoscaler: null, autoscalerNote: '', lastOK: 0, askedForToken: false,
  };

  function showBanner(text, isError) {
    const b = $('banner');
    b.textContent = text;
    b.className = 'banner' + (isError ? ' error' : '');
    b.hidden = false;
  }

  const hideBanner = () => { $('banner').hidden = true; };

  async function refresh() {
    try {
      const [status, plan, events] = await Promise.all([api('status'), api('plan'), api('events?limit=100')]);
      Object.assign(state, { status, plan, events: events || [] });
      const now = Date.now();
      const every = Math.max(POLL_MS, ((state.series && state.series.interval_seconds) || 0) * 1000);
      if (!state.series || now - state.seriesAt >= every) {
        state.series = await api('timeseries');
        state.seriesAt = now;
      }
      try {
        state.autoscaler = await api('autoscaler');
        state.autoscalerNote = '';
      } catch (e) {
        state.autoscaler = null;
        state.autoscalerNote = e.status === 404 ? e.message : 'not available: ' + e.message;
      }
      state.lastOK = now;
      hideBanner();
      render();
      document.body.dataset.ready = 'true';
    } catch (e) {
      document.body.dataset.error = String(e.status || 0);
      if (e.status === 401 || e.status === 403) {
        showBanner('The agent refused to show its status: ' + e.message +
          '. From a non-loopback address the dashboard needs a read token (Tokens…).', true);
        if (!state.askedForToken) {
          state.askedForToken = true;
          openTokenDialog();
        }
      } else {
        const when = state.lastOK ? ' Showing data from ' + fmtTime(new Date(state.lastOK).toISOString()) + '.' : '';
        showBanner('Cannot load the cluster status: ' + e.message + '.' + when + ' Retrying every ' + POLL_MS / 1000 + ' s.', true);
      }
    }
  }

  let timer = 0;
  let running = false;
  let again = false;

  async function tick() {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      if (!document.hidden) await refresh();
    } finally {
      running = false;
      timer = setTimeout(tick, again ? 0 : POLL_MS);
      again = false;
    }
  }

  // ---- rendering ----------------------------------------------------------

  function render() {
    renderHeader();
    renderMembers();
    renderCharts();
    renderPlan();
    renderEvents();
  }

  function renderHeader() {
    const st = state.status;
    $('node-name').textContent = st.node.name + ' (' + st.node.zone + ')';
    const leader = $('leader-name');
    leader.textContent = st.leader || 'none';
    leader.className = st.leader ? '' : 'error';
    $('raft-state').textContent = st.raft.state.toLowerCase() + ', term ' + st.raft.term;
    $('plan-version').textContent = String(state.plan.version);
    $('updated').textContent = fmtTime(new Date().toISOString());
    renderAuthState();
  }

  function memberRows() {
    const rows = new Map();
    for (const m of state.status.members || []) {
      rows.set(m.name, { name: m.name, zone: m.zone, gossip: m.status, since: m.since, load: m.load });
    }
    for (const [name, pn] of Object.entries(state.plan.nodes || {})) {
      const r = rows.get(name) || { name, zone: pn.zone, gossip: pn.left ? 'left' : 'unknown' };
      r.plan = pn;
      rows.set(name, r);
    }
    return [...rows.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  function renderMembers() {
    const leader = state.status.leader;
    const self = state.status.node.name;
    const rows = memberRows();
    const alive = rows.filter((r) => r.gossip === 'alive').length;
    $('members-count').textContent = alive + ' alive of ' + rows.length;
    $('members-body').replaceChildren(...rows.map((r) => memberRow(r, r.name === leader, r.name === self)));
  }

  function memberRow(r, isLeader, isSelf) {
    const l = r.load;
    const planState = r.plan ? r.plan.state : '';
    const gone = r.gossip === 'dead' || r.gossip === 'left';
    let health = '—';
    if (l && !gone) {
      health = l.ejected ? badge('ejected', 'bad', { title: 'this node\'s outlier detector keeps it out of rotation' })
        : l.healthy ? badge('healthy', 'good') : badge('unhealthy', 'bad');
    }
    let age = '—';
    if (l && !gone) {
      age = isSelf ? el('span', { class: 'muted' }, 'local')
        : el('span', { class: l.age_seconds > STALE_LOAD_SECONDS ? 'stale' : '' }, fmtAge(l.age_seconds));
    }
    const drain = el('button', { type: 'button', 'data-action': 'drain', disabled: planState !== 'active' }, 'Drain');
    drain.addEventListener('click', () => openAction(r.name, 'drain'));
    const activate = el('button', { type: 'button', 'data-action': 'activate', disabled: !planState || planState === 'active' }, 'Activate');
    activate.addEventListener('click', () => openAction(r.name, 'activate'));
    const sinceTitle = (r.plan && !isZeroTime(r.plan.since)) ? 'since ' + fmtTime(r.plan.since, true) : undefined;
    return el('tr', {
      'data-member': r.name, 'data-leader': isLeader ? 'true' : 'false', 'data-state': planState || 'none',
      class: [isSelf ? 'self' : '', gone ? 'gone' : ''].join(' ').trim() || undefined,
    },
    el('td', {}, el('span', { class: 'name' }, r.name),
      isLeader ? badge('leader', 'leader', { 'data-leader-mark': '', title: 'Raft leader' }) : null,
      isSelf ? badge('this node', 'self', { title: 'the agent serving this page' }) : null),
    el('td', {}, r.zone || '—'),
    el('td', {}, badge(r.gossip, GOSSIP_CLASS[r.gossip] || '')),
    el('td', {}, planState ? badge(planState, STATE_CLASS[planState] || '', { title: sinceTitle }) : el('span', { class: 'muted' }, 'not in plan')),
    el('td', {}, health),
    el('td', { class: 'num' }, l && !gone ? fmtNum(l.rps) : '—'),
    el('td', { class: 'num' }, l && !gone ? l.inflight + ' / ' + l.capacity : '—'),
    el('td', { class: 'num' }, l && !gone ? fmtSeconds(l.p95_seconds) : '—'),
    el('td', { class: 'num' }, l && !gone ? fmtPct(l.cpu_ratio) : '—'),
    el('td', { class: 'num' }, l && !gone ? fmtPct(l.memory_ratio) : '—'),
    el('td', { class: 'num' }, age),
    el('td', { class: 'actions' }, drain, activate));
  }

  // ---- charts (inline SVG) -----------------------------------------------

  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function drawChart(o) {
    const W = o.width, H = 132;
    const m = { l: 58, r: 14, t: 24, b: 22 };
    const iw = W - m.l - m.r, ih = H - m.t - m.b;
    let vmax = o.floor;
    let count = 0;
    for (const s of o.series) for (const [, v] of s.values) if (v !== null && isFinite(v)) { vmax = Math.max(vmax, v); count++; }
    const step = o.integer ? Math.max(1, Math.ceil(niceStep(vmax / 3))) : niceStep(vmax / 3);
    const ymax = step * Math.ceil(vmax / step);
    const x = (t) => m.l + ((t - o.t0) / (o.t1 - o.t0)) * iw;
    const y = (v) => m.t + ih - (v / ymax) * ih;
    const root = svg('svg', {
      class: 'chart', width: W, height: H, viewBox: '0 0 ' + W + ' ' + H,
      role: 'img', 'aria-label': o.title, 'data-chart': o.id, 'data-points': count,
    });
    if (o.historyUntil > o.t0) {
      root.append(svg('rect', { class: 'history', x: m.l, y: m.t, width: Math.max(0, x(o.historyUntil) - m.l), height: ih },
        svg('title', {}, 'from the replicated per-minute demand history')));
    }
    for (let v = 0; v <= ymax + step / 2; v += step) {
      root.append(svg('line', { class: 'grid', x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }));
      root.append(svg('text', { class: 'axis', x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, o.fmt(v)));
    }
    const span = o.t1 - o.t0;
    const tstep = [10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600].map((s) => s * 1000).find((s) => span / s <= 7) || 3600000;
    const tfmt = { hour: '2-digit', minute: '2-digit', hour12: false };
    if (tstep < 60000) tfmt.second = '2-digit';
    for (let t = Math.ceil(o.t0 / tstep) * tstep; t <= o.t1; t += tstep) {
      root.append(svg('text', { class: 'axis', x: x(t), y: H - 6, 'text-anchor': 'middle' },
        new Date(t).toLocaleTimeString('en-GB', tfmt)));
    }
    root.append(svg('text', { class: 'title', x: m.l, y: 14 }, o.title));
    root.append(svg('text', { class: 'now', x: W - m.r, y: 14, 'text-anchor': 'end' }, o.nowText));
    if (count === 0) {
      root.append(svg('text', { class: 'empty', x: m.l + iw / 2, y: m.t + ih / 2, 'text-anchor': 'middle' }, 'no data yet'));
    }
    for (const s of o.series) {
      let d = '';
      let prev = null;
      const dots = [];
      for (const [t, v] of s.values) {
        if (v === null || !isFinite(v)) { prev = null; continue; }
        const gap = prev === null || t - prev > o.maxGap;
        d += (gap ? 'M' : 'L') + x(t).toFixed(1) + ',' + y(v).toFixed(1);
        if (gap) dots.push([t, v]);
        prev = t;
      }
      if (d) root.append(svg('path', { class: 'series ' + s.cls, d }, svg('title', {}, s.label)));
      // A lone point has no line to show it.
      if (dots.length && d.split('L').length === 1) {
        for (const [t, v] of dots) root.append(svg('circle', { class: 'series ' + s.cls, cx: x(t), cy: y(v), r: 2.5 }));
      }
    }
    return root;
  }

  function renderCharts() {
    const s = state.series;
    const box = $('charts');
    if (!s) return;
    const pts = (s.points || []).map((p) => Object.assign({ ms: Date.parse(p.t) }, p));
    const width = Math.max(320, Math.floor(box.clientWidth || 900));
    const windowMs = s.window_seconds * 1000;
    const t1 = pts.length ? pts[pts.length - 1].ms : Date.now();
    const t0 = Math.min(t1 - 60000, Math.max(t1 - windowMs, pts.length ? pts[0].ms : t1));
    const spanMin = Math.round((t1 - t0) / 60000);
    $('chart-window').textContent = spanMin >= 59 ? 'last hour' : 'last ' + spanMin + ' min';
    $('chart-note').textContent = '(sampled every ' + s.interval_seconds + ' s by ' + s.node + ')';
    const hist = pts.filter((p) => p.source === 'history');
    const firstSample = pts.find((p) => p.source !== 'history');
    let historyUntil = hist.length ? hist[hist.length - 1].ms + 60000 : 0;
    if (firstSample) historyUntil = Math.min(historyUntil, firstSample.ms);
    const common = {
      width, t0, t1, historyUntil,
      maxGap: Math.max(3 * s.interval_seconds * 1000, 130000),
    };
    const series = (key) => pts.map((p) => [p.ms, p[key] === undefined ? null : p[key]]);
    const last = pts.length ? pts[pts.length - 1] : null;
    const charts = el('div', { class: 'charts' },
      drawChart(Object.assign({
        id: 'rps', title: 'Requests/s (sum of gossiped load)', floor: 1, fmt: fmtNum,
        nowText: last ? fmtNum(last.rps) + ' req/s' : '',
        series: [{ cls: 'rps', label: 'cluster requests/s', values: series('rps') }],
      }, common)),
      drawChart(Object.assign({
        id: 'p95', title: 'p95 latency (worst node, dashed: mean)', floor: 0.001, fmt: fmtSeconds,
        nowText: last ? fmtSeconds(last.p95_max_seconds) : '',
        series: [
          { cls: 'p95-mean', label: 'mean of the nodes\' p95', values: series('p95_mean_seconds') },
          { cls: 'p95', label: 'worst node p95', values: series('p95_max_seconds') },
        ],
      }, common)),
      drawChart(Object.assign({
        id: 'active', title: 'Active capacity (nodes)', floor: 1, integer: true, fmt: (v) => String(Math.round(v)),
        nowText: last ? last.active + ' active' + (last.capacity ? ', ' + last.inflight + ' / ' + last.capacity + ' in flight' : '') : '',
        series: [{ cls: 'active', label: 'active nodes in the plan', values: series('active') }],
      }, common)));
    box.replaceChildren(charts);
  }

  // ---- capacity plan ------------------------------------------------------

  function kv(pairs) {
    const dl = el('dl', { class: 'kv' });
    for (const [k, v] of pairs) {
      if (v === undefined || v === null || v === '') continue;
      dl.append(el('dt', {}, k), el('dd', {}, v));
    }
    return dl;
  }

  function behaviour(b) {
    if (!b) return undefined;
    const parts = [];
    if (b.stabilisation && b.stabilisation !== '0s') parts.push('stabilisation ' + b.stabilisation);
    if (b.max_step_nodes || b.max_step_percent) {
      parts.push('step ≤ max(' + (b.max_step_nodes || 0) + ' nodes, ' + (b.max_step_percent || 0) + ' %)');
    }
    return parts.length ? parts.join(', ') : 'defaults';
  }

  function renderPlan() {
    const plan = state.plan;
    const counts = {};
    for (const n of Object.values(plan.nodes || {})) {
      const k = n.left ? 'left' : n.state;
      counts[k] = (counts[k] || 0) + 1;
    }
    const countText = Object.keys(counts).sort().map((k) => counts[k] + ' ' + k).join(' · ') || 'no nodes';
    const spec = plan.spec || {};
    const policy = $('policy');
    if (!spec.plan_version || !spec.doc) {
      policy.replaceChildren(kv([['nodes', countText]]),
        el('p', { class: 'muted', 'data-policy': 'none' },
          'No scaling policy applied: the cluster is in manual mode and nodes keep the state an operator gives them. ',
          'Apply a plan file with ', el('code', {}, 'loadmesh plan apply FILE'), '.'));
      $('schedules').replaceChildren(el('p', { class: 'muted' }, 'No schedules.'));
      renderAutoscaler();
      return;
    }
    const s = spec.doc;
    const lim = s.limits || {};
    const zones = Object.entries(lim.zones || {}).map(([z, zl]) => z + ' ' + zl.min + '–' + (zl.max || '∞')).join(', ');
    const t = s.targets || {};
    const targets = [];
    if (t.inflight_utilisation) targets.push('in flight ' + fmtPct(t.inflight_utilisation) + ' of capacity');
    if (t.p95_latency && t.p95_latency !== '0s') targets.push('p95 ' + t.p95_latency);
    if (t.cpu) targets.push('CPU ' + fmtPct(t.cpu));
    if (t.memory) targets.push('memory ' + fmtPct(t.memory));
    if (t.rps_per_node) targets.push(fmtNum(t.rps_per_node) + ' req/s per node');
    const pred = s.predictive || {};
    policy.replaceChildren(kv([
      ['nodes', countText],
      ['mode', el('span', { 'data-policy': s.mode || 'auto' }, s.mode || 'auto')],
      ['interval', s.interval],
      ['active nodes', (lim.min_active ?? '?') + ' – ' + (lim.max_active ?? '?') + (zones ? ' (zones: ' + zones + ')' : '')],
      ['targets', targets.join(', ') || 'none'],
      ['tolerance', s.tolerance !== undefined ? '± ' + fmtPct(s.tolerance) : undefined],
      ['scale out', behaviour(s.scale_out)],
      ['scale in', behaviour(s.scale_in)],
      ['new nodes join as', s.new_node_state || undefined],
      ['standby pool', s.standby ? 'keep ' + s.standby.keep + (s.standby.release_after && s.standby.release_after !== '0s' ? ', release after ' + s.standby.release_after : '') : undefined],
      ['predictive', pred.enabled ? 'on (' + (pred.method || 'holt-winters') + ', horizon ' + pred.horizon + ')' : 'off'],
      ['applied', 'plan v' + spec.plan_version + ' by ' + spec.who + ' at ' + fmtTime(spec.time, true) + (spec.why ? ': ' + spec.why : '')],
    ]));
    const scheds = s.schedules || [];
    if (!scheds.length) {
      $('schedules').replaceChildren(el('p', { class: 'muted' }, 'No schedules.'));
    } else {
      $('schedules').replaceChildren(el('table', {},
        el('thead', {}, el('tr', {}, ['name', 'start (cron)', 'lasts', 'time zone', 'min', 'max'].map((h) => el('th', {}, h)))),
        el('tbody', {}, scheds.map((sc) => el('tr', { 'data-schedule': sc.name },
          el('td', {}, sc.name), el('td', {}, el('code', {}, sc.start)),
          el('td', {}, sc.duration ? sc.duration : sc.end ? el('span', {}, 'until ', el('code', {}, sc.end)) : '—'),
          el('td', {}, sc.time_zone || 'UTC'),
          el('td', { class: 'num' }, sc.min_active ?? '—'), el('td', { class: 'num' }, sc.max_active ?? '—'))))));
    }
    renderAutoscaler();
  }

  function renderAutoscaler() {
    const box = $('autoscaler');
    const d = state.autoscaler;
    if (!d) {
      box.className = 'muted';
      box.textContent = state.autoscalerNote || 'no decision yet';
      return;
    }
    box.className = '';
    const metrics = (d.metrics || []).map((mr) => mr.name + ' ' + (mr.name === 'p95_latency' ? fmtSeconds(mr.value) + ' / ' + fmtSeconds(mr.target)
      : fmtNum(mr.value) + ' / ' + fmtNum(mr.target))).join(', ');
    box.replaceChildren(kv([
      ['last decision', fmtTime(d.time, true) + (d.dry_run ? ' (dry run)' : '')],
      ['active → desired', d.active + ' → ' + d.desired + ' (limits ' + d.min + '–' + d.max + ')'],
      ['active schedules', (d.schedules || []).join(', ') || undefined],
      ['metrics (value / target)', metrics || undefined],
      ['reason', d.reason],
    ]));
  }

  // ---- scaling events -----------------------------------------------------

  function renderEvents() {
    const list = $('events');
    const events = (state.events || []).slice(-60).reverse();
    if (!events.length) {
      list.replaceChildren(el('li', { class: 'muted' }, 'No events yet.'));
      return;
    }
    list.replaceChildren(...events.map((e) => {
      const cls = e.who === 'autoscaler' ? 'auto' : e.who === 'membership' ? 'membership' : '';
      const figures = Object.entries(e.metrics || {}).slice(0, 6).map(([k, v]) => k + ' ' + fmtNum(v)).join(' · ');
      return el('li', { class: cls || undefined, 'data-seq': e.seq, 'data-kind': e.kind },
        el('div', {},
          el('span', { class: 'when', title: e.time }, fmtTime(e.time, true)),
          badge(e.kind, cls === 'auto' ? 'info' : ''), ' ',
          e.node ? el('strong', {}, e.node) : null, ' ',
          el('span', { class: 'who' }, 'by ' + e.who)),
        el('div', { class: 'why' }, e.why || ''),
        (e.before || e.after) ? el('div', { class: 'change' }, (e.before || '∅') + ' → ' + (e.after || '∅')) : null,
        figures ? el('div', { class: 'change' }, figures) : null);
    }));
  }

  // ---- dialogs: tokens and node actions -----------------------------------

  function openTokenDialog() {
    const dlg = $('token-dialog');
    $('read-token-input').value = '';
    $('read-token-state').textContent = getStored(READ_KEY) ? 'A read token is stored for this tab.' : 'No read token stored.';
    $('op-token-state').textContent = getStored(OP_KEY) ? 'An operator token is stored for this tab.' : 'No operator token stored (you will be asked for one when you drain or activate a node).';
    if (!dlg.open) dlg.showModal();
  }

  function setupTokenDialog() {
    $('token-button').addEventListener('click', openTokenDialog);
    $('token-cancel').addEventListener('click', () => $('token-dialog').close());
    $('forget-tokens').addEventListener('click', () => {
      setStored(READ_KEY, '');
      setStored(OP_KEY, '');
      $('token-dialog').close();
      renderAuthState();
      tick();
    });
    $('token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const v = $('read-token-input').value.trim();
      if (v) setStored(READ_KEY, v);
      $('token-dialog').close();
      renderAuthState();
      tick();
    });
  }

  let pending = null; // { node, action }

  function openAction(node, action) {
    pending = { node, action };
    const stored = !!getStored(OP_KEY);
    $('action-title').textContent = (action === 'drain' ? 'Drain ' : 'Activate ') + node;
    $('action-text').textContent = action === 'drain'
      ? 'The node stops taking new requests and finishes those in flight; the plan marks it draining.'
      : 'The node becomes active in the capacity plan and takes requests.';
    $('action-reason').value = '';
    $('action-token').value = '';
    $('action-token-label').hidden = stored;
    $('action-token-stored').hidden = !stored;
    $('action-error').hidden = true;
    $('action-submit').textContent = action === 'drain' ? 'Drain' : 'Activate';
    $('action-submit').className = action === 'drain' ? 'danger' : 'primary';
    $('action-submit').disabled = false;
    $('action-dialog').showModal();
  }

  function actionError(text) {
    const p = $('action-error');
    p.textContent = text;
    p.hidden = false;
  }

  async function submitAction(ev) {
    ev.preventDefault();
    if (!pending) return;
    const typed = $('action-token').value.trim();
    const token = typed || getStored(OP_KEY);
    if (!token) {
      actionError('Enter an operator token: node actions always need one, even from loopback.');
      return;
    }
    const { node, action } = pending;
    const reason = $('action-reason').value.trim();
    $('action-submit').disabled = true;
    try {
      await api('nodes/' + encodeURIComponent(node) + '/' + action, { method: 'POST', token, body: reason ? { reason } : {} });
      setStored(OP_KEY, token);
      pending = null;
      $('action-dialog').close();
      renderAuthState();
      tick();
    } catch (e) {
      let msg;
      if (e.status === 401) {
        msg = 'Token refused (401): ' + e.message;
      } else if (e.status === 403) {
        msg = 'Not allowed (403): ' + e.message + '. Use a token with the operator role.';
      } else {
        msg = (e.status ? 'Failed (' + e.status + '): ' : 'Failed: ') + e.message;
      }
      if (e.status === 401 || e.status === 403) {
        setStored(OP_KEY, '');
        $('action-token-label').hidden = false;
        $('action-token-stored').hidden = true;
        renderAuthState();
      }
      actionError(msg);
    } finally {
      $('action-submit').disabled = false;
    }
  }

  function setupActionDialog() {
    $('action-form').addEventListener('submit', submitAction);
    $('action-cancel').addEventListener('click', () => { pending = null; $('action-dialog').close(); });
    $('action-forget').addEventListener('click', () => {
      setStored(OP_KEY, '');
      $('action-token-label').hidden = false;
      $('action-token-stored').hidden = true;
      renderAuthState();
    });
  }

  // ---- start --------------------------------------------------------------

  setupTokenDialog();
  setupActionDialog();
  renderAuthState();
  document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.series) renderCharts(); }, 150);
  });
  tick();
})();
