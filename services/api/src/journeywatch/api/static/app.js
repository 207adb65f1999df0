// JourneyWatch live journey map: plain JS over the /v1 REST API (no framework, no CDN).
// Refresh: Server-Sent Events of anomaly changes (read with fetch so the API key can be sent)
// plus polling of /state with If-None-Match; metric history is refetched when the state changes.
"use strict";

(() => {
  const API = "v1/";
  const STORE = { key: "journeywatch.apiKey", name: "journeywatch.user", journey: "journeywatch.journey", metric: "journeywatch.metric" };
  const params = new URLSearchParams(location.search);
  const POLL_MS = Math.max(1, Number(params.get("poll")) || 5) * 1000;
  const HISTORY_WINDOWS = 60;
  const RATE_METRICS = new Set(["conversion_rate", "abandonment_rate", "dropoff_rate", "step_conversion"]);
  const METRIC_LABELS = {
    sessions: "Sessions", touchpoints: "Touchpoints", conversion_rate: "Conversion rate",
    abandonment_count: "Abandonments", abandonment_rate: "Abandonment rate", dropoff_rate: "Drop-off rate",
    sentiment_mean: "Sentiment", value_sum: "Order value",
    touchpoint_count: "Touchpoint events", step_conversion: "Step conversion",
  };
  const SIDE_METRICS = ["conversion_rate", "abandonment_rate", "dropoff_rate"];
  const SEVERITY_RANK = { info: 0, warning: 1, critical: 2 };
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) {
        node.append(child instanceof Node ? child : document.createTextNode(String(child)));
      }
    }
    return node;
  };
  const svg = (tag, attrs = {}) => {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const storage = {
    get(name) { try { return localStorage.getItem(name); } catch { return null; } },
    set(name, value) { try { if (value) localStorage.setItem(name, value); else localStorage.removeItem(name); } catch { /* private mode */ } },
  };

  // --- state ------------------------------------------------------------------------------

  const app = {
    journeys: [],
    journey: null,
    metric: "sessions",
    state: null,
    stateEtag: null,
    stateReceivedAt: 0,
    stateCheckedAt: null,
    history: new Map(),
    historyEtag: null,
    // Open step/touchpoint incidents' charts: id → {updated_at, points} (from the detail's history).
    seriesCharts: new Map(),
    resolved: [],
    lastEventId: null,
    stream: null,
    connection: "connecting",
    busy: new Set(),
    refreshTimer: null,
    awaited: new Map(),
    generation: 0,
  };

  // --- HTTP -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function request(path, { method = "GET", body, etag } = {}) {
    const headers = { Accept: "application/json" };
    const key = storage.get(STORE.key);
    if (key) headers["X-API-Key"] = key;
    if (etag) headers["If-None-Match"] = etag;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(API + path, {
      method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 304) return { status: 304, etag: etag, data: null };
    let data = null;
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return { status: response.status, etag: response.headers.get("ETag"), data };
  }

  // One key prompt at a time; every request that hit 401/403 waits for it, then retries once.
  // After a Cancel, background requests stop asking until the "API key" button is used.
  let keyPrompt = null;
  let keyDeclined = false;
  function askForKey(error) {
    if (error && keyDeclined) return Promise.resolve(false);
    if (!keyPrompt) {
      keyPrompt = openKeyDialog(error).finally(() => { keyPrompt = null; });
    }
    return keyPrompt;
  }

  async function api(path, options = {}) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await request(path, options);
      } catch (error) {
        if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403) || attempt > 2) throw error;
        const saved = await askForKey(error);
        if (!saved) throw error;
      }
    }
  }

  // --- dialogs ------------------------------------------------------------------------------

  function openKeyDialog(error) {
    const dialog = $("key-dialog");
    const input = $("key-input");
    let reason = "Enter an API key for this JourneyWatch API.";
    if (error && error.status === 401) reason = storage.get(STORE.key)
      ? "The stored API key was not accepted. Enter a valid key."
      : "This JourneyWatch API needs a key to show the journey.";
    if (error && error.status === 403) reason = "Your API key lacks the scope for this (acknowledge and feedback need a key with the write scope). Enter another key.";
    $("key-reason").textContent = reason;
    input.value = "";
    return new Promise((resolve) => {
      const finish = (saved) => {
        $("key-form").removeEventListener("submit", onSubmit);
        $("key-cancel").removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        resolve(saved);
      };
      const onSubmit = (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) { input.focus(); return; }
        storage.set(STORE.key, value);
        keyDeclined = false;
        restartStream();
        finish(true);
      };
      const onCancel = (event) => { event.preventDefault(); keyDeclined = true; finish(false); };
      $("key-form").addEventListener("submit", onSubmit);
      $("key-cancel").addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      if (!dialog.open) dialog.showModal();
      input.focus();
    });
  }

  const ACTIONS = {
    acknowledge: {
      title: "Acknowledge incident", submit: "Acknowledge", nameRequired: true,
      effect: "Tells the team someone is on it. The incident still resolves on its own when the metric is back in its band.",
      path: (id) => `anomalies/${encodeURIComponent(id)}/acknowledge`,
      body: (by, comment) => ({ by, comment }),
      done: "acknowledged",
    },
    true_positive: {
      title: "Confirm incident (true positive)", submit: "Mark true positive", nameRequired: false,
      effect: "Recorded with the incident; the detector keeps its sensitivity.",
      path: (id) => `anomalies/${encodeURIComponent(id)}/feedback`,
      body: (by, comment) => ({ verdict: "true_positive", by, comment }),
      done: "marked true positive",
    },
    false_positive: {
      title: "Mark as false positive", submit: "Mark false positive", nameRequired: false,
      effect: "The detector widens this series' expected band one step (up to 3×), so it alerts less on similar changes.",
      path: (id) => `anomalies/${encodeURIComponent(id)}/feedback`,
      body: (by, comment) => ({ verdict: "false_positive", by, comment }),
      done: "marked false positive",
    },
  };

  function openActionDialog(kind, incident) {
    const action = ACTIONS[kind];
    const dialog = $("action-dialog");
    const name = $("action-name");
    const comment = $("action-comment");
    const error = $("action-error");
    $("action-title").textContent = action.title;
    $("action-summary").textContent = incident.summary || `${typeLabel(incident.type)} — ${where(incident)}`;
    $("action-effect").textContent = action.effect;
    $("action-name-label").textContent = action.nameRequired ? "Your name" : "Your name (optional)";
    $("action-submit").textContent = action.submit;
    name.required = action.nameRequired;
    name.value = storage.get(STORE.name) || "";
    comment.value = "";
    error.hidden = true;
    dialog.dataset.action = kind;
    dialog.dataset.incident = incident.id;

    const cleanup = () => {
      $("action-form").removeEventListener("submit", onSubmit);
      $("action-cancel").removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onCancel);
    };
    const onCancel = (event) => { event.preventDefault(); cleanup(); dialog.close(); };
    const onSubmit = async (event) => {
      event.preventDefault();
      const by = name.value.trim();
      if (action.nameRequired && !by) { name.focus(); return; }
      storage.set(STORE.name, by);
      $("action-submit").disabled = true;
      error.hidden = true;
      try {
        const { data } = await api(action.path(incident.id), {
          method: "POST", body: action.body(by || null, comment.value.trim() || null),
        });
        cleanup();
        dialog.close();
        replaceIncident(data);
        announce(`Incident ${typeLabel(data.type)} at ${where(data)} ${action.done}.`);
        scheduleRefresh(0);
      } catch (err) {
        error.textContent = err instanceof ApiError
          ? `Not saved: ${err.message}${err.status === 503 ? " (stored, but the detector was not told; try again)" : ""}`
          : "Not saved: the API is unreachable. Try again.";
        error.hidden = false;
      } finally {
        $("action-submit").disabled = false;
      }
    };
    $("action-form").addEventListener("submit", onSubmit);
    $("action-cancel").addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onCancel);
    dialog.showModal();
    (action.nameRequired && !name.value ? name : comment).focus();
  }

  // --- formatting ---------------------------------------------------------------------------

  const numberFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decimalFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
  const percentFormat = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

  function fmt(metric, value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    if (RATE_METRICS.has(metric)) return percentFormat.format(value);
    if (metric === "sentiment_mean") return decimalFormat.format(value);
    return numberFormat.format(value);
  }
  const words = (name) => (name || "").replace(/_/g, " ");
  const title = (name) => { const w = words(name); return w.charAt(0).toUpperCase() + w.slice(1); };
  const typeLabel = (type) => title(type);
  const metricLabel = (metric) => METRIC_LABELS[metric] || title(metric);
  const channelLabel = (channel) => (channel ? words(channel) : "all channels");
  // Steps are named `from→to` (touchpoints); shown with spaces so the arrow reads as one.
  const stepLabel = (step) => step.split("→").map(words).join(" → ");
  const series = (a) => (a.step ? `step ${stepLabel(a.step)}` : a.touchpoint ? words(a.touchpoint) : null);
  const where = (a) => [words(a.stage), series(a), channelLabel(a.channel)].filter(Boolean).join(" · ");
  const headline = (a) => a.summary || `${typeLabel(a.type)} at ${where(a)}`;
  const minutes = (seconds) => (seconds % 60 === 0 ? `${seconds / 60} min` : `${seconds} s`);
  function when(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    const sameDay = date.toDateString() === new Date().toDateString();
    return (sameDay ? timeFormat : dateTimeFormat).format(date);
  }
  function ago(seconds) {
    if (seconds < 1) return "just now";
    if (seconds < 90) return `${Math.round(seconds)} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }
  function outside(m) {
    return m && m.lower !== null && m.upper !== null && (m.value < m.lower || m.value > m.upper);
  }

  // --- rendering: header ----------------------------------------------------------------------

  function setConnection(stateName, text) {
    app.connection = stateName;
    const node = $("connection");
    node.dataset.state = stateName;
    node.textContent = text;
  }

  function showBanner(message) {
    const banner = $("banner");
    if (!message) { banner.hidden = true; banner.textContent = ""; return; }
    if (banner.textContent !== message) banner.textContent = message;
    banner.hidden = false;
  }

  function announce(message) {
    const node = $("announcer");
    node.textContent = "";
    setTimeout(() => { node.textContent = message; }, 50);
  }

  function renderFreshness() {
    const node = $("freshness");
    const text = $("freshness-text");
    const state = app.state;
    if (!state) { node.dataset.level = "unknown"; text.textContent = "Loading…"; return; }
    if (state.freshness_seconds === null || !state.window_end) {
      node.dataset.level = "unknown";
      text.textContent = "No data yet";
      return;
    }
    const age = state.freshness_seconds + (performance.now() - app.stateReceivedAt) / 1000;
    const windowSeconds = Math.max(1, (new Date(state.window_end) - new Date(state.window_start)) / 1000);
    let level = "fresh";
    if (age > 2 * windowSeconds + 10) level = "late";
    if (age > 5 * windowSeconds + 30) level = "stale";
    node.dataset.level = level;
    const label = { fresh: "Fresh", late: "Delayed", stale: "Stale" }[level];
    text.textContent = `${label} · updated ${ago(age)}`;
    node.title = `Latest window stored by the detector ${ago(age)} (wall clock); checked ${app.stateCheckedAt ? ago((Date.now() - app.stateCheckedAt) / 1000) : "never"}.`;
  }

  function renderWindow() {
    const state = app.state;
    const text = $("window-text");
    if (!state || !state.window_start) { text.textContent = ""; return; }
    text.textContent = `Latest window ${when(state.window_start)}–${timeFormat.format(new Date(state.window_end))} (event time) · charts: ${metricLabel(app.metric).toLowerCase()} over the last ${chartWindows()} windows, shaded band = expected range`;
  }

  function chartWindows() {
    let most = 0;
    for (const list of app.history.values()) most = Math.max(most, list.length);
    return most || HISTORY_WINDOWS;
  }

  // --- rendering: the funnel ------------------------------------------------------------------

  function incidentsByStage() {
    const map = new Map();
    for (const a of (app.state && app.state.open_anomalies) || []) {
      if (!map.has(a.stage)) map.set(a.stage, []);
      map.get(a.stage).push(a);
    }
    return map;
  }

  function worstSeverity(list) {
    return list.reduce((worst, a) => (SEVERITY_RANK[a.severity] > SEVERITY_RANK[worst] ? a.severity : worst), "info");
  }

  function sparkline(points, metric, stageName, incidents = []) {
    const width = 240;
    const height = 64;
    const pad = 4;
    const label = `${metricLabel(metric)} at ${words(stageName)}`;
    const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img", preserveAspectRatio: "none" });
    const titleNode = svg("title");
    box.append(titleNode);
    if (!points || points.length === 0) {
      titleNode.textContent = `${label}: no history yet`;
      const t = svg("text", { x: width / 2, y: height / 2 + 4, "text-anchor": "middle", class: "spark-empty" });
      t.textContent = "no history yet";
      box.append(t);
      return box;
    }
    const values = [];
    for (const p of points) {
      values.push(p.value);
      if (p.lower !== null) values.push(p.lower);
      if (p.upper !== null) values.push(p.upper);
    }
    let min = Math.min(...values);
    let max = Math.max(...values);
    if (RATE_METRICS.has(metric)) { min = Math.max(0, min); max = Math.min(1, max); }
    if (max - min < 1e-9) { max += 1; min -= 1; }
    const span = max - min;
    const n = points.length;
    const x = (i) => (n === 1 ? width / 2 : pad + (i * (width - 2 * pad)) / (n - 1));
    const y = (v) => height - pad - ((Math.min(max, Math.max(min, v)) - min) / span) * (height - 2 * pad);

    // Windows an open incident of this stage covers, behind everything else.
    const step = n > 1 ? (width - 2 * pad) / (n - 1) : width;
    for (const a of incidents) {
      const from = Date.parse(a.opened_at);
      const to = Date.parse(a.updated_at);
      const hit = points.map((p, i) => (Date.parse(p.window_end) >= from && Date.parse(p.window_start) < to ? i : -1)).filter((i) => i >= 0);
      if (hit.length) {
        const x0 = Math.max(0, x(hit[0]) - step / 2);
        const x1 = Math.min(width, x(hit[hit.length - 1]) + step / 2);
        box.append(svg("rect", { x: x0.toFixed(1), y: 0, width: (x1 - x0).toFixed(1), height, class: `spark-incident sev-${a.severity}` }));
      }
    }

    // Band: contiguous runs of points that have one.
    let run = [];
    const flush = () => {
      if (run.length > 0) {
        const upper = run.map((i) => `${x(i).toFixed(1)},${y(points[i].upper).toFixed(1)}`);
        const lower = run.slice().reverse().map((i) => `${x(i).toFixed(1)},${y(points[i].lower).toFixed(1)}`);
        box.append(svg("polygon", { points: upper.concat(lower).join(" "), class: "spark-band" }));
        const expected = run.map((i) => `${x(i).toFixed(1)},${y(points[i].expected).toFixed(1)}`);
        box.append(svg("polyline", { points: expected.join(" "), class: "spark-expected" }));
      }
      run = [];
    };
    points.forEach((p, i) => {
      if (p.lower !== null && p.upper !== null && p.expected !== null) run.push(i); else flush();
    });
    flush();
    box.append(svg("polyline", { points: points.map((p, i) => `${x(i).toFixed(1)},${y(p.value).toFixed(1)}`).join(" "), class: "spark-line" }));
    let outliers = 0;
    points.forEach((p, i) => {
      if (outside(p)) {
        outliers += 1;
        box.append(svg("circle", { cx: x(i).toFixed(1), cy: y(p.value).toFixed(1), r: 2.6, class: "spark-out" }));
      }
    });
    const last = points[n - 1];
    box.append(svg("circle", { cx: x(n - 1).toFixed(1), cy: y(last.value).toFixed(1), r: 3.2, class: outside(last) ? "spark-last out" : "spark-last" }));
    const band = last.lower !== null ? `, expected ${fmt(metric, last.expected)} (${fmt(metric, last.lower)}–${fmt(metric, last.upper)})` : "";
    titleNode.textContent = `${label}, last ${n} windows: latest ${fmt(metric, last.value)}${band}; ${outliers} outside the band`;
    return box;
  }

  function metricLine(metric, m) {
    const band = m.lower !== null && m.upper !== null ? ` (expected ${fmt(metric, m.lower)}–${fmt(metric, m.upper)})` : "";
    return el("div", { class: outside(m) ? "kv out" : "kv" },
      el("dt", { text: metricLabel(metric) }),
      el("dd", { title: `${metricLabel(metric)} ${fmt(metric, m.value)}${band}` }, fmt(metric, m.value),
        outside(m) ? el("span", { class: "flag", text: m.value > m.upper ? " ▲" : " ▼", "aria-label": m.value > m.upper ? "above band" : "below band" }) : null));
  }

  function renderFunnel() {
    const funnel = $("funnel");
    const state = app.state;
    const journey = app.journeys.find((j) => j.name === app.journey);
    const stageNames = state ? state.stages.map((s) => s.stage) : (journey ? journey.stages.map((s) => s.name) : []);
    const stageData = new Map((state ? state.stages : []).map((s) => [s.stage, s]));
    const incidents = incidentsByStage();
    $("funnel-empty").hidden = !(state && !state.window_start);
    funnel.style.setProperty("--stages", String(Math.max(1, stageNames.length)));

    const items = stageNames.map((name, index) => {
      const data = stageData.get(name) || { metrics: {}, channels: {} };
      const hits = incidents.get(name) || [];
      const severity = hits.length ? worstSeverity(hits) : null;
      const sessions = data.metrics.sessions;
      const conversion = data.metrics.conversion_rate;
      const definition = journey && journey.stages.find((s) => s.name === name);

      const hitChannels = new Map();
      for (const a of hits) {
        const key = a.channel || "all";
        if (!hitChannels.has(key)) hitChannels.set(key, []);
        hitChannels.get(key).push(a);
      }
      const channelNames = Object.keys(data.channels || {});
      for (const key of hitChannels.keys()) if (key !== "all" && !channelNames.includes(key)) channelNames.push(key);
      const chips = [];
      if (hitChannels.has("all")) chips.push(channelChip("all", null, hitChannels.get("all")));
      for (const c of channelNames.sort()) chips.push(channelChip(c, data.channels[c], hitChannels.get(c) || []));

      const side = SIDE_METRICS.filter((m) => data.metrics[m]).map((m) => metricLine(m, data.metrics[m]));

      const card = el("li", {
        class: `stage${severity ? ` hit sev-${severity}` : ""}`,
        "data-stage": name,
        "data-incidents": String(hits.length),
      },
        el("div", { class: "stage-head" },
          el("span", { class: "stage-index", text: `Stage ${index + 1}` }),
          el("h3", { text: title(name) }),
          hits.length ? el("a", { class: `badge sev-${severity}`, href: `#incident-${hits[0].id}`, "data-role": "stage-incidents" },
            el("span", { "aria-hidden": "true", text: "⚠ " }), `${hits.length} open incident${hits.length === 1 ? "" : "s"}`) : null),
        el("p", { class: `headline${outside(sessions) ? " out" : ""}` },
          el("span", { class: "big", text: sessions ? fmt("sessions", sessions.value) : "—" }),
          el("span", { class: "unit", text: " live sessions" })),
        el("p", { class: "expected", text: sessions && sessions.expected !== null
          ? `expected ${fmt("sessions", sessions.expected)} (${fmt("sessions", sessions.lower)}–${fmt("sessions", sessions.upper)})`
          : (sessions ? "learning the expected band…" : "no sessions in the latest window") }),
        el("figure", { class: "chart" },
          sparkline(app.history.get(name), app.metric, name, hits),
          el("figcaption", { text: metricLabel(app.metric) })),
        side.length ? el("dl", { class: "kvs" }, side) : null,
        chips.length ? el("ul", { class: "channels", "aria-label": `Channels at ${words(name)}` }, chips) : null,
        definition ? el("p", { class: "touchpoints", text: definition.touchpoints.map(words).join(", ") }) : null,
        index < stageNames.length - 1 ? el("div", {
          class: `handoff${outside(conversion) ? " out" : ""}`,
          title: conversion && conversion.expected !== null ? `expected ${fmt("conversion_rate", conversion.expected)} (${fmt("conversion_rate", conversion.lower)}–${fmt("conversion_rate", conversion.upper)})` : "",
        },
          el("span", { class: "sr-only", text: `Conversion from ${words(name)} onwards: ` }),
          el("span", { class: "handoff-value", text: conversion ? fmt("conversion_rate", conversion.value) : "—" }),
          el("span", { class: "handoff-label", "aria-hidden": "true", text: "convert" })) : null);
      return card;
    });
    funnel.replaceChildren(...items);
  }

  function channelChip(channel, metrics, hits) {
    const sessions = metrics && metrics.sessions;
    const severity = hits.length ? worstSeverity(hits) : null;
    return el("li", {
      class: `chip${severity ? ` hit sev-${severity}` : ""}`,
      "data-channel": channel,
      title: hits.length ? hits.map((a) => a.summary || `${typeLabel(a.type)} (${a.severity})`).join("\n") : "",
    },
      hits.length ? el("span", { class: "chip-flag", "aria-hidden": "true", text: "⚠" }) : null,
      el("span", { class: "chip-name", text: channel === "all" ? "all channels" : words(channel) }),
      sessions ? el("span", { class: "chip-value", text: fmt("sessions", sessions.value) }) : null,
      hits.length ? el("span", { class: "sr-only", text: `, ${hits.length} open incident${hits.length === 1 ? "" : "s"}` }) : null);
  }

  // --- rendering: incidents -------------------------------------------------------------------

  function incidentCard(a, { actions }) {
    const metric = a.metric;
    // Provisional: opened from the open window before its late events were in (docs/API.md).
    const statusText = a.provisional && a.status === "resolved"
      ? "Retracted (not confirmed once late events were in)"
      : a.status === "acknowledged" && a.acknowledgement
        ? `Acknowledged by ${a.acknowledgement.by || "someone"} at ${when(a.acknowledgement.at)}`
        : a.provisional ? `${title(a.status)} · provisional` : title(a.status);
    const verdict = a.feedback ? a.feedback.verdict : null;
    const busy = app.busy.has(a.id);
    const button = (kind, label, pressed) => el("button", {
      type: "button", class: kind === "acknowledge" ? "primary" : "ghost",
      "data-action": kind, "aria-pressed": pressed === undefined ? null : String(pressed), disabled: busy,
      onclick: () => openActionDialog(kind, a),
    }, label);
    return el("li", {
      class: `incident sev-${a.severity} status-${a.status}`, id: `incident-${a.id}`,
      "data-incident-id": a.id, "data-stage": a.stage, "data-channel": a.channel || "all", "data-status": a.status,
    },
      el("div", { class: "incident-head" },
        el("span", { class: `severity sev-${a.severity}`, text: a.severity }),
        el("h3", { text: typeLabel(a.type) }),
        el("span", { class: `status-pill status-${a.status}`, "data-role": "status", text: statusText })),
      a.summary ? el("p", { class: "summary", "data-role": "summary", text: a.summary }) : null,
      seriesChart(a, "chart"),
      el("p", { class: "where" },
        el("strong", { text: title(a.stage) }), " · ",
        series(a) ? el("span", { class: "series", "data-role": "series", text: series(a) }) : null,
        series(a) ? " · " : null,
        el("span", { text: channelLabel(a.channel) }),
        ` · ${metricLabel(metric).toLowerCase()} `,
        el("strong", { text: fmt(metric, a.observed) }),
        ` vs expected ${fmt(metric, a.expected)} (${fmt(metric, a.lower)}–${fmt(metric, a.upper)})`),
      el("p", { class: "meta" },
        a.onset ? `Began ${when(a.onset)} · ` : "",
        `Opened ${when(a.opened_at)} · ${a.anomalous_windows} window${a.anomalous_windows === 1 ? "" : "s"}`,
        a.resolved_at ? ` · resolved ${when(a.resolved_at)}` : ` · last seen ${when(a.updated_at)}`,
        a.contributors && a.contributors.length ? ` · mostly ${a.contributors.slice(0, 2).map((c) => `${words(c.dimension)} ${words(c.value)}`).join(", ")}` : "",
        verdict ? el("span", { class: `verdict ${verdict}`, "data-role": "verdict", text: ` · ${verdict === "false_positive" ? "False positive" : "Confirmed"}${a.feedback.by ? ` by ${a.feedback.by}` : ""}` }) : null),
      actions ? el("div", { class: "incident-actions", role: "group", "aria-label": "Actions" },
        a.status === "open" ? button("acknowledge", "Acknowledge") : null,
        button("true_positive", "True positive", verdict === "true_positive"),
        button("false_positive", "False positive", verdict === "false_positive"),
        el("button", { type: "button", class: "link", "data-action": "show", onclick: () => showOnMap(a) },
          chartable(metric) ? `Chart ${metricLabel(metric).toLowerCase()} on the map` : "Show on the map")) : null);
  }

  // A step or touchpoint incident's own series (the stage charts cannot show it): value, band and
  // its windows shaded, from the incident detail's `history`; nothing until that has arrived.
  function seriesChart(a, role) {
    const chart = app.seriesCharts.get(a.id);
    if (!chart || !chart.points.length) return null;
    const name = a.step ? stepLabel(a.step) : words(a.touchpoint);
    return el("figure", { class: "chart series-chart", "data-role": role },
      sparkline(chart.points, a.metric, name, [a]),
      el("figcaption", { text: `${metricLabel(a.metric)} · ${series(a)} · ${channelLabel(a.channel)}` }));
  }

  // Only the stage-level metrics in the chart selector have a history per stage.
  function chartable(metric) {
    return Array.from($("metric-select").options).some((o) => o.value === metric);
  }

  function showOnMap(a) {
    if (chartable(a.metric) && app.metric !== a.metric) {
      app.metric = a.metric;
      $("metric-select").value = a.metric;
      storage.set(STORE.metric, a.metric);
      app.historyEtag = null;
      refreshHistory().then(render, () => scheduleRefresh(0)).then(() => focusStage(a.stage));
    } else if (!(a.step && focusStep(a.step))) {
      focusStage(a.stage);
    }
  }

  function focusStep(step) {
    const row = document.querySelector(`#steps .step[data-step="${CSS.escape(step)}"]`);
    if (!row) return false;
    row.tabIndex = -1;
    row.scrollIntoView({ block: "nearest" });
    row.focus();
    return true;
  }

  function focusStage(stage) {
    const card = document.querySelector(`#funnel .stage[data-stage="${CSS.escape(stage)}"]`);
    if (!card) return;
    card.tabIndex = -1;
    card.scrollIntoView({ block: "nearest" });
    card.focus();
  }

  function renderIncidents() {
    const open = ((app.state && app.state.open_anomalies) || []).slice().sort((a, b) =>
      (SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity]) || (a.status === b.status ? 0 : a.status === "open" ? -1 : 1) || (b.opened_at < a.opened_at ? -1 : 1));
    $("incident-list").replaceChildren(...open.map((a) => incidentCard(a, { actions: true })));
    $("incident-count").textContent = String(open.length);
    $("incidents-empty").hidden = !app.state || open.length > 0;
    $("resolved-list").replaceChildren(...app.resolved.map((a) => incidentCard(a, { actions: true })));
    $("resolved-empty").hidden = app.resolved.length > 0;
    document.title = open.length ? `(${open.length}) JourneyWatch — ${app.journey}` : `JourneyWatch — ${app.journey || "live journey map"}`;
  }

  function replaceIncident(updated) {
    if (!updated) return;
    for (const list of [app.state && app.state.open_anomalies, app.resolved]) {
      if (!list) continue;
      const i = list.findIndex((a) => a.id === updated.id);
      if (i >= 0) list[i] = updated;
    }
    render();
  }

  // The journey's funnel steps (from /v1/journeys), each flagged by the open incidents on it.
  function renderSteps() {
    const journey = app.journeys.find((j) => j.name === app.journey);
    const steps = (journey && journey.steps) || [];
    $("steps-section").hidden = steps.length === 0;
    const byStep = new Map();
    for (const a of (app.state && app.state.open_anomalies) || []) {
      if (!a.step) continue;
      if (!byStep.has(a.step)) byStep.set(a.step, []);
      byStep.get(a.step).push(a);
    }
    $("steps").replaceChildren(...steps.map((s) => {
      const hits = byStep.get(s.name) || [];
      const severity = hits.length ? worstSeverity(hits) : null;
      return el("li", { class: `step${severity ? ` hit sev-${severity}` : ""}`, "data-step": s.name, "data-incidents": String(hits.length) },
        el("p", { class: "step-name" },
          el("span", { text: words(s.from_touchpoint) }),
          el("span", { class: "step-arrow", "aria-label": "then", text: " → " }),
          el("span", { text: words(s.to_touchpoint) })),
        el("p", { class: "step-meta", text: `within ${minutes(s.horizon_seconds)} · ${s.from_stage === s.to_stage ? words(s.from_stage) : `${words(s.from_stage)} → ${words(s.to_stage)}`}` }),
        hits.length ? el("a", { class: `badge sev-${severity}`, href: `#incident-${hits[0].id}`, "data-role": "step-incidents" },
          el("span", { "aria-hidden": "true", text: "⚠ " }), `${hits.length} open incident${hits.length === 1 ? "" : "s"}`) : null,
        hits.length ? el("p", { class: "step-summary", "data-role": "step-summary", text: headline(hits[0]) }) : null,
        hits.length ? seriesChart(hits[0], "step-chart") : null);
    }));
  }

  function render() {
    renderFunnel();
    renderSteps();
    renderIncidents();
    renderWindow();
    renderFreshness();
  }

  // --- data -----------------------------------------------------------------------------------

  const journeyPath = () => `journeys/${encodeURIComponent(app.journey)}`;

  async function loadJourneys() {
    const { data } = await api("journeys");
    app.journeys = data.items;
    const select = $("journey-select");
    select.replaceChildren(...data.items.map((j) => el("option", { value: j.name, text: j.name })));
    $("journey-field").hidden = data.items.length < 2;
    const wanted = params.get("journey") || storage.get(STORE.journey);
    app.journey = data.items.some((j) => j.name === wanted) ? wanted : data.default_journey;
    select.value = app.journey;
    describeJourney();
  }

  function describeJourney() {
    const journey = app.journeys.find((j) => j.name === app.journey);
    $("journey-description").textContent = journey ? `${journey.name} — ${journey.description || "live journey map"}` : "Live journey map";
    $("map-title").textContent = journey ? `Journey: ${journey.name}` : "Journey";
  }

  async function refreshState() {
    const generation = app.generation;
    const { status, etag, data } = await api(`${journeyPath()}/state`, { etag: app.stateEtag });
    if (generation !== app.generation) return;
    app.stateCheckedAt = Date.now();
    if (status === 304) { renderFreshness(); checkAwaited(); return; }
    app.state = data;
    app.stateEtag = etag;
    app.stateReceivedAt = performance.now();
    await Promise.allSettled([refreshHistory(), refreshResolved(), refreshSeriesCharts()]);
    if (generation !== app.generation) return;
    render();
    document.body.dataset.loaded = "true";
    checkAwaited();
  }

  async function refreshHistory() {
    const generation = app.generation;
    const stages = app.state ? app.state.stages.length : 1;
    const query = new URLSearchParams({ metric: app.metric, channel: "all", limit: String(HISTORY_WINDOWS * Math.max(1, stages)) });
    const { status, etag, data } = await api(`${journeyPath()}/metrics?${query}`, { etag: app.historyEtag });
    if (generation !== app.generation || status === 304) return;
    const byStage = new Map();
    for (const p of data.items) {
      if (!byStage.has(p.stage)) byStage.set(p.stage, []);
      byStage.get(p.stage).push(p);
    }
    for (const [stage, list] of byStage) byStage.set(stage, list.slice(-HISTORY_WINDOWS));
    app.history = byStage;
    app.historyEtag = etag;
  }

  // The detail of each open step/touchpoint incident, refetched when the incident changes.
  const MAX_SERIES_CHARTS = 12;
  async function refreshSeriesCharts() {
    const generation = app.generation;
    const wanted = ((app.state && app.state.open_anomalies) || [])
      .filter((a) => a.step || a.touchpoint).slice(0, MAX_SERIES_CHARTS);
    const charts = new Map();
    await Promise.allSettled(wanted.map(async (a) => {
      const known = app.seriesCharts.get(a.id);
      if (known && known.updated_at === a.updated_at) { charts.set(a.id, known); return; }
      const { data } = await api(`anomalies/${encodeURIComponent(a.id)}`);
      charts.set(a.id, { updated_at: a.updated_at, points: data.history || [] });
    }));
    if (generation !== app.generation) return;
    app.seriesCharts = charts;
  }

  async function refreshResolved() {
    const generation = app.generation;
    const query = new URLSearchParams({ journey: app.journey, status: "resolved", limit: "10" });
    const { status, data } = await api(`anomalies?${query}`);
    if (generation !== app.generation || status === 304) return;
    app.resolved = data.items;
  }

  let refreshing = null;
  async function refresh() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        await refreshState();
        showBanner(null);
      } catch (error) {
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          showBanner("An API key is needed to show this journey. Use the “API key” button.");
        } else if (error instanceof ApiError) {
          showBanner(`The API answered ${error.status}: ${error.message}. Retrying…`);
        } else {
          showBanner("The JourneyWatch API is unreachable. Retrying…");
        }
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  function scheduleRefresh(delay = 250) {
    clearTimeout(app.refreshTimer);
    app.refreshTimer = setTimeout(refresh, delay);
  }

  // After a pushed change, refresh until the state shows it: the API's short response cache may
  // answer with the previous state for a few seconds (never more than 5 s) while it recomputes.
  function expectChange(payload) {
    app.awaited.set(payload.anomaly.id, { change: payload.change, sequence: payload.sequence, since: Date.now() });
    scheduleRefresh(150);
  }

  function checkAwaited() {
    const open = new Map(((app.state && app.state.open_anomalies) || []).map((a) => [a.id, a]));
    for (const [id, want] of app.awaited) {
      const seen = open.get(id);
      const shown = want.change === "resolved" ? !seen : !!seen && seen.sequence >= want.sequence;
      if (shown || Date.now() - want.since > 8000) app.awaited.delete(id);
    }
    if (app.awaited.size > 0) scheduleRefresh(500);
  }

  // --- Server-Sent Events (fetch-based, so the API key header can be sent) ------------------------

  function restartStream() {
    if (app.stream) app.stream.abort();
    app.stream = null;
    if (app.journey) streamLoop();
  }

  async function streamLoop() {
    const controller = new AbortController();
    app.stream = controller;
    let retry = 2000;
    while (!controller.signal.aborted) {
      try {
        const headers = { Accept: "text/event-stream" };
        const key = storage.get(STORE.key);
        if (key) headers["X-API-Key"] = key;
        if (app.lastEventId !== null) headers["Last-Event-ID"] = app.lastEventId;
        const response = await fetch(`${API}anomalies/stream?journey=${encodeURIComponent(app.journey)}`, {
          headers, cache: "no-store", signal: controller.signal,
        });
        if (response.status === 401 || response.status === 403) {
          setConnection("auth", `Polling every ${POLL_MS / 1000} s (live updates need a key)`);
          await sleep(Math.max(POLL_MS, 10000));
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
        setConnection("live", "Live");
        retry = await readEvents(response.body, controller.signal, retry);
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (controller.signal.aborted) return;
      setConnection("reconnecting", `Reconnecting… (polling every ${POLL_MS / 1000} s)`);
      await sleep(retry);
    }
  }

  async function readEvents(body, signal, retry) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = { type: "message", data: [], id: null };
    try {
      while (!signal.aborted) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let newline;
        while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + (buffer[newline] === "\r" && buffer[newline + 1] === "\n" ? 2 : 1));
          if (line === "") {
            if (event.data.length) dispatch(event);
            event = { type: "message", data: [], id: null };
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const valueText = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") event.data.push(valueText);
          else if (field === "event") event.type = valueText;
          else if (field === "id") { event.id = valueText; app.lastEventId = valueText; }
          else if (field === "retry" && /^\d+$/.test(valueText)) retry = Number(valueText);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    return retry;
  }

  function dispatch(event) {
    let payload;
    try { payload = JSON.parse(event.data.join("\n")); } catch { return; }
    const a = payload && payload.anomaly;
    if (!a || a.journey !== app.journey) return;
    if (payload.change === "opened") announce(`New ${a.severity} incident: ${headline(a).replace(/\.$/, "")}.`);
    else if (payload.change === "resolved") announce(`Resolved: ${typeLabel(a.type)} at ${where(a)}.`);
    expectChange(payload);
  }

  // --- wiring ---------------------------------------------------------------------------------

  function selectJourney(name) {
    app.journey = name;
    app.generation += 1;
    app.state = null;
    app.stateEtag = null;
    app.historyEtag = null;
    app.history = new Map();
    app.resolved = [];
    app.lastEventId = null;
    app.awaited.clear();
    storage.set(STORE.journey, name);
    const url = new URL(location.href);
    url.searchParams.set("journey", name);
    history.replaceState(null, "", url);
    describeJourney();
    render();
    restartStream();
    refresh();
  }

  async function start() {
    const metric = params.get("metric") || storage.get(STORE.metric);
    if (metric && chartable(metric)) app.metric = metric;
    $("metric-select").value = app.metric;
    $("metric-select").addEventListener("change", (event) => {
      app.metric = event.target.value;
      storage.set(STORE.metric, app.metric);
      app.historyEtag = null;
      refreshHistory().then(render, () => scheduleRefresh(0));
    });
    $("journey-select").addEventListener("change", (event) => selectJourney(event.target.value));
    $("key-button").addEventListener("click", () => askForKey(null).then((saved) => { if (saved) scheduleRefresh(0); }));
    $("key-forget").addEventListener("click", () => {
      storage.set(STORE.key, null);
      $("key-input").value = "";
      announce("API key removed from this browser.");
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) scheduleRefresh(0); });
    setInterval(renderFreshness, 1000);

    for (;;) {
      try {
        await loadJourneys();
        break;
      } catch (error) {
        showBanner(error instanceof ApiError
          ? (error.status === 401 || error.status === 403 ? "An API key is needed to show the journey map. Use the “API key” button." : `The API answered ${error.status}: ${error.message}. Retrying…`)
          : "The JourneyWatch API is unreachable. Retrying…");
        await sleep(POLL_MS);
      }
    }
    render();
    restartStream();
    await refresh();
    setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  }

  start();
})();
