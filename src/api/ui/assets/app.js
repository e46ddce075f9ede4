// faasgate UI: plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Views (hash routes): #/ (function list of the chosen namespace), #/function/<ns>/<name>,
// #/deploy, #/secrets (the chosen namespace's secrets: names only, values write-only),
// #/namespaces (create and delete namespaces; the header's selector lists them). Data comes from the OpenFaaS API (/system/*, /function/*) and the gateway's
// /ui/api/summary and /ui/api/series. Credentials live in sessionStorage and go out as an
// Authorization header on /system and /ui/api calls only (never to functions).
'use strict';

const AUTH_KEY = 'faasgate.auth';
const NS_KEY = 'faasgate.namespace';
const DEFAULT_NS = 'openfaas-fn';
const SCALE_PREFIX = 'com.openfaas.scale.';

const $ = (id) => document.getElementById(id);
const state = {
  auth: sessionStorage.getItem(AUTH_KEY), // base64 "user:password", or null
  authNeeded: true,
  namespace: localStorage.getItem(NS_KEY) || DEFAULT_NS,
  namespaces: [DEFAULT_NS],
  view: null, // { name, stop() }
  afterLogin: null,
};

class AuthError extends Error {}

// ---------------------------------------------------------------------------------------
// HTTP

async function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  if (state.auth) headers.set('Authorization', 'Basic ' + state.auth);
  const r = await fetch(path, { ...opts, headers, cache: 'no-store', credentials: 'omit' });
  if (r.status === 401) {
    showLogin('Your credentials were not accepted. Please log in again.');
    throw new AuthError('unauthorised');
  }
  return r;
}

// Shown in the header when this gateway is one of several: whether it leads (makes the
// scale decisions) and how many gateways the cluster has.
function showCluster(c) {
  const el = document.getElementById('cluster');
  if (!el || !c || c.members <= 1) {
    if (el) el.hidden = true;
    return;
  }
  const text = `${c.leader ? 'leader' : 'follower'} · ${c.members} gateways`;
  if (el.textContent !== text) el.textContent = text;
  el.title = c.leader
    ? `This gateway makes the scale decisions (term ${c.term}); ${c.membersKnown} of ${c.members - 1} others reporting`
    : 'Another gateway makes the scale decisions';
  el.hidden = false;
}

async function apiJSON(path) {
  const r = await api(path);
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

function b64(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

function q(params) {
  return new URLSearchParams(params).toString();
}

// ---------------------------------------------------------------------------------------
// Formatting

const intFmt = new Intl.NumberFormat('en-US');
function fmtInt(n) { return n == null ? '–' : intFmt.format(n); }
function fmtRate(r) {
  if (r == null) return '–';
  if (r === 0) return '0/s';
  if (r < 10) return r.toFixed(2) + '/s';
  if (r < 100) return r.toFixed(1) + '/s';
  return intFmt.format(Math.round(r)) + '/s';
}
function fmtSecs(s) {
  if (s == null) return '–';
  if (s < 0.001) return (s * 1000).toFixed(2) + ' ms';
  if (s < 1) return (s * 1000).toFixed(s < 0.1 ? 1 : 0) + ' ms';
  return s.toFixed(2) + ' s';
}
function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false });
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function flash(msg, kind = 'ok') {
  const f = $('flash');
  f.textContent = '';
  if (!msg) return;
  f.append(el('p', { class: 'flash ' + kind, text: msg }));
  clearTimeout(flash.t);
  flash.t = setTimeout(() => { f.textContent = ''; }, 6000);
}

function showError(node, msg) {
  if (!node) return;
  node.textContent = msg || '';
  node.hidden = !msg;
}

// ---------------------------------------------------------------------------------------
// Session and routing

function mount(tplId) {
  const main = $('main');
  main.textContent = '';
  main.append($(tplId).content.cloneNode(true));
  return main;
}

function stopView() {
  if (state.view && state.view.stop) state.view.stop();
  state.view = null;
}

function showLogin(message) {
  state.auth = null;
  sessionStorage.removeItem(AUTH_KEY);
  stopView();
  $('nav').hidden = true;
  $('session').hidden = true;
  if (!state.afterLogin) state.afterLogin = location.hash || '#/';
  mount('tpl-login');
  state.view = { name: 'login' };
  document.title = 'Log in · faasgate';
  showError($('login-error'), message || '');
  const pw = $('login-password');
  pw.focus();
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const user = $('login-user').value;
    const password = pw.value;
    const submit = $('login-submit');
    submit.disabled = true;
    try {
      const token = b64(user + ':' + password);
      const r = await fetch('/ui/api/summary?' + q({ namespace: DEFAULT_NS }), {
        headers: { Authorization: 'Basic ' + token }, cache: 'no-store', credentials: 'omit',
      });
      if (r.status === 401) {
        pw.value = '';
        showError($('login-error'), 'Wrong user name or password.');
        pw.focus();
        return;
      }
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      state.auth = token;
      sessionStorage.setItem(AUTH_KEY, token);
      const next = state.afterLogin || '#/';
      state.afterLogin = null;
      stopView();
      enterApp();
      history.replaceState(null, '', next);
      route();
    } catch (e) {
      showError($('login-error'), 'Cannot reach the gateway: ' + e.message);
    } finally {
      submit.disabled = false;
    }
  });
}

