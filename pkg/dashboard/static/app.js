// The run dashboard: polls the coordinator's JSON endpoints (relative URLs, so it works behind a
// path prefix too) and draws everything itself: SVG line charts, tables, the sample browser.
// Text from the run's files is only ever set as textContent, never parsed as HTML.
'use strict';
(function () {
  const COLORS = ['#1f6feb', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  const SVGNS = 'http://www.w3.org/2000/svg';
  const POLL_MS = 3000;
  const $ = (id) => document.getElementById(id);

  const state = { metricsLen: -1, steps: '', stepChosen: false, evalShown: false, shownStep: null };

  // el builds an element: attrs are attributes (class as "class"), children strings or nodes.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c instanceof Node ? c : String(c));
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  }
  const fmt = (v, d = 3) => (typeof v === 'number' && isFinite(v) ? v.toFixed(d) : '-');
  function fmtAgo(t) {
    const s = (Date.now() - Date.parse(t)) / 1000;
    if (!isFinite(s)) return '-';
    return s < 90 ? Math.max(0, Math.round(s)) + ' s ago' : Math.round(s / 60) + ' min ago';
  }

  async function getJSON(path) {
    const r = await fetch(path, { credentials: 'same-origin', cache: 'no-store' });
    if (!r.ok) throw new Error(path + ': ' + r.status + ' ' + (await r.text()).trim());
    return r.json();
  }

  function setError(msg) {
    const e = $('error');
    e.hidden = !msg;
    e.textContent = msg || '';
  }

  // ---- status -------------------------------------------------------------------------------

  function renderStatus(st) {
    document.title = 'bicot ' + st.run;
    $('run-id').textContent = st.run;
    const label = st.offline ? 'from files' : st.done ? 'done' : 'running';
    const badge = $('run-state');
    badge.textContent = label;
    badge.className = 'badge ' + (st.offline ? 'offline' : st.done ? 'done' : 'running');
    $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
    const steps = st.steps || 0;
    $('progress-bar').style.width = st.ended ? '100%' : steps ? Math.min(100, (100 * st.step) / steps) + '%' : '0';
    const learned = st.ended ? st.step + ' of ' + steps + ' (the time budget ended the run)' : steps ? st.step + ' / ' + steps : st.step;
    const kv = [['steps learned', learned], ['policy version', st.policy_version]];
    if (!st.offline) {
      kv.push(['groups in flight', st.groups_in_flight], ['batches dispatched', st.batches_dispatched],
        ['groups re-dispatched', st.groups_redispatched], ['leader', st.leader ? 'this coordinator' : st.leader_id || '-']);
      if (st.cursor) kv.push(['data cursor', 'epoch ' + st.cursor.epoch + ', offset ' + st.cursor.offset]);
    }
    const dl = $('summary');
    dl.replaceChildren(...kv.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, v ?? '-'))));

    const workers = (st.workers || []).slice().sort((a, b) => (a.role + a.id).localeCompare(b.role + b.id));
    const wt = $('workers');
    if (st.offline) {
      wt.replaceChildren(el('tr', {}, el('td', {}, 'none: this page reads a run from its files')));
    } else {
      wt.replaceChildren(el('tr', {}, ...['id', 'role', 'last seen', 'step', 'version', 'tasks done'].map((h) => el('th', {}, h))),
        ...workers.map((w) => el('tr', {}, el('td', {}, w.id), el('td', {}, w.role + (w.stopped ? ' (stopped)' : '')),
          el('td', {}, fmtAgo(w.last_seen)), el('td', { class: 'num' }, w.step), el('td', { class: 'num' }, w.policy_version),
          el('td', { class: 'num' }, w.tasks_done))));
    }
    const qt = $('queues');
    const queues = Object.entries(st.queues || {}).sort();
    qt.replaceChildren(el('tr', {}, ...['queue', 'pending', 'ack pending'].map((h) => el('th', {}, h))),
      ...queues.map(([k, q]) => el('tr', {}, el('td', {}, k), el('td', { class: 'num' }, q.pending), el('td', { class: 'num' }, q.ack_pending))));
    qt.parentElement.hidden = queues.length === 0;
  }

  // ---- charts -------------------------------------------------------------------------------

  // niceTicks returns about n round values covering [lo, hi].
  function niceTicks(lo, hi, n) {
    const span = hi - lo;
    const raw = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= n) || 10 * mag;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // lineChart draws series [{name, points: [[x, y], ...]}] into the figure's <svg>, with axes, a
  // legend holding each series' last value, and a cursor that shows the values at a step.
  function lineChart(fig, series) {
    const W = 560, H = 230, m = { l: 52, r: 14, t: 10, b: 26 };
    const root = fig.querySelector('svg');
    root.setAttribute('viewBox', `0 0 ${W} ${H}`);
    root.replaceChildren();
    const legend = fig.querySelector('.legend');
    const pts = series.flatMap((s) => s.points).filter((p) => isFinite(p[1]));
    if (pts.length === 0) {
      const t = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' });
      t.textContent = 'no steps learned yet';
      root.append(t);
      legend.replaceChildren();
      return;
    }
    let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    const sx = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const sy = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    for (const v of niceTicks(y0, y1, 5)) {
      root.append(svg('line', { class: 'grid', x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v) }));
      const t = svg('text', { x: m.l - 6, y: sy(v) + 4, 'text-anchor': 'end' });
      t.textContent = Math.abs(v) >= 1000 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(1) : String(v);
      root.append(t);
    }
    for (const v of niceTicks(x0, x1, 8).filter((v) => Number.isInteger(v))) {
      const t = svg('text', { x: sx(v), y: H - m.b + 16, 'text-anchor': 'middle' });
      t.textContent = String(v);
      root.append(t);
    }
    root.append(svg('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
    root.append(svg('line', { class: 'axis', x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
    series.forEach((s, i) => {
      s.color = COLORS[i % COLORS.length];
      const good = s.points.filter((p) => isFinite(p[1]));
      if (good.length === 0) return;
      const d = good.map((p, j) => (j ? 'L' : 'M') + sx(p[0]).toFixed(1) + ' ' + sy(p[1]).toFixed(1)).join(' ');
      root.append(svg('path', { class: 'line', d, stroke: s.color, 'data-series': s.name }));
      if (good.length === 1) root.append(svg('circle', { cx: sx(good[0][0]), cy: sy(good[0][1]), r: 2.5, fill: s.color }));
    });
    const cursor = svg('line', { class: 'cursor', y1: m.t, y2: H - m.b, visibility: 'hidden' });
    root.append(cursor);
    const showLegend = (x) => {
      legend.replaceChildren(...series.map((s) => {
        const p = x == null ? s.points[s.points.length - 1] : s.points.find((q) => q[0] === x);
        return el('span', {}, el('i', { style: 'background:' + s.color }), s.name + ' ' + (p ? fmt(p[1], 4) : '-'));
      }));
      if (x != null) legend.prepend(el('span', {}, 'step ' + x));
    };
    showLegend(null);
    root.onmousemove = (ev) => {
      const r = root.getBoundingClientRect();
      const px = ((ev.clientX - r.left) / r.width) * W;
      const x = Math.round(x0 + ((px - m.l) / (W - m.l - m.r)) * (x1 - x0));
      if (x < x0 || x > x1) return;
      cursor.setAttribute('x1', sx(x));
      cursor.setAttribute('x2', sx(x));
      cursor.setAttribute('visibility', 'visible');
      showLegend(x);
    };
    root.onmouseleave = () => { cursor.setAttribute('visibility', 'hidden'); showLegend(null); };
  }

  function renderCharts(recs) {
    const col = (f) => recs.map((r) => [r.step, f(r)]);
    const experts = [...new Set(recs.flatMap((r) => Object.keys(r.per_expert || {})))].sort();
    lineChart($('chart-reward'), [{ name: 'total', points: col((r) => r.stats.reward_mean) },
      ...experts.map((e) => ({ name: e, points: col((r) => (r.per_expert || {})[e]) }))]);
    lineChart($('chart-kl'), [{ name: 'kl', points: col((r) => r.stats.kl) },
      { name: 'plan', points: col((r) => r.stats.plan_kl) }, { name: 'image', points: col((r) => r.stats.image_kl) }]);
    const loss = [{ name: 'loss', points: col((r) => r.stats.loss) }];
    if (recs.some((r) => r.stats.sft_loss)) loss.push({ name: 'sft loss', points: col((r) => r.stats.sft_loss) });
    lineChart($('chart-loss'), loss);
    lineChart($('chart-time'), [{ name: 'wait', points: col((r) => r.wait_seconds) },
      { name: 'train', points: col((r) => r.train_seconds) }, { name: 'step', points: col((r) => r.step_seconds) }]);
  }

  // ---- oracle evaluation ----------------------------------------------------------------------

  function renderEval(ev) {
    const types = [...new Set([...Object.keys(ev.initial?.task_types || {}), ...Object.keys(ev.final?.task_types || {})])].sort();
    const rows = types.map((t) => [t, ev.initial?.task_types?.[t], ev.final?.task_types?.[t]]);
    rows.push(['mean', ev.initial?.mean, ev.final?.mean]);
    const bar = (v, cls) => el('span', { class: cls, style: 'width:' + Math.round(120 * Math.max(0, Math.min(1, v || 0))) + 'px' });
    $('eval-table').replaceChildren(el('tr', {}, ...['task type', 'initial', 'final', 'change'].map((h) => el('th', {}, h))),
      ...rows.map(([t, a, b]) => {
        const d = b - a;
        return el('tr', {}, el('td', {}, t), el('td', { class: 'num' }, fmt(a), bar(a, 'bar')),
          el('td', { class: 'num' }, fmt(b), bar(b, 'bar final')),
          el('td', { class: 'num ' + (d > 0 ? 'pos' : d < 0 ? 'neg' : '') }, isFinite(d) ? (d > 0 ? '+' : '') + fmt(d) : '-'));
      }));
    $('eval').hidden = false;
  }

  // ---- samples ------------------------------------------------------------------------------

  function renderStepChoice(steps) {
    const key = steps.join(',');
    if (key === state.steps) return;
    state.steps = key;
    const sel = $('sample-step');
    const keep = sel.value;
    sel.replaceChildren(...steps.map((s) => el('option', { value: s }, String(s))));
    $('samples-note').textContent = steps.length ? steps.length + ' kept step' + (steps.length > 1 ? 's' : '') : 'none kept yet';
    if (!steps.length) return;
    sel.value = state.stepChosen && steps.includes(+keep) ? keep : String(steps[steps.length - 1]);
    if (sel.value !== String(state.shownStep)) showSamples(+sel.value).catch((e) => setError('could not read the samples: ' + e.message));
  }

  async function showSamples(step) {
    state.shownStep = step;
    const idx = await getJSON('v1/samples/' + step);
    if (state.shownStep !== step) return;
    $('samples').replaceChildren(...idx.groups.map((g) => {
      const head = el('header', {}, el('span', { class: 'prompt' }, g.prompt),
        el('span', { class: 'note' }, 'prompt ' + g.prompt_index + (g.task_type ? ' · ' + g.task_type : '') +
          (g.filtered ? ' · rewards tied, not trained' : '')));
      const cards = g.samples.map((s) => {
        const experts = Object.entries(s.per_expert || {}).sort();
        const adv = el('span', { class: s.advantage > 0 ? 'pos' : s.advantage < 0 ? 'neg' : '' }, (s.advantage > 0 ? '+' : '') + fmt(s.advantage, 2));
        return el('div', { class: 'card' },
          el('img', { src: 'v1/samples/' + step + '/' + encodeURIComponent(s.image), alt: 'sample ' + s.sample_index, width: 32, height: 32 }),
          el('table', {}, el('tr', {}, el('td', {}, 'reward'), el('td', {}, fmt(s.reward))),
            el('tr', {}, el('td', {}, 'advantage'), el('td', {}, adv)),
            ...experts.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, fmt(v))))),
          el('p', { class: 'plan', title: 'plan (semantic chain of thought), policy version ' + s.policy_version },
            (s.plan || '(no plan)') + (s.plan_truncated ? ' …' : '')));
      });
      return el('div', { class: 'group' }, head, el('div', { class: 'cards' }, ...cards));
    }));
  }

  // ---- polling ------------------------------------------------------------------------------

  async function refresh() {
    let more = true;
    try {
      const st = await getJSON('v1/status');
      renderStatus(st);
      const recs = await getJSON('v1/metrics');
      if (recs.length !== state.metricsLen) {
        state.metricsLen = recs.length;
        renderCharts(recs);
      }
      renderStepChoice((await getJSON('v1/samples')).steps);
      if (!state.evalShown) {
        const ev = await getJSON('v1/eval');
        if (ev) { renderEval(ev); state.evalShown = true; }
      }
      setError('');
      // A finished run or one read from files does not change any more.
      more = !(st.done || st.offline);
    } catch (e) {
      setError('could not read the run: ' + e.message);
    }
    if (more) setTimeout(refresh, POLL_MS);
  }

  $('sample-step').addEventListener('change', (ev) => {
    state.stepChosen = true;
    showSamples(+ev.target.value).catch((e) => setError('could not read the samples: ' + e.message));
  });
  refresh();
})();
