// pitstop console: a client of the server's JSON APIs (docs/console.md). No dependencies.
// Views: #/ (every model) and #/models/NAME (one model). Numbers refresh by polling; a
// failed poll keeps the last figures on screen under a banner and retries.
"use strict";
(() => {
  const POLL_MS = 2000;
  const HISTORY_MS = 5000;
  const TOKEN_KEY = "pitstop.token";
  const COLORS = ["#1a73e8", "#e8710a", "#188038", "#a142f4", "#d93025", "#12b5cb",
    "#f9ab00", "#9334e6", "#e52592", "#5f6368"];
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let who = null;
  let view = null; // the current view's state; a poll for an older view stops itself
  let failingSince = null;
  let lastGood = null;
  let firstRender = true;

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, options = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method: options.method || "GET", headers, cache: "no-store" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_e) {
      throw new ApiError(0, "the server does not answer");
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_e) { data = null; }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.error) || response.statusText);
    }
    return data;
  }

  // -- formatting -------------------------------------------------------------------------
  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => (
    { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const pad = (n) => String(n).padStart(2, "0");
  function when(iso) {
    if (!iso) return "";
    const d = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function ago(iso) {
    if (!iso) return "";
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }
  const num = (x, digits = 1) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const pct = (x, digits = 1) => (x === null || x === undefined ? "–" : (100 * x).toFixed(digits) + "%");
  const vlabel = (n) => (n === null || n === undefined ? "–" : "v" + n);
  const colorOf = (version) => COLORS[(Number(version) - 1 + COLORS.length) % COLORS.length];
  const state = (s) => `<span class="state ${esc(String(s).replace(/ /g, "_"))}">${esc(s)}</span>`;
  const shareText = (shares) => Object.entries(shares || {})
    .sort((a, b) => b[1] - a[1]).map(([v, s]) => `v${v} ${+s.toFixed(2)}%`).join(", ") || "nothing";

  // Colours go in SVG attributes: the Content Security Policy allows no inline styles.
  const swatch = (color) => `<svg class="swatch" viewBox="0 0 10 10" aria-hidden="true"><rect width="10" height="10" fill="${color}"></rect></svg>`;

  function splitBar(shares) {
    const entries = Object.entries(shares).filter(([, s]) => s > 0).sort((a, b) => a[0] - b[0]);
    let x = 0;
    const bar = entries.map(([v, s]) => {
      const rect = `<rect x="${x}" width="${s}" height="10" fill="${colorOf(v)}"><title>v${esc(v)} ${+s.toFixed(2)}%</title></rect>`;
      x += s;
      return rect;
    }).join("");
    const legend = entries.map(([v, s]) => `<span>${swatch(colorOf(v))}v${esc(v)} ${+s.toFixed(2)}%</span>`).join("");
    return `<svg class="split" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="${esc(shareText(Object.fromEntries(entries)))}">${bar}</svg>` +
      `<div class="legend">${legend}</div>`;
  }

  function sharesOf(policy, aliases) {
    const arms = policy ? policy.arms : [{ target: "production", weight: 100 }];
    const total = arms.reduce((t, a) => t + a.weight, 0) || 1;
    const shares = {};
    for (const arm of arms) {
      const version = /^\d+$/.test(arm.target) ? Number(arm.target) : aliases[arm.target];
      if (version !== undefined && arm.weight > 0) {
        shares[version] = (shares[version] || 0) + (100 * arm.weight) / total;
      }
    }
    return shares;
  }

  // -- connection state --------------------------------------------------------------------
  function good() {
    lastGood = new Date();
    if (failingSince !== null) {
      failingSince = null;
      $("banner").hidden = true;
    }
    $("live").textContent = "updated " + when(lastGood.toISOString()).slice(11);
  }
  function trouble(error) {
    if (error.status === 401) { signOut("Your token was refused: " + error.message); return; }
    if (failingSince === null) failingSince = new Date();
    const banner = $("banner");
    banner.hidden = false;
    banner.textContent = `The server does not answer (${error.message}) since ` +
      `${when(failingSince.toISOString()).slice(11)}; retrying. Figures shown are from ` +
      `${lastGood ? when(lastGood.toISOString()).slice(11) : "before"}.`;
  }

  function poll(owner, every, fn) {
    const run = async () => {
      if (view !== owner) return;
      try { await fn(); good(); } catch (e) {
        if (!(e instanceof ApiError)) throw e;
        trouble(e);
      }
      if (view === owner) owner.timers.push(setTimeout(run, every));
    };
    return run();
  }

  // -- sign in -----------------------------------------------------------------------------
  function signOut(message) {
    token = "";
    who = null;
    sessionStorage.removeItem(TOKEN_KEY);
    stopView();
    showLogin(message);
  }

  function showLogin(message) {
    $("signout").hidden = true;
    $("who").textContent = "";
    $("crumbs").textContent = "";
    $("main").innerHTML = `
      <section class="panel login">
        <h1>Sign in</h1>
        <p>The console shows what the server's JSON APIs show to your token: a <code>read</code>
        token can look, an <code>admin</code> token can also act. Create one with
        <code>pitstop token create NAME --scope read</code>.</p>
        <form id="login">
          <label for="token">Bearer token</label>
          <input id="token" name="token" type="password" autocomplete="off" required>
          <p id="login-error" class="error" role="alert">${esc(message || "")}</p>
          <button type="submit">Sign in</button>
        </form>
      </section>`;
    $("login").addEventListener("submit", async (event) => {
      event.preventDefault();
      token = $("token").value.trim();
      try {
        await signIn();
        route();
      } catch (e) {
        token = "";
        $("login-error").textContent = e.status === 401 || e.status === 403
          ? "That token is not accepted for reading: " + e.message : e.message;
      }
    });
    $("token").focus();
  }

  async function signIn() {
    who = await api("/v2/pitstop/whoami");
    sessionStorage.setItem(TOKEN_KEY, token);
    $("who").textContent = `${who.principal} (${who.scopes.join(", ")})`;
    $("signout").hidden = false;
  }

  // -- views -------------------------------------------------------------------------------
  function stopView() {
    if (view) view.timers.forEach(clearTimeout);
    view = null;
  }

  function route() {
    stopView();
    if (!who) { showLogin(); return; }
    const match = location.hash.match(/^#\/models\/([^/?]+)/);
    view = { timers: [] };
    if (match) modelPage(view, decodeURIComponent(match[1]));
    else overview(view);
  }

  function rendered(name) {
    if (!firstRender) return;
    firstRender = false;
    performance.mark("pitstop:rendered");
    document.body.dataset.rendered = name;
  }

  // -- overview ----------------------------------------------------------------------------
  function overview(me) {
    $("crumbs").innerHTML = "";
    document.title = "pitstop console";
    $("main").innerHTML = `
      <h1>Models <span id="count" class="muted"></span></h1>
      <section class="panel"><div class="scroll"><table id="models">
        <thead><tr><th>Model</th><th>Serving now</th><th>Traffic</th><th>Rollout</th>
        <th>Health</th><th class="num">req/s</th><th class="num">errors</th>
        <th class="num hide-narrow">p50 / p95 / p99 ms</th>
        <th class="num hide-narrow">cost / 1k</th><th class="hide-narrow">drift</th></tr></thead>
        <tbody></tbody></table></div></section>
      <section class="panel"><h2>Replicas</h2><div class="scroll"><table id="replicas">
        <thead><tr><th>Replica</th><th>Host</th><th>Up since</th><th>Heartbeat</th>
        <th>Generation applied</th></tr></thead><tbody></tbody></table></div>
        <p id="generation" class="muted"></p></section>`;
    poll(me, POLL_MS, async () => {
      const data = await api("/v2/pitstop/overview");
      if (view !== me) return;
      $("count").textContent = `(${data.models.length})`;
      $("models").tBodies[0].innerHTML = data.models.map(modelRow).join("") ||
        `<tr><td colspan="10" class="muted">No models yet: <code>pitstop push</code> one.</td></tr>`;
      $("replicas").tBodies[0].innerHTML = data.replicas.map((r) => `<tr>
        <td>${esc(r.name)}${r.name === data.server.replica ? " <span class=muted>(this one)</span>" : ""}</td>
        <td>${esc(r.host)}</td><td>${esc(when(r.started_at))}</td><td>${esc(ago(r.heartbeat_at))}</td>
        <td class="num">${r.applied_generation >= data.generation ? r.applied_generation
          : `<span class="fail">${r.applied_generation} (behind)</span>`}</td></tr>`).join("");
      $("generation").textContent = `Registry generation ${data.generation}; served by ` +
        `${data.server.replica}, pitstop ${data.server.version}.`;
      rendered("overview");
    });
  }

  function servingCell(model) {
    const byAlias = {};
    for (const row of model.aliases) (byAlias[row.alias] ||= []).push(row);
    return Object.entries(byAlias).map(([alias, rows]) => {
      const first = rows[0];
      const replicas = rows.map((r) => r.replica).filter(Boolean);
      const servingOther = first.serving !== null && first.serving !== first.target;
      return `<div data-alias="${esc(alias)}"><b>${esc(alias)}</b> → ` +
        `<span data-field="serving" title="${esc(first.digest || "")}">${vlabel(first.serving ?? first.target)}</span>` +
        (servingOther ? ` <span class="muted">(moving to ${vlabel(first.target)})</span>` : "") +
        (first.serving === null && first.replica ? ` <span class="fail">nothing serves it</span>` : "") +
        ` ${state(first.state)}` +
        (first.since ? ` <span class="muted">since ${esc(ago(first.since))}</span>` : "") +
        (replicas.length ? ` <span class="muted hide-narrow">on ${esc(replicas.join(", "))}</span>` : "") +
        `<div class="muted mono hide-narrow">${esc((first.digest || "").slice(0, 19))}</div></div>`;
    }).join("") || `<span class="muted">no alias</span>`;
  }

  function modelRow(model) {
    const aliases = Object.fromEntries(model.aliases.map((r) => [r.alias, r.target]));
    const rollout = model.rollout;
    const failures = model.failures.map((f) =>
      `<div class="error">FAILED ${vlabel(f.version)} on ${esc(f.replica)}: ${esc(f.error || "")}</div>`).join("");
    const ready = model.loaded.filter((v) => v.state === "READY").length;
    const restarts = model.loaded.filter((v) => v.worker_restarts).map((v) =>
      `<div class="fail">${vlabel(v.version)} worker restarted ${v.worker_restarts}×: ${esc(v.worker_failure || "")}</div>`).join("");
    const memory = model.loaded.reduce((t, v) => t + (v.memory_bytes || 0), 0);
    const live = model.live;
    const drift = model.drift;
    return `<tr data-model="${esc(model.name)}">
      <td><a href="#/models/${encodeURIComponent(model.name)}">${esc(model.name)}</a>
        <div class="muted">${model.version_count} versions</div></td>
      <td>${servingCell(model)}</td>
      <td>${splitBar(sharesOf(model.policy, aliases))}</td>
      <td>${rollout ? `${state(rollout.state)} ${vlabel(rollout.version)} at ${+rollout.weight}%
        <div class="muted">step ${rollout.step + 1} of ${rollout.steps.length}</div>` : `<span class="muted">–</span>`}</td>
      <td>${failures || (ready ? `<span class="state ok">${ready} ready</span>` : `<span class="muted">none loaded here</span>`)}${restarts}${memory ? `<div class="muted">${(memory / 1048576).toFixed(0)} MiB</div>` : ""}</td>
      <td class="num">${live ? num(live.rate, 2) : "–"}</td>
      <td class="num">${live ? pct(live.error_rate, 2) : "–"}</td>
      <td class="num hide-narrow">${live && live.requests ? `${num(live.p50_ms)} / ${num(live.p95_ms)} / ${num(live.p99_ms)}` : "–"}</td>
      <td class="num hide-narrow">${model.cost_per_1k === null || model.cost_per_1k === undefined ? "–" : "$" + num(model.cost_per_1k, 4)}</td>
      <td class="hide-narrow">${drift ? `<span class="state ${drift.drifted ? "bad" : "ok"}">${drift.drifted ? "drifted" : "ok"}</span> <span class="muted">psi ${num(drift.max_psi, 3)}</span>` : `<span class="muted">–</span>`}</td>
    </tr>`;
  }

  // -- model page --------------------------------------------------------------------------
  function modelPage(me, name) {
    const base = `/v2/pitstop/models/${encodeURIComponent(name)}`;
    document.title = `${name} · pitstop console`;
    $("crumbs").innerHTML = `<a href="#/">Models</a> / <span>${esc(name)}</span>`;
    $("main").innerHTML = `
      <h1>${esc(name)} <span id="aliases" class="muted"></span></h1>
      <div id="actions" class="actions"></div>
      <div class="grid">
        <section class="panel"><h2>Traffic now</h2><div id="traffic"></div></section>
        <section class="panel"><h2>Rollout</h2><div id="rollout"></div></section>
      </div>
      <section class="panel"><h2>Timeline: what served which share of traffic</h2>
        <div class="actions" id="ranges" role="group" aria-label="Time range"></div>
        <div id="timeline"></div></section>
      <section class="panel"><h2>Last hour</h2><div class="grid" id="charts"></div></section>
      <div class="grid">
        <section class="panel"><h2>Shadows</h2><div id="shadows"></div></section>
        <section class="panel"><h2>Outcomes</h2><div id="outcomes"></div></section>
      </div>
      <section class="panel"><h2>Drift per input</h2><div id="drift"></div></section>
      <section class="panel"><h2>Versions</h2><div class="scroll" id="versions"></div></section>
      <section class="panel"><h2>History</h2><div class="scroll" id="history"></div></section>`;
    me.range = 48 * 3600;
    me.model = name;
    const ranges = [["1 h", 3600], ["24 h", 86400], ["48 h", 172800], ["7 d", 604800], ["all", 0]];
    $("ranges").innerHTML = ranges.map(([label, s]) =>
      `<button type="button" class="quiet" data-range="${s}" aria-pressed="${s === me.range}">${label}</button>`).join("");
    $("ranges").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-range]");
      if (!button) return;
      me.range = Number(button.dataset.range);
      $("ranges").querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", b === button));
      drawTimeline(me);
    });
    me.refresh = () => Promise.all([loadCatalog(me, base), loadTraffic(me, base)]);
    poll(me, HISTORY_MS, () => loadCatalog(me, base));
    poll(me, POLL_MS, async () => {
      await loadTraffic(me, base);
      await loadLive(me, name);
      rendered("model");
    });
    poll(me, HISTORY_MS * 2, () => loadSlow(me, base));
  }

  async function loadCatalog(me, base) {
    const [versions, history] = await Promise.all([
      api(base + "/versions"), api(base + "/history?limit=200"),
    ]);
    if (view !== me) return;
    // Redraw only what changed: a redraw would take the focus and the tooltip from the user.
    const key = JSON.stringify([versions.aliases, versions.versions.length,
      history.events.length ? history.events[0].id : 0, Math.floor(Date.now() / 60000)]);
    if (me.catalogKey === key) return;
    me.catalogKey = key;
    me.versions = versions;
    me.history = history;
    $("aliases").textContent = Object.entries(versions.aliases)
      .map(([a, v]) => `${a} → v${v}`).join(" · ");
    renderVersions(versions);
    renderHistory(history);
    drawTimeline(me);
    renderActions(me);
  }

  async function loadTraffic(me, base) {
    const traffic = await api(base + "/traffic");
    if (view !== me) return;
    me.traffic = traffic;
    const aliases = me.versions ? me.versions.aliases : {};
    const arms = traffic.policy.arms.map((a) => `${esc(a.target)} ${+a.weight}`).join(" · ");
    $("traffic").innerHTML = splitBar(sharesOf(traffic.policy, aliases)) +
      `<dl class="kv"><dt>Arms</dt><dd>${arms}</dd>` +
      `<dt>Sticky header</dt><dd>${esc(traffic.policy.sticky_header || "none")}</dd>` +
      `<dt>Fallback</dt><dd>${esc(traffic.policy.fallback || "none")}</dd>` +
      (traffic.policy.bandit ? `<dt>Bandit</dt><dd>${esc(traffic.policy.bandit.metric)}, min share ${traffic.policy.bandit.min_share}%</dd>` : "") +
      `</dl>`;
    renderRollout(traffic);
    renderShadows(me, traffic);
    renderActions(me);
  }

  async function loadSlow(me, base) {
    const jobs = [api(`/v2/models/${encodeURIComponent(me.model)}/outcomes`)];
    if (who.features.drift) jobs.push(api(base + "/drift"));
    const [outcomes, drift] = await Promise.all(jobs);
    if (view !== me) return;
    renderOutcomes(outcomes);
    $("drift").innerHTML = drift ? driftHtml(drift) : `<p class="muted">Drift monitoring is off on this server.</p>`;
  }

  async function loadLive(me, name) {
    if (!who.features.metrics) {
      $("charts").innerHTML = `<p class="muted">Metrics are off on this server.</p>`;
      return;
    }
    const live = await api(`/v2/pitstop/live?model=${encodeURIComponent(name)}`);
    if (view !== me) return;
    const points = live.models[name] || [];
    $("charts").innerHTML = [
      lineChart("Throughput (req/s)", points, [["rate", "req/s", 1]]),
      lineChart("Error rate (%)", points, [["error_rate", "errors %", 100]]),
      lineChart("Latency (ms)", points, [["p50_ms", "p50", 1], ["p95_ms", "p95", 1], ["p99_ms", "p99", 1]]),
    ].join("");
  }

  function renderRollout(traffic) {
    const r = traffic.rollout;
    if (!r) { $("rollout").innerHTML = `<p class="muted">No rollout yet.</p>`; return; }
    const steps = r.steps.map((s, i) => `<span class="${i < r.step ? "done" : i === r.step ? "now" : ""}">${+s}%</span>`).join("");
    const a = traffic.assessment;
    const g = r.guard;
    let checks = "";
    if (a && a.canary) {
      const c = a.canary, b = a.baseline;
      const ratio = b && b.p99_ms > 0 ? c.p99_ms / b.p99_ms : null;
      const row = (label, value, limit, ok) => `<tr><td>${label}</td><td class="num">${value}</td><td class="num">${limit}</td><td class="${ok ? "pass" : "fail"}">${ok ? "within" : "over"}</td></tr>`;
      checks = `<table><thead><tr><th>Guard</th><th class="num">canary</th><th class="num">threshold</th><th></th></tr></thead><tbody>
        ${row("requests", c.requests, "≥ " + g.min_requests, c.requests >= g.min_requests)}
        ${row("error rate", pct(c.error_rate, 2), "≤ " + pct(g.max_error_rate, 2), c.error_rate <= g.max_error_rate)}
        ${row("p99 vs baseline", ratio === null ? "–" : num(ratio, 2) + "×", "≤ " + g.max_p99_ratio + "×", ratio === null || ratio <= g.max_p99_ratio)}
        ${row("prediction divergence (PSI)", a.divergence === null ? "not enough yet" : num(a.divergence, 3), "≤ " + g.max_divergence, a.divergence === null || a.divergence <= g.max_divergence)}
        </tbody></table>
        <p class="muted">Baseline: ${b.requests} requests, ${pct(b.error_rate, 2)} errors, p99 ${num(b.p99_ms)} ms.</p>`;
    }
    $("rollout").innerHTML = `
      <p>${state(r.state)} ${vlabel(r.version)} against ${vlabel(r.baseline)}, at <b>${+r.weight}%</b>
      since ${esc(when(r.step_started_at))}; every ${+r.interval_s} s.</p>
      <div class="steps" aria-label="Steps">${steps}</div>
      ${a ? `<p>Verdict now: <b data-field="verdict">${esc(a.verdict)}</b> — ${esc(a.reason)}</p>` : ""}
      ${checks}
      ${r.reason ? `<p class="muted">Last change: ${esc(r.reason)}</p>` : ""}`;
  }

  function renderShadows(me, traffic) {
    const admin = who.admin;
    const rows = traffic.policy.shadows.map((s, i) => {
      const seen = traffic.shadows[s.target];
      const outputs = seen ? Object.entries(seen.outputs).map(([o, kinds]) =>
        Object.entries(kinds).map(([k, v]) => `${esc(o)} ${esc(k)} ${num(v, 4)}`).join(", ")).join("; ") : "";
      return `<tr><td>${esc(s.target)}</td><td class="num">${pct(s.rate, 0)}</td>
        <td class="num">${seen ? seen.requests : 0}</td><td class="num">${seen ? seen.failures : 0}</td>
        <td>${outputs || "–"}</td>
        <td>${admin ? `<button type="button" class="quiet" data-stop-shadow="${i}">Stop</button>` : ""}</td></tr>`;
    }).join("");
    $("shadows").innerHTML = rows ? `<table><thead><tr><th>Target</th><th class="num">copied</th>
      <th class="num">requests</th><th class="num">failed</th><th>compared with production</th><th></th></tr></thead>
      <tbody>${rows}</tbody></table>` : `<p class="muted">No shadow traffic.</p>`;
    $("shadows").querySelectorAll("button[data-stop-shadow]").forEach((button) => {
      button.addEventListener("click", () => {
        const index = Number(button.dataset.stopShadow);
        const shadow = traffic.policy.shadows[index];
        const policy = { ...traffic.policy, shadows: traffic.policy.shadows.filter((_, i) => i !== index) };
        confirmAction(me, {
          title: `Stop the shadow to ${shadow.target}`,
          effect: `Requests to ${me.model} stop being copied to ${shadow.target}; what clients get does not change.`,
          run: (reason) => api(`/v2/pitstop/models/${encodeURIComponent(me.model)}/traffic`,
            { method: "PUT", body: { ...policy, reason } }),
        });
      });
    });
  }

  function renderOutcomes(outcomes) {
    const rows = outcomes ? outcomes.versions.flatMap((v) => Object.values(v.metrics).map((m) =>
      `<tr><td>${vlabel(v.version)}</td><td>${esc(v.arm)}</td><td>${esc(m.metric)}</td>
      <td class="num">${num(m.value, 4)}</td><td class="num">${num(m.low, 4)} – ${num(m.high, 4)}</td>
      <td class="num">${m.n}</td></tr>`)) : [];
    $("outcomes").innerHTML = rows.length ? `<table><thead><tr><th>Version</th><th>Arm</th><th>Metric</th>
      <th class="num">value</th><th class="num">95% interval</th><th class="num">n</th></tr></thead>
      <tbody>${rows.join("")}</tbody></table>` : `<p class="muted">No feedback joined yet.</p>`;
  }

  function driftHtml(drift) {
    if (!drift.versions.length) return `<p class="muted">No requests scored yet.</p>`;
    return drift.versions.map((v) => {
      const features = (v.features || []).map((f) => `<tr><td>${esc(f.name)}</td>
        <td class="num">${num(f.psi, 3)}</td><td class="num">${num(f.ks, 3)}</td>
        <td class="num">${num(f.reference_mean, 3)}</td><td class="num">${num(f.live_mean, 3)}</td>
        <td><span class="state ${f.drifted ? "bad" : "ok"}">${f.drifted ? "drifted" : "ok"}</span></td></tr>`).join("");
      return `<h3>${vlabel(v.version)} <span class="muted">${esc(v.status)}${v.window_rows ? `, ${v.window_rows} live rows vs ${v.reference_rows} reference (${esc(v.reference)})` : ""}</span></h3>` +
        (features ? `<div class="scroll"><table><thead><tr><th>Input</th><th class="num">PSI</th><th class="num">KS</th>
        <th class="num">reference mean</th><th class="num">live mean</th><th>PSI ≥ ${drift.psi_threshold}</th></tr></thead>
        <tbody>${features}</tbody></table></div>` : "");
    }).join("");
  }

  function renderVersions(data) {
    const rows = data.versions.map((v) => {
      const meta = Object.entries(v.meta).filter(([k]) => !["quantization", "cosine_mean", "cosine_min", "optimized_from"].includes(k))
        .map(([k, val]) => `${esc(k)}=${esc(val)}`).join("<br>");
      const quant = v.meta.quantization ? `${esc(v.meta.quantization)} from ${esc(v.meta.optimized_from || "?")}, cosine ${esc(v.meta.cosine_mean || "?")}` : "–";
      const sig = v.signatures.length ? v.signatures.map((s) => `${esc(s.key_id)} (${esc(s.algorithm)})`).join(", ") : `<span class="muted">unsigned</span>`;
      const io = (specs) => specs.map((s) => `${esc(s.name)} ${esc(s.datatype)}[${esc((s.shape || []).join(","))}]`).join(", ");
      return `<tr data-version="${v.number}"><td>${vlabel(v.number)}</td><td>${esc(v.aliases.join(", "))}</td>
        <td class="mono" title="${esc(v.digest)}">${esc(v.digest.slice(0, 19))}</td><td>${esc(v.runtime)}</td>
        <td>${esc(when(v.created_at))}<div class="muted">${esc(v.created_by)}</div></td>
        <td class="hide-narrow">${meta || "–"}</td>
        <td class="hide-narrow">${io(v.manifest.inputs) || "–"} → ${io(v.manifest.outputs) || "–"}</td>
        <td class="hide-narrow">${v.manifest.warmup.length ? v.manifest.warmup.length + " example(s)" : "none"}</td>
        <td class="hide-narrow">${quant}</td><td>${sig}</td></tr>`;
    }).join("");
    $("versions").innerHTML = `<table><thead><tr><th>Version</th><th>Aliases</th><th>Digest</th><th>Runtime</th>
      <th>Pushed</th><th class="hide-narrow">Lineage</th><th class="hide-narrow">Inputs → outputs</th>
      <th class="hide-narrow">Warm-up</th><th class="hide-narrow">Quantisation</th><th>Signed by</th></tr></thead><tbody>${rows}</tbody></table>`;
  }

  function what(event) {
    const brief = (x) => (x === null || x === undefined ? "∅" : x.version !== undefined ? "v" + x.version : JSON.stringify(x));
    const after = event.after || {};
    if (event.action === "version.create") return `v${after.number} (${after.runtime}, ${String(after.digest || "").slice(0, 19)})`;
    if (event.action === "model.create") return "";
    if (event.action === "version.sign") return `v${event.version} signed by ${after.key_id}`;
    if (event.action === "policy.set") return `${policyText(event.before)} → ${policyText(event.after)}`;
    if (event.action.startsWith("rollout.")) return `rollout ${after.rollout ?? ""} of v${event.version ?? "?"}` + (after.state ? ` ${after.state}` : "") + (after.weight !== undefined ? ` at ${after.weight}%` : "");
    if (event.action === "reference.set") return `reference from ${after.source ?? "?"} (${after.rows ?? "?"} rows)`;
    const parts = [];
    if (event.alias) parts.push(event.alias);
    if (event.before || event.after) parts.push(`${brief(event.before)} → ${brief(event.after)}`);
    else if (event.version !== null) parts.push("v" + event.version);
    return parts.join(" ");
  }

  function policyText(policy) {
    if (!policy || !policy.arms) return "default";
    const arms = policy.arms.map((a) => `${a.target} ${+a.weight}%`).join(" · ");
    const shadows = (policy.shadows || []).map((x) => `shadow ${x.target} ${+(100 * x.rate).toFixed(1)}%`);
    return [arms, ...shadows].join(" · ") + (policy.bandit ? " (bandit)" : "");
  }

  function renderHistory(history) {
    const rows = history.events.map((e) => `<tr data-event="${e.id}"><td>${esc(when(e.at))}</td>
      <td>${esc(e.actor)}</td><td>${esc(e.action)}</td><td class="mono">${esc(what(e)).slice(0, 200)}</td>
      <td>${e.shares ? esc(shareText(e.shares)) : ""}</td><td>${esc(e.reason || "")}</td></tr>`).join("");
    $("history").innerHTML = `<table><thead><tr><th>When</th><th>Who</th><th>Action</th><th>What</th>
      <th>Serving after</th><th>Reason</th></tr></thead><tbody>${rows}</tbody></table>`;
  }

  // -- charts ------------------------------------------------------------------------------
  const W = 720, H = 180, L = 44, R = 8, T = 8, B = 22;

  function drawTimeline(me) {
    if (!me.history) return;
    const now = Date.now() / 1000;
    const entries = me.history.timeline.map((e) => ({ ...e, t: new Date(e.at).getTime() / 1000 }));
    if (!entries.length) { $("timeline").innerHTML = `<p class="muted">Nothing served yet.</p>`; return; }
    const start = me.range ? Math.max(entries[0].t, now - me.range) : entries[0].t;
    const span = Math.max(now - start, 1);
    const x = (t) => L + ((Math.max(t, start) - start) / span) * (W - L - R);
    const y = (p) => T + (1 - p / 100) * (H - T - B);
    let rects = "";
    entries.forEach((e, i) => {
      const end = i + 1 < entries.length ? entries[i + 1].t : now;
      if (end < start) return;
      const x0 = x(e.t), x1 = Math.max(x(end), x0 + 1);
      let top = 100;
      const label = `${when(Math.max(e.t, start))} → ${shareText(e.shares)} (${e.action} by ${e.actor}${e.reason ? ": " + e.reason : ""})`;
      const parts = Object.entries(e.shares).sort((a, b) => a[0] - b[0]).map(([v, s]) => {
        const r = `<rect x="${x0.toFixed(1)}" y="${y(top).toFixed(1)}" width="${(x1 - x0).toFixed(1)}" height="${(y(top - s) - y(top)).toFixed(1)}" fill="${colorOf(v)}"></rect>`;
        top -= s;
        return r;
      }).join("");
      rects += `<g tabindex="0" role="img" data-at="${e.t}" aria-label="${esc(label)}" data-label="${esc(label)}">${parts}` +
        `<rect x="${x0.toFixed(1)}" y="${T}" width="${(x1 - x0).toFixed(1)}" height="${H - T - B}" fill="transparent"></rect></g>`;
    });
    const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
      const t = start + f * span;
      const d = new Date(t * 1000);
      const text = span > 20 * 3600 ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
      return `<text x="${x(t)}" y="${H - 6}" text-anchor="${f === 0 ? "start" : f === 1 ? "end" : "middle"}">${text}</text>`;
    }).join("");
    const versions = [...new Set(entries.flatMap((e) => Object.keys(e.shares)))].sort((a, b) => a - b);
    $("timeline").innerHTML = `<svg class="chart" id="timeline-chart" viewBox="0 0 ${W} ${H}" role="group" aria-label="Traffic share per version over time">
      <text x="${L - 4}" y="${y(100) + 4}" text-anchor="end">100%</text><text x="${L - 4}" y="${y(0)}" text-anchor="end">0%</text>
      <line class="axis" x1="${L}" x2="${W - R}" y1="${y(0)}" y2="${y(0)}"></line>${rects}${ticks}</svg>
      <div class="legend">${versions.map((v) => `<span>${swatch(colorOf(v))}v${esc(v)}</span>`).join("")}</div>`;
    const chart = $("timeline-chart");
    const show = (target, clientX, clientY) => {
      const g = target && target.closest("g[data-label]");
      if (!g) { hideTip(); return; }
      showTip(g.dataset.label, clientX, clientY);
    };
    chart.addEventListener("mousemove", (event) => show(event.target, event.clientX, event.clientY));
    chart.addEventListener("mouseleave", hideTip);
    chart.addEventListener("focusin", (event) => {
      const box = event.target.getBoundingClientRect();
      show(event.target, box.left + box.width / 2, box.top);
    });
    chart.addEventListener("focusout", hideTip);
  }

  function showTip(text, clientX, clientY) {
    const tip = $("tip");
    tip.textContent = text;
    tip.hidden = false;
    const width = tip.offsetWidth;
    tip.style.left = Math.max(4, Math.min(clientX + 12, window.innerWidth - width - 4)) + "px";
    tip.style.top = Math.max(4, clientY - tip.offsetHeight - 8) + "px";
  }
  function hideTip() { $("tip").hidden = true; }

  function lineChart(title, points, series) {
    const h = 150, W = 360, L = 40;
    if (!points.length) return `<figure><figcaption>${esc(title)}</figcaption><p class="muted">No requests in the last hour.</p></figure>`;
    const t0 = points[0].at - points[0].seconds, t1 = points[points.length - 1].at;
    const span = Math.max(t1 - t0, 1);
    let max = 0;
    for (const p of points) for (const [key, , scale] of series) max = Math.max(max, (p[key] || 0) * scale);
    max = max > 0 ? max * 1.1 : 1;
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (v) => T + (1 - v / max) * (h - T - B);
    const lines = series.map(([key, , scale], i) => {
      const path = points.filter((p) => p[key] !== null).map((p, j) => `${j ? "L" : "M"}${x(p.at).toFixed(1)},${y(p[key] * scale).toFixed(1)}`).join("");
      return `<path d="${path}" fill="none" stroke="${COLORS[i]}" stroke-width="2"></path>`;
    }).join("");
    const last = points[points.length - 1];
    const legend = series.map(([key, label, scale], i) => `<span>${swatch(COLORS[i])}${esc(label)} ${last[key] === null ? "–" : num(last[key] * scale, 2)}</span>`).join("");
    return `<figure><figcaption>${esc(title)}</figcaption><svg class="chart" viewBox="0 0 ${W} ${h}" role="img" aria-label="${esc(title)}">
      <text x="${L - 4}" y="${T + 8}" text-anchor="end">${num(max, max < 10 ? 2 : 0)}</text><text x="${L - 4}" y="${h - B}" text-anchor="end">0</text>
      <line class="axis" x1="${L}" x2="${W - R}" y1="${h - B}" y2="${h - B}"></line>${lines}
      <text x="${L}" y="${h - 6}">${esc(when(t0).slice(11, 16))}</text><text x="${W - R}" y="${h - 6}" text-anchor="end">${esc(when(t1).slice(11, 16))}</text></svg>
      <div class="legend">${legend}</div></figure>`;
  }

  // -- actions -----------------------------------------------------------------------------
  function renderActions(me) {
    const box = $("actions");
    if (!who.admin || !me.versions || !me.traffic) { box.innerHTML = ""; return; }
    const rollout = me.traffic.rollout;
    const active = rollout && (rollout.state === "RUNNING" || rollout.state === "PAUSED");
    const key = JSON.stringify([active, rollout && rollout.state]);
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const buttons = [["rollback", "Roll back"], ["alias", "Move an alias"], ["weights", "Set A/B weights"]];
    if (!active) buttons.push(["deploy", "Start a rollout"]);
    if (active && rollout.state === "RUNNING") buttons.push(["pause", "Pause rollout"]);
    if (active && rollout.state === "PAUSED") buttons.push(["resume", "Resume rollout"]);
    if (active) buttons.push(["abort", "Abort rollout"]);
    box.innerHTML = buttons.map(([id, label]) => `<button type="button" data-action="${id}">${label}</button>`).join("");
    box.querySelectorAll("button[data-action]").forEach((button) => {
      button.addEventListener("click", () => startAction(me, button.dataset.action));
    });
  }

  function versionOptions(me, selected) {
    return me.versions.versions.map((v) => `<option value="${v.number}"${v.number === selected ? " selected" : ""}>v${v.number}${v.aliases.length ? " (" + esc(v.aliases.join(", ")) + ")" : ""}</option>`).join("");
  }

  function startAction(me, action) {
    const model = me.model;
    const base = `/v2/pitstop/models/${encodeURIComponent(model)}`;
    const aliases = me.versions.aliases;
    const production = aliases.production;
    if (action === "rollback") {
      const previous = me.history.events.find((e) => e.action === "alias.set" && e.alias === "production" && e.before);
      confirmAction(me, {
        title: `Roll back ${model}`,
        effect: `production moves from v${production} back to ${previous ? "v" + previous.before.version : "the previous version"}, on every replica within a second; any rollout is aborted.`,
        run: (reason) => api(base + "/rollback", { method: "POST", body: { reason } }),
      });
    } else if (action === "alias") {
      confirmAction(me, {
        title: `Move an alias of ${model}`,
        fields: `<label for="f-alias">Alias</label><input id="f-alias" list="f-aliases" value="production" required maxlength="64">
          <datalist id="f-aliases">${Object.keys(aliases).map((a) => `<option value="${esc(a)}">`).join("")}</datalist>
          <label for="f-version">Version</label><select id="f-version">${versionOptions(me, production)}</select>`,
        effect: () => `${$("f-alias").value} will point at v${$("f-version").value} (now ${aliases[$("f-alias").value] ? "v" + aliases[$("f-alias").value] : "unset"}); requests for it are answered by v${$("f-version").value} once it is loaded.`,
        run: (reason) => api(`${base}/aliases/${encodeURIComponent($("f-alias").value)}`,
          { method: "PUT", body: { version: Number($("f-version").value), reason } }),
      });
    } else if (action === "deploy") {
      const newest = me.versions.versions[0] ? me.versions.versions[0].number : null;
      confirmAction(me, {
        title: `Start a rollout of ${model}`,
        fields: `<label for="f-version">Canary version</label><select id="f-version">${versionOptions(me, newest)}</select>
          <label for="f-steps">Steps (% of traffic)</label><input id="f-steps" value="5, 25, 50, 100" required>
          <label for="f-interval">Seconds per step</label><input id="f-interval" type="number" min="1" value="60" required>`,
        effect: () => `v${$("f-version").value} takes ${$("f-steps").value}% of ${model}'s traffic in turn, ${$("f-interval").value} s per step, rolled back automatically if its guards fail.`,
        run: (reason) => api(base + "/deploy", {
          method: "POST",
          body: {
            version: Number($("f-version").value), interval_s: Number($("f-interval").value),
            steps: $("f-steps").value.split(",").map((s) => Number(s.trim())), reason,
          },
        }),
      });
    } else if (["pause", "resume", "abort"].includes(action)) {
      const r = me.traffic.rollout;
      const effects = {
        pause: `The rollout of v${r.version} stays at ${+r.weight}% until resumed.`,
        resume: `The rollout of v${r.version} continues from ${+r.weight}%.`,
        abort: `The rollout of v${r.version} stops and production (v${r.baseline}) takes all traffic again.`,
      };
      confirmAction(me, {
        title: `${action[0].toUpperCase() + action.slice(1)} the rollout of ${model}`,
        effect: effects[action],
        run: (reason) => api(`${base}/rollout/${action}`, { method: "POST", body: { reason } }),
      });
    } else if (action === "weights") {
      const policy = me.traffic.policy;
      const rows = policy.arms.map((a, i) => `<div><label for="f-arm-${i}">${esc(a.target)} (%)</label>
        <input id="f-arm-${i}" data-target="${esc(a.target)}" type="number" min="0" max="100" step="any" value="${+a.weight}"></div>`).join("");
      confirmAction(me, {
        title: `Set A/B weights of ${model}`,
        fields: `${rows}<label for="f-new-target">Add an arm (alias or version number, optional)</label>
          <input id="f-new-target" maxlength="64"><label for="f-new-weight">Its weight (%)</label>
          <input id="f-new-weight" type="number" min="0" max="100" step="any" value="0">`,
        effect: () => {
          const arms = armsFromForm();
          return `Traffic to ${model} is split ${arms.map((a) => `${a.target} ${a.weight}%`).join(", ")} for new requests (sticky users stay where the weights put them).`;
        },
        run: (reason) => api(base + "/traffic", { method: "PUT", body: { ...policy, arms: armsFromForm(), reason } }),
      });
    }
  }

  function armsFromForm() {
    const arms = [...document.querySelectorAll("#confirm-fields input[data-target]")]
      .map((input) => ({ target: input.dataset.target, weight: Number(input.value) }));
    const extra = $("f-new-target") ? $("f-new-target").value.trim() : "";
    if (extra) arms.push({ target: extra, weight: Number($("f-new-weight").value) });
    return arms;
  }

  function confirmAction(me, spec) {
    const dialog = $("confirm");
    $("confirm-title").textContent = spec.title;
    $("confirm-fields").innerHTML = spec.fields || "";
    $("confirm-reason").value = "";
    $("confirm-error").textContent = "";
    const effect = () => { $("confirm-effect").textContent = typeof spec.effect === "function" ? spec.effect() : spec.effect; };
    effect();
    $("confirm-fields").oninput = effect;
    $("confirm-fields").onchange = effect;
    const ok = $("confirm-ok");
    const sync = () => { ok.disabled = !$("confirm-reason").value.trim(); };
    $("confirm-reason").oninput = sync;
    sync();
    $("confirm-cancel").onclick = () => dialog.close();
    $("confirm-form").onsubmit = async (event) => {
      event.preventDefault();
      const reason = $("confirm-reason").value.trim();
      if (!reason) return;
      ok.disabled = true;
      try {
        await spec.run(reason);
        dialog.close();
        if (view === me && me.refresh) await me.refresh();
      } catch (e) {
        $("confirm-error").textContent = e.message;
        ok.disabled = false;
      }
    };
    dialog.showModal();
    const first = dialog.querySelector("#confirm-fields input, #confirm-fields select") || $("confirm-reason");
    first.focus();
  }

  // -- start -------------------------------------------------------------------------------
  window.addEventListener("hashchange", () => { hideTip(); route(); });
  $("signout").addEventListener("click", () => signOut());
  (async () => {
    if (!token) { showLogin(); return; }
    try {
      await signIn();
      route();
    } catch (e) {
      if (e.status === 401 || e.status === 403) signOut("Sign in again: " + e.message);
      else { showLogin(e.message); }
    }
  })();
})();