function enterApp() {
  $('nav').hidden = false;
  $('session').hidden = false;
  $('logout').hidden = !state.authNeeded;
  loadNamespaces();
}

async function loadNamespaces() {
  try {
    const list = await apiJSON('/system/namespaces');
    state.namespaces = list.length ? list : [DEFAULT_NS];
  } catch (e) {
    if (e instanceof AuthError) return;
  }
  // A remembered namespace that no longer exists: back to the default.
  if (!state.namespaces.includes(state.namespace)) setNamespace(DEFAULT_NS);
  const sel = $('ns');
  sel.textContent = '';
  for (const n of state.namespaces) sel.append(el('option', { value: n, text: n }));
  sel.value = state.namespace;
}

function setNamespace(ns) {
  state.namespace = ns;
  localStorage.setItem(NS_KEY, ns);
  if ($('ns').value !== ns) $('ns').value = ns;
}

// Opens the confirmation dialog; `onOk` runs when the user confirms.
function confirmDialog(title, text, okLabel, onOk, returnFocus) {
  const dlg = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  dlg.returnValue = '';
  dlg.onclose = () => {
    if (dlg.returnValue !== 'ok') { if (returnFocus) returnFocus.focus(); return; }
    onOk();
  };
  dlg.showModal();
}

function route() {
  if (state.authNeeded && !state.auth) { showLogin(); return; }
  stopView();
  const parts = (location.hash.replace(/^#\/?/, '') || '').split('/').map(decodeURIComponent);
  if (parts[0] === 'function' && parts.length >= 3) {
    setNamespace(parts[1]);
    functionView(parts[1], parts.slice(2).join('/'));
  } else if (parts[0] === 'deploy') {
    deployView();
  } else if (parts[0] === 'secrets') {
    secretsView();
  } else if (parts[0] === 'namespaces') {
    namespacesView();
  } else {
    listView();
  }
  const nav = [
    ['nav-functions', !['deploy', 'secrets', 'namespaces'].includes(parts[0])],
    ['nav-deploy', parts[0] === 'deploy'],
    ['nav-secrets', parts[0] === 'secrets'],
    ['nav-namespaces', parts[0] === 'namespaces'],
  ];
  for (const [id, on] of nav) {
    if (on) $(id).setAttribute('aria-current', 'page'); else $(id).removeAttribute('aria-current');
  }
}

// A refresh loop that never overlaps itself, backs off when slow and pauses in hidden tabs.
function poller(fn, baseMs) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    const t0 = performance.now();
    try { await fn(); } catch (e) { if (!(e instanceof AuthError)) console.warn(e); }
    if (stopped) return;
    const took = performance.now() - t0;
    timer = setTimeout(tick, Math.min(10000, Math.max(baseMs, took * 5)));
  };
  const tick = () => {
    if (document.hidden) { timer = setTimeout(tick, baseMs); return; }
    run();
  };
  run();
  return { stop() { stopped = true; clearTimeout(timer); }, now: run };
}

// ---------------------------------------------------------------------------------------
// Function list

