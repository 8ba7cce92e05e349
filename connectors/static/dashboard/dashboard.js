/* The staff dashboard: a snapshot from /dashboard/state/, then the live event stream.
 *
 * 1. GET the snapshot: connectors, queue depths, per-minute counts and recent events, all cut at
 *    `latest_seq`.
 * 2. Open /ws/events/?since=<latest_seq>: every later event arrives once, in seq order.
 * 3. Ack after each batch (debounced) and on every ping, so the server never sees a slow consumer.
 * 4. On any close: show "reconnecting…", reconnect with since=<last seq received> (backoff 1 s →
 *    10 s). The hello makes the page live again.
 * 5. Poll the snapshot without the chart every few seconds: heartbeats and queue depths are not
 *    events.
 *
 * No libraries, no inline script, no network access beyond this origin.
 */
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  if (!root) return;

  const cfg = {
    stateUrl: root.dataset.stateUrl,
    wsPath: root.dataset.wsPath || "/ws/events/",
    minutes: parseInt(root.dataset.chartMinutes || "30", 10),
    pollMs: parseFloat(root.dataset.pollSeconds || "10") * 1000,
    feedLimit: parseInt(root.dataset.feedLimit || "200", 10),
  };
  const SERIES = ["sent", "received", "failed"];
  const SERIES_OF_TYPE = {
    "connector.message.sent": "sent",
    "connector.message.received": "received",
    "connector.message.failed": "failed",
  };
  const MESSAGE_TYPES = new Set([
    "connector.message.received", "connector.message.queued", "connector.message.sent",
    "connector.message.failed", "connector.message.delivered",
  ]);
  const STATUS_OF_TYPE = {
    "connector.started": "CONNECTED",
    "connector.stopped": "STOPPED",
    "connector.error": "ERROR",
  };
  const STATUSES = new Set(["STOPPED", "STARTING", "CONNECTED", "ERROR", "DISABLED"]);
  const CLOSE_REASONS = {
    4400: "bad request", 4401: "signed out", 4403: "origin refused", 4404: "unknown connector",
    4408: "too slow", 1006: "connection lost",
  };

  const el = {
    status: document.getElementById("stream-status"),
    table: document.querySelector("#connector-table tbody"),
    feed: document.querySelector("#event-feed tbody"),
    canvas: document.getElementById("chart"),
    chartSummary: document.getElementById("chart-summary"),
    queueDepth: document.getElementById("queue-depth"),
    lag: document.getElementById("stream-lag"),
    behind: document.getElementById("stream-behind"),
    relay: document.getElementById("relay-lag"),
    busLag: document.getElementById("bus-lag"),
    lastSeq: document.getElementById("last-seq"),
  };

  const state = {
    connectors: new Map(), // id -> {id, display_name, kind, status, last_heartbeat, last_error, queue_depth, health}
    counts: new Map(), // connector id -> {sent: Map(minute -> n), received: …, failed: …}
    lastSeq: null, // the last seq this page has (from the snapshot, then from the stream)
    serverLatestSeq: 0, // from hello and pings
    lastEventTime: null, // ms, server clock
    clockOffset: 0, // server time - local time, ms
    stream: null, // the snapshot's `stream` block (unpushed events)
    bus: [], // the snapshot's `bus` rows: per JetStream stream, the bridge's cursor and lag
    window: 500,
    unacked: 0,
    ackedSeq: null,
  };

  const dashboard = {
    state: state,
    socket: null,
    socketUrls: [], // every URL opened, in order (tests check the `since` of reconnects)
    connects: 0,
    holdReconnect: false,
    reconnectNow: function () { clearTimeout(timers.reconnect); connect(); },
  };
  window.dashboard = dashboard;

  const timers = { ack: null, reconnect: null, refresh: null, poll: null };
  let backoff = 1000;
  let lastRefresh = 0;

  // --- helpers ---------------------------------------------------------------------------

  function serverNow() { return Date.now() + state.clockOffset; }
  function minuteOf(ms) { return Math.floor(ms / 60000); }

  function fmtAge(ms) {
    if (ms == null || isNaN(ms)) return "–";
    const s = Math.max(0, ms / 1000);
    if (s < 1) return "<1 s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const m = /T(\d\d:\d\d:\d\d(?:\.\d{1,3})?)/.exec(iso);
    return m ? m[1] : iso;
  }

  function summarize(data) {
    if (!data || typeof data !== "object") return "";
    const parts = [];
    for (const key of Object.keys(data)) {
      const v = data[key];
      if (v === null || v === undefined || v === "") continue;
      const text = typeof v === "object" ? JSON.stringify(v) : String(v);
      parts.push(key + "=" + text);
    }
    const out = parts.join(" ");
    return out.length > 200 ? out.slice(0, 199) + "…" : out;
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function flash(node) {
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
  }

  // --- stream status -----------------------------------------------------------------------

  function setStreamStatus(kind, text, title) {
    el.status.dataset.state = kind;
    el.status.className = "stream-status " + (kind === "live" ? "live" : kind === "error" ? "error" : "stale");
    el.status.textContent = text;
    el.status.title = title || "";
    root.dataset.stream = kind;
  }

  // --- connectors table ------------------------------------------------------------------------

  function upsertConnector(c) {
    const known = state.connectors.get(c.id) || { id: c.id, health: null };
    Object.assign(known, c);
    state.connectors.set(c.id, known);
    return known;
  }

  function renderConnector(c) {
    let tr = el.table.querySelector('tr[data-connector="' + CSS.escape(c.id) + '"]');
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.connector = c.id;
      for (let i = 0; i < 7; i++) tr.appendChild(document.createElement("td"));
      tr.children[5].className = "num";
      const empty = el.table.querySelector("tr.empty");
      if (empty) empty.remove();
      const after = Array.from(el.table.children).find((row) => row.dataset.connector > c.id);
      el.table.insertBefore(tr, after || null);
    }
    const td = tr.children;
    td[0].textContent = "";
    const strong = document.createElement("strong");
    strong.textContent = c.display_name || c.id;
    const small = document.createElement("div");
    small.className = "quiet mono";
    small.textContent = c.id;
    td[0].append(strong, small);
    td[1].textContent = c.kind || "";
    const previous = tr.dataset.status;
    tr.dataset.status = c.status || "";
    td[2].textContent = "";
    const badge = document.createElement("span");
    badge.className = "status-badge status-" + (c.status || "");
    badge.textContent = c.status || "?";
    td[2].appendChild(badge);
    td[3].dataset.iso = c.last_heartbeat || "";
    td[3].className = "age";
    td[4].textContent = c.health
      ? (c.health.ok ? "ok" : "failing") + (c.health.latency_ms != null ? " · " + c.health.latency_ms + " ms" : "")
      : "–";
    td[4].className = c.health && !c.health.ok ? "quiet warn" : "quiet";
    td[4].title = c.health && c.health.time ? "checked " + c.health.time : "";
    td[5].textContent = c.queue_depth == null ? "–" : String(c.queue_depth);
    td[6].textContent = c.last_error || "";
    td[6].className = "quiet";
    if (previous && previous !== tr.dataset.status) flash(tr);
    renderAges();
  }

  function removeConnector(id) {
    state.connectors.delete(id);
    state.counts.delete(id);
    const tr = el.table.querySelector('tr[data-connector="' + CSS.escape(id) + '"]');
    if (tr) tr.remove();
    scheduleDraw();
  }

  function renderAges() {
    const now = serverNow();
    for (const td of el.table.querySelectorAll("td.age")) {
      const iso = td.dataset.iso;
      td.textContent = iso ? fmtAge(now - Date.parse(iso)) + " ago" : "never";
      td.title = iso || "";
    }
    el.lag.textContent = state.lastEventTime ? fmtAge(now - state.lastEventTime) : "–";
    const behind = state.lastSeq == null ? null : Math.max(0, state.serverLatestSeq - state.lastSeq);
    el.behind.textContent = behind == null ? "–" : String(behind);
    el.behind.classList.toggle("warn", !!behind && behind > 0 && el.status.dataset.state !== "live");
    el.lastSeq.textContent = state.lastSeq == null ? "–" : String(state.lastSeq);
    if (state.stream) {
      const age = state.stream.oldest_unpushed_age_seconds;
      el.relay.textContent = state.stream.unpushed + (age != null ? " · " + fmtAge(age * 1000) : "");
      el.relay.classList.toggle("warn", age != null && age > 10);
    }
    if (el.busLag) {
      const lag = state.bus.reduce((most, row) => Math.max(most, row.lag), 0);
      el.busLag.textContent = state.bus.length ? String(lag) : "off";
      el.busLag.classList.toggle("warn", lag > 1000);
    }
    let depth = 0;
    for (const c of state.connectors.values()) depth += c.queue_depth || 0;
    el.queueDepth.textContent = String(depth);
  }

  // --- chart -----------------------------------------------------------------------------------

  function countsFor(id) {
    let c = state.counts.get(id);
    if (!c) {
      c = { sent: new Map(), received: new Map(), failed: new Map() };
      state.counts.set(id, c);
    }
    return c;
  }

  function loadChart(chart) {
    state.counts.clear();
    const start = minuteOf(Date.parse(chart.start));
    for (const id of Object.keys(chart.series)) {
      const c = countsFor(id);
      for (const key of SERIES) {
        (chart.series[id][key] || []).forEach(function (n, i) { if (n) c[key].set(start + i, n); });
      }
    }
  }

  function bump(id, series, ms) {
    const m = countsFor(id)[series];
    const minute = minuteOf(ms);
    m.set(minute, (m.get(minute) || 0) + 1);
  }

  let drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    const run = function () { drawPending = false; draw(); };
    if (document.hidden) setTimeout(run, 50); else requestAnimationFrame(run);
  }

  function cssVar(name, fallback) {
    const v = getComputedStyle(root).getPropertyValue(name).trim();
    return v || fallback;
  }

  function draw() {
    const canvas = el.canvas;
    const ids = Array.from(new Set([...state.connectors.keys(), ...state.counts.keys()])).sort();
    const last = minuteOf(serverNow());
    const first = last - cfg.minutes + 1;
    const totals = { sent: 0, received: 0, failed: 0 };
    const rows = ids.map(function (id) {
      const c = countsFor(id);
      const values = {};
      let max = 0;
      for (const key of SERIES) {
        values[key] = [];
        for (let m = first; m <= last; m++) {
          const n = c[key].get(m) || 0;
          values[key].push(n);
          totals[key] += n;
          if (n > max) max = n;
        }
        for (const minute of c[key].keys()) if (minute < first) c[key].delete(minute); // slide the window
      }
      return { id: id, values: values, max: max };
    });

    const cssWidth = canvas.clientWidth || 800;
    const cols = Math.max(1, Math.min(3, Math.floor(cssWidth / 380)));
    const panelH = 150;
    const nrows = Math.max(1, Math.ceil(rows.length / cols));
    const cssHeight = nrows * panelH;
    const dpr = window.devicePixelRatio || 1;
    canvas.style.height = cssHeight + "px";
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(cssHeight * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssWidth, cssHeight);

    const fg = cssVar("--body-fg", "#333");
    const quiet = cssVar("--body-quiet-color", "#666");
    const grid = cssVar("--hairline-color", "#e8e8e8");
    const colours = { sent: cssVar("--sent", "#2e8540"), received: cssVar("--received", "#2f6fb3"),
      failed: cssVar("--failed", "#c4314b") };
    ctx.font = "12px " + (cssVar("--font-family-primary", "sans-serif"));

    if (!rows.length) {
      ctx.fillStyle = quiet;
      ctx.fillText("No connectors you may view.", 12, 24);
    }
    const panelW = cssWidth / cols;
    rows.forEach(function (row, i) {
      const x0 = (i % cols) * panelW + 8;
      const y0 = Math.floor(i / cols) * panelH + 6;
      const w = panelW - 16;
      const top = y0 + 18;
      const h = panelH - 44;
      const label = (state.connectors.get(row.id) || {}).display_name || row.id;
      const sum = SERIES.map((k) => row.values[k].reduce((a, b) => a + b, 0));
      ctx.fillStyle = fg;
      ctx.textBaseline = "alphabetic";
      ctx.fillText(label, x0 + 30, y0 + 12);
      ctx.fillStyle = quiet;
      const right = sum.join(" / ");
      ctx.fillText(right, x0 + w - ctx.measureText(right).width, y0 + 12);
      // axes: 0 and the panel's max, minute ticks every 10 minutes
      const max = Math.max(1, row.max);
      ctx.strokeStyle = grid;
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x0 + 28, top + h + 0.5);
      ctx.lineTo(x0 + w, top + h + 0.5);
      ctx.moveTo(x0 + 28, top + 0.5);
      ctx.lineTo(x0 + w, top + 0.5);
      ctx.stroke();
      ctx.fillStyle = quiet;
      ctx.textBaseline = "middle";
      ctx.fillText(String(max), x0, top + 2);
      ctx.fillText("0", x0, top + h);
      const plotX = x0 + 30;
      const plotW = w - 30;
      const slot = plotW / cfg.minutes;
      const bar = Math.max(1, (slot - 2) / 3);
      ctx.textBaseline = "top";
      for (let m = 0; m < cfg.minutes; m++) {
        SERIES.forEach(function (key, k) {
          const n = row.values[key][m];
          if (!n) return;
          const bh = Math.max(1, (n / max) * h);
          ctx.fillStyle = colours[key];
          ctx.fillRect(plotX + m * slot + 1 + k * bar, top + h - bh, bar, bh);
        });
        const ago = cfg.minutes - 1 - m;
        if (ago % 10 === 0) {
          ctx.fillStyle = quiet;
          const t = ago === 0 ? "now" : "−" + ago + " min";
          const tw = ctx.measureText(t).width;
          const centre = plotX + (m + 0.5) * slot;
          ctx.fillText(t, Math.min(centre - tw / 2, plotX + plotW - tw), top + h + 4);
        }
      }
    });

    const points = totals.sent + totals.received + totals.failed;
    canvas.dataset.totalSent = String(totals.sent);
    canvas.dataset.totalReceived = String(totals.received);
    canvas.dataset.totalFailed = String(totals.failed);
    canvas.dataset.totalPoints = String(points);
    canvas.dataset.firstMinute = String(first);
    canvas.dataset.draws = String(parseInt(canvas.dataset.draws || "0", 10) + 1);
    canvas.setAttribute("aria-label", "Messages per minute per connector, last " + cfg.minutes + " minutes: " +
      totals.sent + " sent, " + totals.received + " received, " + totals.failed + " failed");
    el.chartSummary.textContent = "last " + cfg.minutes + " min: " + totals.sent + " sent · " +
      totals.received + " received · " + totals.failed + " failed";
  }

  // --- feed ------------------------------------------------------------------------------------

  function feedRow(ev) {
    const tr = document.createElement("tr");
    tr.dataset.seq = String(ev.seq);
    tr.dataset.type = ev.type;
    tr.dataset.connector = ev.connector || "";
    tr.className = "type-" + ev.type.replace(/\./g, "-");
    cell(tr, ev.seq, "num");
    cell(tr, fmtTime(ev.time), "mono").title = ev.time;
    cell(tr, ev.type, "type");
    cell(tr, ev.connector || "", "mono");
    cell(tr, summarize(ev.data), "data");
    return tr;
  }

  function prependFeed(tr) {
    el.feed.insertBefore(tr, el.feed.firstChild);
    while (el.feed.children.length > cfg.feedLimit) el.feed.lastChild.remove();
  }

  function notice(text) {
    const tr = document.createElement("tr");
    tr.className = "notice";
    const td = cell(tr, text);
    td.colSpan = 5;
    prependFeed(tr);
  }

  // --- events ----------------------------------------------------------------------------------

  function applyEvent(ev) {
    const id = ev.connector || ev.subject || "";
    const data = ev.data || {};
    if (ev.type === "connector.deleted") { removeConnector(id); return; }
    if (!id) return;
    let status = STATUS_OF_TYPE[ev.type];
    if (STATUSES.has(data.status) && (status || ev.type === "connector.updated" || ev.type === "connector.registered")) {
      status = data.status;
    }
    const known = state.connectors.get(id);
    if (ev.type === "connector.registered" && !known) {
      renderConnector(upsertConnector({ id: id, display_name: data.display_name || id, kind: data.kind || "",
        status: status || "STOPPED", last_heartbeat: null, last_error: "", queue_depth: 0 }));
      return;
    }
    if (!known) return;
    let changed = false;
    if (status) { known.status = status; changed = true; }
    if (ev.type === "connector.error") {
      known.last_error = String(data.error || data.message || data.code || "").slice(0, 200);
      changed = true;
    }
    if (ev.type === "connector.started") { known.last_error = ""; changed = true; }
    if (ev.type === "connector.updated" && data.display_name) { known.display_name = data.display_name; changed = true; }
    if (ev.type === "connector.health.check") {
      known.health = { ok: !!data.ok, latency_ms: data.latency_ms, time: ev.time };
      // As the server does: a passing check of a running connector settles its last error.
      if (data.ok && known.status === "CONNECTED") known.last_error = "";
      changed = true;
    }
    if (changed) renderConnector(known);
  }

  function onEvent(ev) {
    if (!ev || typeof ev.seq !== "number") return;
    if (state.lastSeq != null && ev.seq <= state.lastSeq) return; // already have it
    state.lastSeq = ev.seq;
    if (ev.seq > state.serverLatestSeq) state.serverLatestSeq = ev.seq;
    const t = Date.parse(ev.time);
    if (!isNaN(t)) state.lastEventTime = t;
    prependFeed(feedRow(ev));
    const series = SERIES_OF_TYPE[ev.type];
    if (series && ev.connector) {
      bump(ev.connector, series, isNaN(t) ? serverNow() : t);
      scheduleDraw();
    }
    applyEvent(ev);
    if (MESSAGE_TYPES.has(ev.type)) scheduleRefresh();
    state.unacked++;
    if (state.unacked >= Math.max(1, Math.floor(state.window / 2))) sendAck();
    else scheduleAck();
    renderAges();
  }

  // --- acks ------------------------------------------------------------------------------------

  function sendAck() {
    clearTimeout(timers.ack);
    timers.ack = null;
    const ws = dashboard.socket;
    if (!ws || ws.readyState !== WebSocket.OPEN || state.lastSeq == null) return;
    ws.send(JSON.stringify({ type: "ack", seq: state.lastSeq }));
    state.ackedSeq = state.lastSeq;
    state.unacked = 0;
  }

  function scheduleAck() {
    if (!timers.ack) timers.ack = setTimeout(sendAck, 200);
  }

  // --- websocket -------------------------------------------------------------------------------

  function socketUrl() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const since = state.lastSeq == null ? "" : "?since=" + encodeURIComponent(state.lastSeq);
    return proto + "//" + location.host + cfg.wsPath + since;
  }

  function connect() {
    clearTimeout(timers.reconnect);
    timers.reconnect = null;
    const old = dashboard.socket;
    if (old && old.readyState <= WebSocket.OPEN) {
      dashboard.socket = null; // its close must not schedule another reconnect
      old.close();
    }
    const url = socketUrl();
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      scheduleReconnect(null);
      return;
    }
    dashboard.socket = ws;
    dashboard.socketUrls.push(url);
    dashboard.connects++;
    if (el.status.dataset.state !== "stale") setStreamStatus("connecting", "connecting…");

    ws.onmessage = function (msg) {
      if (dashboard.socket !== ws) return;
      let frame;
      try { frame = JSON.parse(msg.data); } catch (e) { return; }
      if (frame.type === "hello") {
        backoff = 1000;
        state.window = frame.window || state.window;
        state.serverLatestSeq = frame.latest_seq || 0;
        if (state.lastSeq != null && frame.cursor > state.lastSeq) {
          // What we asked for is no longer in the log (retention): say so, and move on.
          notice("Events " + (state.lastSeq + 1) + "–" + frame.cursor + " are no longer in the event log.");
          state.lastSeq = frame.cursor;
        } else if (state.lastSeq == null) {
          state.lastSeq = frame.cursor;
        }
        setStreamStatus("live", "live", "since seq " + frame.cursor);
        renderAges();
      } else if (frame.type === "event") {
        onEvent(frame.event);
      } else if (frame.type === "ping") {
        if (typeof frame.latest_seq === "number") state.serverLatestSeq = frame.latest_seq;
        sendAck(); // on every ping, even with nothing new
        renderAges();
      }
    };
    ws.onclose = function (e) {
      if (dashboard.socket !== ws) return;
      dashboard.socket = null;
      scheduleReconnect(e.code);
    };
  }

  function scheduleReconnect(code) {
    const why = CLOSE_REASONS[code] || (code ? "closed (" + code + ")" : "closed");
    const delay = backoff;
    backoff = Math.min(backoff * 2, 10000);
    const kind = code === 4401 || code === 4403 ? "error" : "stale";
    setStreamStatus(kind, "reconnecting…", why + "; retrying in " + Math.round(delay / 1000) + " s");
    el.status.dataset.closeCode = code == null ? "" : String(code);
    clearTimeout(timers.reconnect);
    // `holdReconnect` (set from the console or a test) keeps the page disconnected until
    // dashboard.reconnectNow().
    if (!dashboard.holdReconnect) timers.reconnect = setTimeout(connect, delay);
    renderAges();
  }

  // --- snapshot --------------------------------------------------------------------------------

  async function fetchState(withChart) {
    const url = cfg.stateUrl + (withChart ? "" : "?chart=0");
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.redirected || !response.ok) throw new Error("state: HTTP " + response.status);
    return response.json();
  }

  function applySnapshot(snap, initial) {
    lastRefresh = Date.now();
    state.clockOffset = Date.parse(snap.now) - Date.now();
    state.stream = snap.stream;
    state.bus = snap.bus || [];
    if (snap.latest_seq > state.serverLatestSeq) state.serverLatestSeq = snap.latest_seq;
    // Statuses in a snapshot older than what the stream already told us would move them back.
    const fresh = initial || state.lastSeq == null || snap.latest_seq >= state.lastSeq;
    const seen = new Set();
    for (const c of snap.connectors) {
      seen.add(c.id);
      const known = state.connectors.get(c.id);
      const update = { id: c.id, display_name: c.display_name, kind: c.kind, last_heartbeat: c.last_heartbeat,
        queue_depth: c.queue_depth };
      if (fresh || !known) { update.status = c.status; update.last_error = c.last_error; }
      // The last check from the log, unless the stream already brought a newer one.
      if (c.health && !(known && known.health && Date.parse(known.health.time) > Date.parse(c.health.time))) {
        update.health = c.health;
      }
      renderConnector(upsertConnector(update));
    }
    if (fresh) {
      for (const id of Array.from(state.connectors.keys())) if (!seen.has(id)) removeConnector(id);
    }
    if (!state.connectors.size) {
      el.table.textContent = "";
      const tr = document.createElement("tr");
      tr.className = "empty";
      cell(tr, "No connectors you may view.").colSpan = 7;
      el.table.appendChild(tr);
    }
    if (initial) {
      loadChart(snap.chart);
      state.window = snap.ws_window || state.window;
      el.feed.textContent = "";
      for (const ev of snap.recent_events.slice().reverse()) prependFeed(feedRow(ev));
      state.lastSeq = snap.latest_seq;
      if (snap.recent_events.length) state.lastEventTime = Date.parse(snap.recent_events[0].time);
      scheduleDraw();
    }
    renderAges();
  }

  function scheduleRefresh() {
    // Queue depths change with message events: refresh soon, at most every 2 s.
    if (timers.refresh) return;
    const wait = Math.max(300, 2000 - (Date.now() - lastRefresh));
    timers.refresh = setTimeout(function () { timers.refresh = null; poll(); }, wait);
  }

  async function poll() {
    clearTimeout(timers.poll);
    try {
      applySnapshot(await fetchState(false), false);
    } catch (e) {
      // The socket shows the stream's health; a failed poll only leaves the numbers older.
    }
    timers.poll = setTimeout(poll, cfg.pollMs);
  }

  async function start() {
    setStreamStatus("connecting", "connecting…");
    let snap = null;
    while (!snap) {
      try {
        snap = await fetchState(true);
      } catch (e) {
        setStreamStatus("error", "reconnecting…", String(e && e.message));
        await new Promise((resolve) => setTimeout(resolve, backoff));
        backoff = Math.min(backoff * 2, 10000);
      }
    }
    backoff = 1000;
    applySnapshot(snap, true);
    connect();
    timers.poll = setTimeout(poll, cfg.pollMs);
    let minute = minuteOf(serverNow());
    setInterval(function () {
      renderAges();
      const now = minuteOf(serverNow());
      if (now !== minute) { minute = now; scheduleDraw(); } // the window slides
    }, 1000);
    window.addEventListener("resize", scheduleDraw);
  }

  start();
})();