function listView() {
  const ns = state.namespace;
  mount('tpl-list');
  document.title = `Functions · ${ns} · faasgate`;
  $('list-ns').textContent = ns;
  const body = $('fns-body');
  const rows = new Map(); // name -> { tr, cells }
  let order = '';
  const filter = $('filter');
  let needle = '';
  filter.addEventListener('input', () => {
    needle = filter.value.trim().toLowerCase();
    for (const [name, row] of rows) row.tr.hidden = needle !== '' && !name.toLowerCase().includes(needle);
    updateMeta();
  });
  let lastCount = 0;
  let lastRefresh = null;
  const updateMeta = () => {
    const shown = [...rows.values()].filter((r) => !r.tr.hidden).length;
    const when = lastRefresh ? ' · updated ' + fmtTime(lastRefresh) : '';
    setText($('list-meta'), `${fmtInt(lastCount)} function${lastCount === 1 ? '' : 's'}` +
      (shown !== lastCount ? `, ${fmtInt(shown)} shown` : '') + when);
  };

  const makeRow = (name) => {
    const tr = el('tr', { 'data-name': name });
    const link = el('a', { href: `#/function/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`, text: name });
    const labels = ['Name', 'Image / fprocess', 'Replicas', 'Invocations', 'Rate', 'p50', 'p99', 'In flight', 'Async queued'];
    const cells = labels.map((l, i) => {
      const td = el(i === 0 ? 'th' : 'td', { 'data-label': l });
      if (i === 0) { td.setAttribute('scope', 'row'); td.append(el('span', { class: 'dot' }), link); }
      if (i >= 2) td.className = 'num';
      tr.append(td);
      return td;
    });
    return { tr, cells, dot: cells[0].firstChild };
  };

  const refresh = async () => {
    const [fns, summary] = await Promise.all([
      apiJSON('/system/functions?' + q({ namespace: ns })).catch((e) => {
        if (e instanceof AuthError) throw e;
        if (String(e.message).includes(' 404 ')) return [];
        throw e;
      }),
      apiJSON('/ui/api/summary?' + q({ namespace: ns })),
    ]);
    showCluster(summary.cluster);
    const live = summary.functions || {};
    const queues = summary.queues || {};
    const seen = new Set();
    for (const f of fns) {
      seen.add(f.name);
      let row = rows.get(f.name);
      if (!row) {
        row = makeRow(f.name);
        row.tr.hidden = needle !== '' && !f.name.toLowerCase().includes(needle);
        rows.set(f.name, row);
      }
      const s = live[f.name] || {};
      const c = row.cells;
      setText(c[1], f.image ? (f.envProcess ? `${f.image} · ${f.envProcess}` : f.image) : (f.envProcess || '–'));
      setText(c[2], `${f.availableReplicas} / ${f.replicas}`);
      setText(c[3], fmtInt(f.invocationCount));
      setText(c[4], fmtRate(s.rate));
      setText(c[5], fmtSecs(s.p50));
      setText(c[6], fmtSecs(s.p99));
      setText(c[7], fmtInt(s.inflight ?? 0));
      setText(c[8], fmtInt(queues[f.name]?.queued ?? 0));
      const up = f.update;
      const st = up?.status === 'failed' ? 'warn'
        : f.replicas === 0 ? 'zero' : f.availableReplicas >= f.replicas ? 'ok' : 'warn';
      const title = up ? `update ${up.status}: ${up.message}`
        : st === 'zero' ? 'scaled to zero' : st === 'ok' ? 'ready' : 'not all replicas ready';
      if (row.dot.dataset.state !== st || row.dot.title !== title) {
        row.dot.dataset.state = st;
        row.dot.title = title;
      }
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) { row.tr.remove(); rows.delete(name); }
    }
    const names = fns.map((f) => f.name).join('\n');
    if (names !== order) {
      // Re-append in the provider's order (sorted by name); unchanged rows keep their nodes.
      const frag = document.createDocumentFragment();
      for (const f of fns) frag.append(rows.get(f.name).tr);
      body.append(frag);
      order = names;
    }
    lastCount = fns.length;
    lastRefresh = Date.now();
    $('fns-empty').hidden = fns.length !== 0;
    $('fns').hidden = fns.length === 0;
    updateMeta();
  };
  const p = poller(refresh, 2000);
  const onKey = (ev) => {
    if (ev.key === '/' && document.activeElement.tagName !== 'INPUT' && document.activeElement.tagName !== 'TEXTAREA') {
      ev.preventDefault();
      filter.focus();
    }
  };
  document.addEventListener('keydown', onKey);
  state.view = { name: 'list', stop() { p.stop(); document.removeEventListener('keydown', onKey); } };
}

// ---------------------------------------------------------------------------------------
// Function page

function kv(dl, map, emptyText = 'none') {
  dl.textContent = '';
  const entries = Object.entries(map || {});
  if (!entries.length) { dl.append(el('div', { class: 'muted small', text: emptyText })); return; }
  for (const [k, v] of entries) {
    dl.append(el('div', {}, el('dt', { text: k }), el('dd', { text: String(v) })));
  }
}

function functionView(ns, name) {
  mount('tpl-function');
  document.title = `${name} · faasgate`;
  $('fn-name').textContent = name;
  $('fn-ns').textContent = ns;
  $('inv-prefix').textContent = `/function/${name}.${ns}`;
  const qs = q({ namespace: ns });
  let status = null;
  let samples = [];
  let asyncQueue = null;
  let windowSecs = 600;
  let stopped = false;
  let scaleTouched = false;
  $('scale-replicas').addEventListener('input', () => { scaleTouched = true; });

  const renderStatus = () => {
    const s = status;
    const st = s.stats || {};
    const badge = $('fn-badge');
    const ready = s.availableReplicas;
    setText(badge, s.replicas === 0 ? 'scaled to zero' : `${ready}/${s.replicas} ready`);
    badge.dataset.state = s.replicas === 0 ? 'zero' : ready >= s.replicas ? 'ok' : 'warn';
    if (!scaleTouched && document.activeElement !== $('scale-replicas')) $('scale-replicas').value = s.replicas;
    kv($('fn-overview'), {
      'Image': s.image || '–',
      'fprocess': s.envProcess || '–',
      'Replicas (ready / desired)': `${s.availableReplicas} / ${s.replicas}`,
      'Invocations': fmtInt(s.invocationCount),
      'Latency p50 / p90 / p99 (since deploy)': st.count ? `${fmtSecs(st.p50)} / ${fmtSecs(st.p90)} / ${fmtSecs(st.p99)}` : '–',
      'In flight / queued': `${fmtInt(st.inflight ?? 0)} / ${fmtInt(st.queued ?? 0)}`,
      'Async queue': asyncQueue ? `${fmtInt(asyncQueue.queued)} queued (${fmtInt(asyncQueue.delivering)} being delivered), oldest ${fmtSecs(asyncQueue.oldestSeconds)}` : 'empty',
      'Created': s.createdAt ? new Date(s.createdAt).toLocaleString() : '–',
      'Last update': !s.update ? 'applied'
        : s.update.status === 'failed'
          ? `failed ${new Date(s.update.since).toLocaleString()}: ${s.update.message} (the previous version serves)`
          : `in progress since ${new Date(s.update.since).toLocaleString()}: ${s.update.message}`,
    });
    const labels = s.labels || {};
    const scale = {};
    const other = {};
    for (const [k, v] of Object.entries(labels)) {
      if (k.startsWith(SCALE_PREFIX)) scale[k.slice(SCALE_PREFIX.length)] = v; else other[k] = v;
    }
    kv($('fn-scale-settings'), scale, 'No com.openfaas.scale.* labels: min 1, no autoscaling limits.');
    kv($('fn-labels'), other);
    kv($('fn-annotations'), s.annotations);
    // Names only: values may be secrets.
    const env = $('fn-env');
    env.textContent = '';
    const envNames = Object.keys(s.envVars || {});
    if (!envNames.length) env.append(el('li', { class: 'muted small', text: 'none' }));
    for (const k of envNames) env.append(el('li', {}, el('code', { text: k })));
    const sec = $('fn-secrets');
    sec.textContent = '';
    if (!(s.secrets || []).length) sec.append(el('li', { class: 'muted small', text: 'none' }));
    for (const k of s.secrets || []) sec.append(el('li', {}, el('code', { text: k })));
  };

  const renderEvents = (events) => {
    const tb = $('fn-events').tBodies[0];
    tb.textContent = '';
    for (const e of [...events].reverse().slice(0, 20)) {
      tb.append(el('tr', {}, el('td', { text: fmtTime(e.time) }),
        el('td', { text: `${e.from} → ${e.to}` }), el('td', { text: e.reason })));
    }
    $('fn-events').hidden = events.length === 0;
    $('fn-events-empty').hidden = events.length !== 0;
  };

  const refresh = async () => {
    const r = await api(`/system/function/${encodeURIComponent(name)}?${qs}`);
    if (r.status === 404) {
      showError($('fn-error'), `Function ${name} does not exist in namespace ${ns} (any more).`);
      return;
    }
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    status = await r.json();
    if (stopped) return;
    showError($('fn-error'), '');
    renderStatus();
    const series = await apiJSON(`/ui/api/series?${q({ name, namespace: ns })}`).catch((e) => {
      if (e instanceof AuthError) throw e;
      return { samples: [], events: [] };
    });
    if (stopped) return;
    samples = series.samples || [];
    asyncQueue = series.queue || null;
    renderStatus();
    renderEvents(series.events || []);
    drawChart($('chart'), samples, windowSecs);
  };
  $('chart-window').addEventListener('change', (ev) => {
    windowSecs = Number(ev.target.value);
    setText($('chart-span'), ev.target.selectedOptions[0].textContent);
    drawChart($('chart'), samples, windowSecs);
  });
  const onResize = () => drawChart($('chart'), samples, windowSecs);
  window.addEventListener('resize', onResize);

  // Scale
  $('scale-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('scale-replicas');
    const n = Number(input.value);
    if (input.value === '' || !Number.isInteger(n) || n < 0) {
      showError($('fn-error'), 'Replicas must be a whole number, 0 or more.');
      input.focus();
      return;
    }
    $('scale-submit').disabled = true;
    try {
      const r = await api(`/system/scale-function/${encodeURIComponent(name)}?${qs}`, {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ serviceName: name, namespace: ns, replicas: n }),
      });
      if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
      scaleTouched = false;
      showError($('fn-error'), '');
      flash(`Scaling ${name} to ${n} replica${n === 1 ? '' : 's'}.`);
      p.now();
    } catch (e) {
      if (!(e instanceof AuthError)) showError($('fn-error'), 'Scaling failed: ' + e.message);
    } finally {
      $('scale-submit').disabled = false;
    }
  });

  // Delete, after confirmation
  $('delete').addEventListener('click', () => {
    confirmDialog('Delete function?',
      `Delete ${name} from namespace ${ns}? Its replicas are stopped and its spec is removed. This cannot be undone.`,
      'Delete', async () => {
      try {
        const r = await api(`/system/functions?${qs}`, {
          method: 'DELETE', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ functionName: name, namespace: ns }),
        });
        if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
        flash(`Deleted ${name}.`);
        location.hash = '#/';
      } catch (e) {
        if (!(e instanceof AuthError)) showError($('fn-error'), 'Delete failed: ' + e.message);
      }
    }, $('delete'));
  });

  // Invoke
  $('invoke-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    showError($('inv-error'), '');
    const method = $('inv-method').value;
    let path = $('inv-path').value.trim();
    if (path && !path.startsWith('/')) path = '/' + path;
    const query = $('inv-query').value.trim().replace(/^\?/, '');
    const headers = new Headers();
    const lines = $('inv-headers').value.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i].trim();
      if (!line) continue;
      const c = line.indexOf(':');
      try {
        if (c <= 0) throw new Error('expected Name: value');
        headers.append(line.slice(0, c).trim(), line.slice(c + 1).trim());
      } catch (e) {
        showError($('inv-error'), `Header line ${i + 1} (${line}): ${e.message}`);
        $('inv-headers').focus();
        return;
      }
    }
    const url = `/function/${encodeURIComponent(name)}.${encodeURIComponent(ns)}${path}${query ? '?' + query : ''}`;
    const opts = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'manual' };
    if (method !== 'GET' && method !== 'HEAD') opts.body = $('inv-body').value;
    $('inv-send').disabled = true;
    const t0 = performance.now();
    try {
      const r = await fetch(url, opts);
      const buf = await r.arrayBuffer();
      const ms = performance.now() - t0;
      $('inv-result').hidden = false;
      setText($('inv-status'), r.type === 'opaqueredirect' ? 'redirect (not followed)' : `${r.status} ${r.statusText}`);
      $('inv-status').dataset.ok = String(r.ok);
      setText($('inv-duration'), ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`);
      setText($('inv-size'), `${fmtInt(buf.byteLength)} bytes`);
      const hs = [];
      r.headers.forEach((v, k) => hs.push(`${k}: ${v}`));
      $('inv-resp-headers').textContent = hs.join('\n');
      const text = new TextDecoder().decode(buf.slice(0, 256 * 1024));
      $('inv-resp-body').textContent = text + (buf.byteLength > 256 * 1024 ? '\n… (truncated)' : '');
      p.now();
    } catch (e) {
      showError($('inv-error'), 'Request failed: ' + e.message);
    } finally {
      $('inv-send').disabled = false;
    }
  });

  // Logs
  let logsBusy = false;
  const refreshLogs = async () => {
    if (logsBusy) return;
    logsBusy = true;
    try {
      const r = await api(`/system/logs?${q({ name, namespace: ns, tail: 200, follow: 'false' })}`);
      if (!r.ok) { setText($('logs'), `Logs unavailable: ${r.status} ${(await r.text()).trim()}`); return; }
      const out = [];
      for (const line of (await r.text()).split('\n')) {
        if (!line.trim()) continue;
        try {
          const m = JSON.parse(line);
          const t = m.timestamp ? m.timestamp.replace('T', ' ').replace(/\.(\d{3})\d*/, '.$1') : '';
          out.push(`${t}  ${m.instance}  ${m.text}`);
        } catch (_) { out.push(line); }
      }
      const pre = $('logs');
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      setText(pre, out.length ? out.join('\n') : '(no log lines yet)');
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    } finally {
      logsBusy = false;
    }
  };
  $('logs-refresh').addEventListener('click', () => refreshLogs().catch(() => {}));
  const logTimer = setInterval(() => {
    if (!document.hidden && $('logs-auto') && $('logs-auto').checked) refreshLogs().catch(() => {});
  }, 3000);
  refreshLogs().catch(() => {});

  const p = poller(refresh, 2000);
  state.view = {
    name: 'function',
    stop() { stopped = true; p.stop(); clearInterval(logTimer); window.removeEventListener('resize', onResize); },
  };
}

// ---------------------------------------------------------------------------------------
// Chart: three stacked panels (replicas, rate, latency) on one time axis, as inline SVG.

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function drawChart(box, samples, windowSecs) {
  if (!box) return;
  const W = Math.max(280, box.clientWidth || 600);
  const panelH = 74;
  const gap = 26;
  const left = 48;
  const right = 10;
  const top = 16;
  const panels = [
    { title: 'Replicas', lines: [['desired', 'desired', true], ['ready', 'ready', false]], fmt: (v) => String(Math.round(v)), minMax: 1 },
    { title: 'Requests / s', lines: [['rate', 'rate', false]], fmt: (v) => (v < 10 ? v.toFixed(1) : String(Math.round(v))), minMax: 1 },
    { title: 'Latency (ms)', lines: [['p50', 'p50', false], ['p99', 'p99', false]], fmt: (v) => (v < 10 ? v.toFixed(1) : String(Math.round(v))), scale: 1000, minMax: 1 },
  ];
  const H = top + panels.length * (panelH + gap);
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart-svg' });
  const now = samples.length ? samples[samples.length - 1].t : Date.now();
  const t0 = now - windowSecs * 1000;
  const shown = samples.filter((s) => s.t >= t0);
  const x = (t) => left + ((t - t0) / (windowSecs * 1000)) * (W - left - right);
  panels.forEach((p, i) => {
    const y0 = top + i * (panelH + gap);
    const scale = p.scale || 1;
    let max = p.minMax;
    for (const s of shown) for (const [key] of p.lines) if (s[key] != null) max = Math.max(max, s[key] * scale);
    max = niceMax(max);
    const y = (v) => y0 + panelH - (v * scale / max) * panelH;
    const g = svg('g');
    const title = svg('text', { x: left, y: y0 - 4, class: 'c-title' });
    title.textContent = p.title;
    g.append(title);
    // Current values in the legend.
    let lx = left + 110;
    for (const [key, label, dashed] of p.lines) {
      // The newest known value (latency is null in seconds without calls).
      let lastV = null;
      for (let j = shown.length - 1; j >= 0 && lastV == null; j--) lastV = shown[j][key];
      const v = lastV != null ? p.fmt(lastV * scale) : '–';
      const t = svg('text', { x: lx, y: y0 - 4, class: `c-legend c-${key}` });
      t.textContent = `${dashed ? '┄' : '—'} ${label} ${v}`;
      g.append(t);
      lx += 110;
    }
    g.append(svg('rect', { x: left, y: y0, width: W - left - right, height: panelH, class: 'c-frame' }));
    for (const f of [0, 0.5, 1]) {
      const yy = y0 + panelH - f * panelH;
      g.append(svg('line', { x1: left, x2: W - right, y1: yy, y2: yy, class: 'c-grid' }));
      const lbl = svg('text', { x: left - 6, y: yy + 4, class: 'c-axis', 'text-anchor': 'end' });
      lbl.textContent = p.fmt(max * f);
      g.append(lbl);
    }
    for (const [key, , dashed] of p.lines) {
      let d = '';
      let pen = false;
      for (const s of shown) {
        const v = s[key];
        if (v == null) { pen = false; continue; }
        d += `${pen ? 'L' : 'M'}${x(s.t).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      }
      if (d) g.append(svg('path', { d, class: `c-line c-${key}${dashed ? ' c-dashed' : ''}` }));
      // Lone points (a single second with calls) would be invisible as a path: mark them.
      if (key === 'p50' || key === 'p99') {
        shown.forEach((s, j) => {
          const prev = shown[j - 1];
          const next = shown[j + 1];
          if (s[key] != null && (!prev || prev[key] == null) && (!next || next[key] == null)) {
            g.append(svg('circle', { cx: x(s.t).toFixed(1), cy: y(s[key]).toFixed(1), r: 2.5, class: `c-dot c-${key}` }));
          }
        });
      }
    }
    root.append(g);
  });
  // Time axis under the last panel.
  const yAxis = top + panels.length * (panelH + gap) - gap + 14;
  for (const f of [0, 0.5, 1]) {
    const t = svg('text', { x: left + f * (W - left - right), y: yAxis, class: 'c-axis', 'text-anchor': f === 0 ? 'start' : f === 1 ? 'end' : 'middle' });
    const ago = Math.round((1 - f) * windowSecs);
    t.textContent = ago === 0 ? 'now' : ago >= 60 ? `-${ago / 60} min` : `-${ago} s`;
    root.append(t);
  }
  if (!shown.length) {
    const t = svg('text', { x: W / 2, y: H / 2, class: 'c-axis', 'text-anchor': 'middle' });
    t.textContent = 'No samples yet: the gateway samples every second.';
    root.append(t);
  }
  box.textContent = '';
  box.append(root);
  const last = shown[shown.length - 1];
  box.setAttribute('aria-label', last
    ? `Now: ${last.ready} of ${last.desired} replicas ready, ${fmtRate(last.rate)}, p50 ${fmtSecs(last.p50)}, p99 ${fmtSecs(last.p99)}`
    : 'No samples yet');
}

// ---------------------------------------------------------------------------------------
// Deploy form

function parsePairs(text, what) {
  const out = {};
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`line ${i + 1}: expected ${what}=value, got "${line}"`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return out;
}

function deployView() {
  mount('tpl-deploy');
  document.title = 'Deploy · faasgate';
  $('dep-namespace').value = state.namespace;
  const dl = $('dep-namespaces');
  for (const n of state.namespaces) dl.append(el('option', { value: n }));
  const form = $('deploy-form');
  const fields = {
    name: $('dep-name'), namespace: $('dep-namespace'), image: $('dep-image'),
    fprocess: $('dep-fprocess'), mode: $('dep-mode'), env: $('dep-env'),
    labels: $('dep-labels'), annotations: $('dep-annotations'),
  };
  const scaleFields = [...form.querySelectorAll('[data-label]')];
  const allFields = [...Object.values(fields), ...scaleFields];
  const clear = () => {
    for (const f of allFields) {
      f.removeAttribute('aria-invalid');
      const e = $(f.id + '-err');
      if (e) e.textContent = '';
    }
    showError($('dep-error'), '');
  };
  const fieldError = (field, msg) => {
    field.setAttribute('aria-invalid', 'true');
    $(field.id + '-err').textContent = msg;
  };
  // Which field an API message is about.
  const fieldFor = (msg) => {
    for (const f of scaleFields) if (msg.includes(f.dataset.label)) return f;
    if (/envProcess|fprocess/.test(msg)) return fields.fprocess;
    if (/\bimage\b/.test(msg)) return fields.image;
    if (/\bnamespace\b/.test(msg)) return fields.namespace;
    if (/function name|\bservice\b|\bname\b/.test(msg)) return fields.name;
    if (/envVars|environment/.test(msg)) return fields.env;
    if (/\bmode\b/.test(msg)) return fields.mode;
    if (/annotation/.test(msg)) return fields.annotations;
    if (/label/.test(msg)) return fields.labels;
    return null;
  };
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear();
    let envVars;
    let labels;
    let annotations;
    const bad = [];
    try { envVars = parsePairs(fields.env.value, 'NAME'); } catch (e) { bad.push([fields.env, e.message]); }
    try { labels = parsePairs(fields.labels.value, 'key'); } catch (e) { bad.push([fields.labels, e.message]); }
    try { annotations = parsePairs(fields.annotations.value, 'key'); } catch (e) { bad.push([fields.annotations, e.message]); }
    if (!fields.name.value.trim()) bad.push([fields.name, 'A name is required.']);
    if (bad.length) {
      for (const [f, m] of bad) fieldError(f, m);
      bad[0][0].focus();
      return;
    }
    for (const f of scaleFields) if (f.value.trim()) labels[f.dataset.label] = f.value.trim();
    if (fields.mode.value) envVars.mode = fields.mode.value;
    const ns = fields.namespace.value.trim();
    const spec = {
      service: fields.name.value.trim(),
      image: fields.image.value.trim(),
      envProcess: fields.fprocess.value,
      labels,
      annotations,
    };
    if (ns) spec.namespace = ns;
    if (Object.keys(envVars).length) spec.envVars = envVars;
    $('dep-submit').disabled = true;
    try {
      const r = await api('/system/functions', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(spec),
      });
      if (r.ok) {
        const target = ns || DEFAULT_NS;
        flash(`Deployed ${spec.service}.`);
        if (!state.namespaces.includes(target)) loadNamespaces();
        location.hash = `#/function/${encodeURIComponent(target)}/${encodeURIComponent(spec.service)}`;
        return;
      }
      const msg = (await r.text()).trim() || `${r.status} ${r.statusText}`;
      const f = r.status === 400 ? fieldFor(msg) : null;
      if (f) { fieldError(f, msg); f.focus(); } else {
        showError($('dep-error'), `Deploy failed (${r.status}): ${msg}`);
        $('dep-error').scrollIntoView({ block: 'nearest' });
      }
    } catch (e) {
      if (!(e instanceof AuthError)) showError($('dep-error'), 'Deploy failed: ' + e.message);
    } finally {
      const b = $('dep-submit');
      if (b) b.disabled = false;
    }
  });
  fields.name.focus();
  state.view = { name: 'deploy' };
}

// ---------------------------------------------------------------------------------------
// Secrets: names only; a value goes out once (create or update) and is never read back.

function secretsView() {
  const ns = state.namespace;
  mount('tpl-secrets');
  document.title = `Secrets · ${ns} · faasgate`;
  $('sec-ns').textContent = ns;
  const qs = q({ namespace: ns });

  const load = async () => {
    const list = await apiJSON(`/system/secrets?${qs}`);
    const body = $('secs-body');
    body.textContent = '';
    for (const s of list) {
      const update = el('button', { type: 'button', class: 'link', 'data-secret': s.name, text: 'Update…' });
      update.addEventListener('click', () => {
        $('sec-name').value = s.name;
        $('sec-value').value = '';
        $('sec-value').focus();
      });
      const del = el('button', { type: 'button', class: 'danger', 'data-secret': s.name, text: 'Delete…' });
      del.addEventListener('click', () => removeSecret(s.name, del));
      body.append(el('tr', { 'data-secret': s.name },
        el('td', {}, el('code', { text: s.name })), el('td', { class: 'num' }, update, ' ', del)));
    }
    $('secs-empty').hidden = list.length > 0;
  };

  const send = async (method) => {
    showError($('sec-error'), '');
    const name = $('sec-name').value.trim();
    const value = $('sec-value').value;
    try {
      const r = await api(`/system/secrets?${qs}`, {
        method, headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name, namespace: ns, value }),
      });
      if (r.status === 409) throw new Error(`${name} exists already: use Update to replace its value`);
      if (r.status === 404) throw new Error(`${name} does not exist: use Create`);
      if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
      $('sec-value').value = '';
      flash(method === 'POST' ? `Created ${name}.` : `Updated ${name}.`);
      await load();
    } catch (e) {
      if (!(e instanceof AuthError)) showError($('sec-error'), e.message);
    }
  };
  $('sec-form').addEventListener('submit', (ev) => { ev.preventDefault(); send('POST'); });
  $('sec-update').addEventListener('click', () => send('PUT'));

  const removeSecret = (name, button) => {
    const dlg = $('confirm');
    $('confirm-title').textContent = 'Delete secret?';
    $('confirm-text').textContent =
      `Delete the secret ${name} from namespace ${ns}? Functions that use it keep their copy until they restart; new deploys naming it fail.`;
    dlg.returnValue = '';
    dlg.onclose = async () => {
      $('confirm-title').textContent = 'Delete function?';
      if (dlg.returnValue !== 'ok') { button.focus(); return; }
      try {
        const r = await api(`/system/secrets?${qs}`, {
          method: 'DELETE', headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ name, namespace: ns }),
        });
        if (!r.ok) throw new Error(`${r.status} ${(await r.text()).trim()}`);
        flash(`Deleted ${name}.`);
        await load();
      } catch (e) {
        if (!(e instanceof AuthError)) showError($('sec-error'), 'Delete failed: ' + e.message);
      }
    };
    dlg.showModal();
  };

  load().catch((e) => { if (!(e instanceof AuthError)) showError($('sec-error'), e.message); });
  state.view = { name: 'secrets', stop() {} };
}

// Namespaces

function fmtPairs(m) {
  return Object.entries(m || {}).map(([k, v]) => `${k}=${v}`).join(', ') || '–';
}

function namespacesView() {
  mount('tpl-namespaces');
  document.title = 'Namespaces · faasgate';
  const body = $('nss-body');
  let stopped = false;
  const render = async () => {
    await loadNamespaces();
    const records = await Promise.all(state.namespaces.map((n) =>
      apiJSON(`/system/namespace/${encodeURIComponent(n)}`).catch((e) => {
        if (e instanceof AuthError) throw e;
        return { name: n };
      })));
    if (stopped) return;
    body.textContent = '';
    for (const r of records) {
      const use = el('a', { href: '#/', text: r.name, 'data-use': r.name });
      use.addEventListener('click', () => setNamespace(r.name));
      const actions = el('td');
      if (r.name !== DEFAULT_NS) {
        const del = el('button', { type: 'button', class: 'danger', 'data-delete': r.name, text: 'Delete…' });
        del.addEventListener('click', () => confirmDialog('Delete namespace?',
          `Delete namespace ${r.name}? It must hold no functions.`, 'Delete', async () => {
            showError($('nss-error'), '');
            try {
              const resp = await api(`/system/namespace/${encodeURIComponent(r.name)}`, {
                method: 'DELETE', headers: { 'Content-Type': 'application/json' },
                body: JSON.stringify({ name: r.name, labels: { openfaas: '1' } }),
              });
              if (!resp.ok) throw new Error(`${resp.status} ${(await resp.text()).trim()}`);
              flash(`Deleted namespace ${r.name}.`);
              if (state.namespace === r.name) setNamespace(DEFAULT_NS);
              await render();
            } catch (e) {
              if (!(e instanceof AuthError)) showError($('nss-error'), 'Delete failed: ' + e.message);
            }
          }, del));
        actions.append(del);
      }
      body.append(el('tr', { 'data-ns': r.name },
        el('th', { scope: 'row' }, use),
        el('td', { text: fmtPairs(r.labels) }),
        el('td', { text: fmtPairs(r.annotations) }),
        actions));
    }
  };
  render().catch((e) => { if (!(e instanceof AuthError)) showError($('nss-error'), e.message); });

  const fields = { name: $('ns-name'), labels: $('ns-labels'), annotations: $('ns-annotations') };
  const clear = () => {
    for (const f of Object.values(fields)) {
      f.removeAttribute('aria-invalid');
      $(f.id + '-err').textContent = '';
    }
    showError($('nss-error'), '');
  };
  const fieldError = (f, msg) => {
    f.setAttribute('aria-invalid', 'true');
    $(f.id + '-err').textContent = msg;
    f.focus();
  };
  $('ns-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear();
    let labels;
    let annotations;
    try { labels = parsePairs(fields.labels.value, 'key'); } catch (e) { fieldError(fields.labels, e.message); return; }
    try { annotations = parsePairs(fields.annotations.value, 'key'); } catch (e) { fieldError(fields.annotations, e.message); return; }
    const name = fields.name.value.trim();
    if (!name) { fieldError(fields.name, 'A name is required.'); return; }
    labels.openfaas = '1';
    $('ns-submit').disabled = true;
    try {
      const r = await api('/system/namespace/', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ name, labels, annotations }),
      });
      if (!r.ok) {
        const msg = (await r.text()).trim() || `${r.status} ${r.statusText}`;
        fieldError(fields.name, msg);
        return;
      }
      flash(`Created namespace ${name}.`);
      fields.name.value = '';
      fields.labels.value = '';
      fields.annotations.value = '';
      await render();
    } catch (e) {
      if (!(e instanceof AuthError)) showError($('nss-error'), 'Create failed: ' + e.message);
    } finally {
      const b = $('ns-submit');
      if (b) b.disabled = false;
    }
  });
  fields.name.focus();
  state.view = { name: 'namespaces', stop() { stopped = true; } };
}

// ---------------------------------------------------------------------------------------
// Start

async function start() {
  $('ns').addEventListener('change', (ev) => {
    setNamespace(ev.target.value);
    if (location.hash.startsWith('#/secrets')) {
      route();
    } else if (!location.hash.startsWith('#/deploy') && !location.hash.startsWith('#/namespaces')) {
      if (location.hash === '#/' || location.hash === '') route(); else location.hash = '#/';
    }
  });
  $('logout').addEventListener('click', () => {
    state.afterLogin = '#/';
    showLogin('Logged out.');
  });
  window.addEventListener('hashchange', () => {
    if (state.view && state.view.name === 'login') return;
    route();
  });
  // Is auth on at all? A gateway started with --no-auth answers without credentials.
  try {
    const r = await fetch('/ui/api/summary', {
      headers: state.auth ? { Authorization: 'Basic ' + state.auth } : {}, cache: 'no-store', credentials: 'omit',
    });
    if (r.ok && !state.auth) state.authNeeded = false;
    if (r.status === 401) { showLogin(state.auth ? 'Your credentials were not accepted. Please log in again.' : ''); return; }
  } catch (e) {
    $('main').textContent = 'Cannot reach the gateway: ' + e.message;
    return;
  }
  enterApp();
  route();
}

start();
