// The live risk page: follows GET /api/v1/stream (websocket) and renders four panels.
//
// Protocol (api/stream.py): the first client message is
//   {"type":"subscribe","token":"pv_…","filters":{},"resume":{"epoch":…,"seq":…}}
// The server answers with a `snapshot` frame (the whole state; it replaces everything) or, when
// the resume cursor is still held, a `resumed` frame followed by the missed `deltas`. Frames
// after that are `deltas`, `heartbeat`, `pong` and `error`. Close codes 4401 (token refused) and
// 4403 (role may not read risk) stop the page; 4008 (slow consumer) reconnects for a new
// snapshot; any other close reconnects with `resume`.
//
// Every value from the server reaches the DOM through textContent or attributes set one by
// one; no HTML is built from data.

"use strict";

(() => {
  const TOKEN_KEY = "propvisor.risk.token";
  const TOP_ACCOUNTS = 25;
  const MAX_ALERTS_SHOWN = 100;
  const MAX_BREACHES_KEPT = 200;
  const MAX_BREACHES_SHOWN = 100;
  const RENDER_EVERY_MS = 200;
  const SILENCE_MS = 15000; // the server sends a heartbeat every 5 s when idle
  const BOOKS = ["funded", "evaluation"];

  // -- the state the stream builds ---------------------------------------------------------

  const state = {
    epoch: null, // of the last frame applied
    seq: null, // of the last message applied (the resume cursor)
    firm: null,
    accounts: new Map(), // account id -> account message
    exposure: new Map(), // book -> exposure message
    alerts: new Map(), // alert id -> alert
    breaches: [], // breach messages, oldest first
    lagMs: null,
  };

  const dirty = { accounts: true, exposure: true, alerts: true, breaches: true, status: true };

  function clearState() {
    state.epoch = null;
    state.seq = null;
    state.accounts.clear();
    state.exposure.clear();
    state.alerts.clear();
    state.breaches = [];
    state.lagMs = null;
    markAll();
  }

  function markAll() {
    for (const key of Object.keys(dirty)) dirty[key] = true;
    scheduleRender();
  }

  function apply(message) {
    switch (message.type) {
      case "account":
        state.accounts.set(message.row.account_id, message);
        dirty.accounts = true;
        break;
      case "exposure":
        state.exposure.set(message.book, message);
        dirty.exposure = true;
        break;
      case "alert":
        state.alerts.set(message.alert.id, message.alert);
        dirty.alerts = true;
        break;
      case "alert_ack":
        state.alerts.delete(message.alert_id);
        dirty.alerts = true;
        break;
      case "breach":
        state.breaches.push(message);
        if (state.breaches.length > MAX_BREACHES_KEPT) {
          state.breaches.splice(0, state.breaches.length - MAX_BREACHES_KEPT);
        }
        dirty.breaches = true;
        break;
      default: // "event": passes, failures, pauses… are not shown
        break;
    }
  }

  function onSnapshot(frame) {
    clearState();
    state.epoch = frame.epoch;
    state.seq = frame.seq;
    state.firm = frame.firm_currency;
    for (const message of frame.messages) apply(message);
    setDetail(`snapshot of ${frame.messages.length} messages (${frame.reason})`);
  }

  function onDeltas(frame) {
    let newest = null;
    for (const message of frame.messages) {
      apply(message);
      if (state.seq === null || message.seq > state.seq) state.seq = message.seq;
      if (message.type === "account") newest = message;
    }
    if (newest !== null) {
      state.lagMs = Math.max(0, Date.now() - newest.applied_ns / 1e6);
    }
    dirty.status = true;
  }

  function onFrame(frame) {
    lastFrameAt = Date.now();
    switch (frame.type) {
      case "snapshot":
        attempt = 0;
        resumable = true;
        setConnection("connected");
        onSnapshot(frame);
        break;
      case "resumed":
        attempt = 0;
        setConnection("connected");
        state.epoch = frame.epoch;
        setDetail(`resumed after seq ${frame.after}`);
        break;
      case "deltas":
        onDeltas(frame);
        break;
      case "error":
        setDetail(`server: ${frame.detail}`);
        break;
      default: // heartbeat, pong
        break;
    }
    scheduleRender();
  }

  // -- the connection ------------------------------------------------------------------------

  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let lastFrameAt = 0;
  let connection = "idle";
  let detail = "";
  let resumable = false; // whether the next subscribe may resume from the cursor

  function getToken() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function streamUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/api/v1/stream`;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    const token = getToken();
    if (!token) {
      setConnection("idle");
      setDetail("enter an API token to connect");
      return;
    }
    setConnection(attempt === 0 && state.epoch === null ? "connecting" : "reconnecting");
    const ws = new WebSocket(streamUrl());
    socket = ws;
    lastFrameAt = Date.now();
    ws.onopen = () => {
      if (ws !== socket) return;
      const subscribe = { type: "subscribe", token, filters: {} };
      if (resumable && state.epoch !== null && state.seq !== null) {
        subscribe.resume = { epoch: state.epoch, seq: state.seq };
      }
      ws.send(JSON.stringify(subscribe));
      lastFrameAt = Date.now();
    };
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (error) {
        setDetail(`unreadable frame: ${error}`);
        return;
      }
      onFrame(frame);
    };
    ws.onclose = (event) => {
      if (ws !== socket) return;
      socket = null;
      closed(event.code, event.reason);
    };
  }

  function closed(code, reason) {
    if (code === 4401) {
      sessionStorage.removeItem(TOKEN_KEY);
      clearState();
      setConnection("unauthorized");
      setDetail(reason || "the token was refused");
      showTokenForm(true);
      return;
    }
    if (code === 4403) {
      setConnection("forbidden");
      setDetail(reason || "this token may not read the risk stream");
      showTokenForm(true);
      return;
    }
    if (code === 4008) {
      // Dropped as a slow consumer: what it missed is likely more than a resume can carry, so
      // the next subscribe asks for a snapshot.
      resumable = false;
    }
    const delay = Math.min(15000, 500 * 2 ** attempt) + Math.floor(Math.random() * 250);
    attempt += 1;
    setConnection("reconnecting");
    setDetail(`closed (${code}${reason ? `: ${reason}` : ""}); retrying in ${(delay / 1000).toFixed(1)} s`);
    retryTimer = setTimeout(connect, delay);
  }

  function disconnect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (socket !== null) {
      const ws = socket;
      socket = null;
      ws.close(1000, "page closed the stream");
    }
  }

  // A connection that has not opened, or has been silent past the heartbeat interval, for
  // SILENCE_MS is dropped and reopened.
  setInterval(() => {
    if (socket !== null && socket.readyState <= WebSocket.OPEN
        && Date.now() - lastFrameAt > SILENCE_MS) {
      const ws = socket;
      socket = null;
      ws.close(4000, "no heartbeat");
      closed(4000, "no frame for 15 s");
    }
  }, 2000);

  // -- acknowledging ---------------------------------------------------------------------------

  const ACK_TRIES = 5;
  const ACK_RETRY_MS = 400;

  async function postAcknowledge(alertId, token) {
    // An alert reaches the stream a moment before the hub writes it to the database; until
    // then the endpoint answers 404, so a 404 is retried a few times.
    for (let tried = 1; ; tried += 1) {
      const response = await fetch(`/api/v1/alerts/${encodeURIComponent(alertId)}/acknowledge`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ note: "acknowledged on the live risk page" }),
      });
      if (response.status !== 404 || tried >= ACK_TRIES) return response;
      await new Promise((resolve) => setTimeout(resolve, ACK_RETRY_MS));
    }
  }

  async function acknowledge(alertId, item) {
    const button = item.querySelector("button");
    const error = item.querySelector(".error");
    const token = getToken();
    error.textContent = "";
    if (!token) {
      error.textContent = "no token";
      return;
    }
    button.disabled = true;
    button.textContent = "Acknowledging…";
    try {
      const response = await postAcknowledge(alertId, token);
      if (response.ok || response.status === 409) {
        // Done (409: someone else did it); the alert leaves the feed when the stream's
        // alert_ack arrives.
        button.textContent = "Acknowledged";
        item.classList.add("acked");
        return;
      }
      let problem = `${response.status}`;
      try {
        const body = await response.json();
        problem = `${response.status} ${body.title || ""}: ${body.detail || ""}`;
      } catch (_) {
        // not a problem document
      }
      throw new Error(problem);
    } catch (failure) {
      error.textContent = `not acknowledged: ${failure.message}`;
      button.disabled = false;
      button.textContent = "Acknowledge";
    }
  }

  // -- formatting ------------------------------------------------------------------------------

  const GROUPED = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const TWO = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function money(cents) {
    if (cents === null || cents === undefined) return "–";
    const whole = Math.abs(Math.round(cents));
    const units = Math.floor(whole / 100);
    const rest = String(whole % 100).padStart(2, "0");
    return `${cents < 0 ? "-" : ""}${GROUPED.format(units)}.${rest}`;
  }

  function signed(text, value) {
    return value > 0 ? `+${text}` : text;
  }

  function pct(value) {
    return value === null || value === undefined ? "–" : `${value.toFixed(1)}%`;
  }

  function clock(ns) {
    const date = new Date(Math.floor(ns / 1e6));
    return date.toISOString().slice(11, 19);
  }

  function stamp(ns) {
    return new Date(Math.floor(ns / 1e6)).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  }

  function level(used) {
    if (used === null) return "none";
    if (used >= 90) return "critical";
    if (used >= 75) return "high";
    if (used >= 50) return "watch";
    return "ok";
  }

  function used(row) {
    const values = [row.daily_used_pct, row.max_used_pct].filter((v) => v !== null);
    return values.length ? Math.max(...values) : null;
  }

  // -- DOM helpers (text only) -----------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

  // -- panels ------------------------------------------------------------------------------------

  function topAccounts() {
    const ranked = [];
    for (const message of state.accounts.values()) {
      const value = used(message.row);
      const score = value === null ? -Infinity : value;
      if (ranked.length === TOP_ACCOUNTS && score <= ranked[ranked.length - 1].score) continue;
      let i = ranked.length;
      while (i > 0 && ranked[i - 1].score < score) i -= 1;
      ranked.splice(i, 0, { score, message });
      if (ranked.length > TOP_ACCOUNTS) ranked.pop();
    }
    return ranked.map((entry) => entry.message);
  }

  function meter(value) {
    const cell = el("td", { class: `used lvl-${level(value)}` });
    const bar = el("span", { class: "meter", "aria-hidden": "true" });
    const fill = el("span", { class: "fill" });
    fill.style.width = `${Math.max(0, Math.min(100, value ?? 0))}%`;
    bar.append(fill);
    cell.append(bar, el("span", { class: "val" }, pct(value)));
    return cell;
  }

  function accountRow(message) {
    const row = message.row;
    const top = used(row);
    const status = row.frozen ? `${row.status} · frozen` : row.status;
    const equity = row.currency === state.firm ? money(row.equity) : `${money(row.equity)} ${row.currency}`;
    return el(
      "tr",
      {
        class: `lvl-${level(top)}`,
        "data-testid": "account-row",
        "data-account-id": row.account_id,
        "data-used": top === null ? "" : top,
      },
      el("td", { class: "mono", title: row.account_id }, row.account_id),
      el("td", { class: "mono", title: message.trader_id ?? "" }, message.trader_id ?? "–"),
      el("td", { class: "plan", title: `${row.plan} / ${row.phase}` }, `${row.plan} / ${row.phase}`),
      el("td", {}, row.book),
      el("td", { class: "num", title: `balance ${money(row.balance)} ${row.currency}` }, equity),
      meter(row.daily_used_pct),
      meter(row.max_used_pct),
      el("td", { class: `status st-${row.status}${row.frozen ? " frozen" : ""}` }, status),
    );
  }

  function renderAccounts() {
    const shown = topAccounts();
    $("accounts-body").replaceChildren(...shown.map(accountRow));
    $("accounts-count").textContent = state.accounts.size
      ? `top ${shown.length} of ${state.accounts.size}`
      : "";
    $("accounts-empty").hidden = shown.length > 0;
  }

  function notionalCell(notional, widest, unpriced) {
    const cell = el("td", { class: `num notional ${notional < 0 ? "short" : "long"}` });
    const bar = el("span", { class: "meter", "aria-hidden": "true" });
    const fill = el("span", { class: "fill" });
    fill.style.width = `${widest ? Math.round((Math.abs(notional) * 100) / widest) : 0}%`;
    bar.append(fill);
    cell.append(bar, el("span", { class: "val" }, signed(money(notional), notional)));
    if (unpriced) cell.title = `${unpriced} account(s) without a quote are left out`;
    return cell;
  }

  function exposureTable(lines, kind, firm) {
    const widest = Math.max(0, ...lines.map((line) => Math.abs(line.notional)));
    const isSymbols = kind === "symbol";
    const head = el(
      "tr",
      {},
      el("th", {}, isSymbols ? "Symbol" : "Currency"),
      el("th", { class: "num" }, isSymbols ? "Lots" : "Net amount"),
      el("th", { class: "num" }, `Notional ${firm}`),
      el("th", { class: "num" }, "Accts"),
    );
    const body = el("tbody");
    for (const line of lines) {
      const amount = isSymbols ? TWO.format(line.amount) : GROUPED.format(line.amount);
      body.append(
        el(
          "tr",
          {
            "data-testid": `exposure-${kind}-row`,
            "data-name": line.name,
            "data-notional": line.notional,
          },
          el("td", { class: "mono" }, line.name),
          el("td", { class: "num" }, signed(amount, line.amount)),
          notionalCell(line.notional, widest, line.unpriced),
          el("td", { class: "num" }, line.unpriced ? `${line.accounts} (${line.unpriced}?)` : line.accounts),
        ),
      );
    }
    return el("table", { class: "compact" }, el("thead", {}, head), body);
  }

  function renderExposure() {
    let newest = 0;
    for (const book of BOOKS) {
      const holder = $(`exposure-${book}`).querySelector(".tables");
      const update = state.exposure.get(book);
      if (!update || (update.currencies.length === 0 && update.symbols.length === 0)) {
        holder.replaceChildren(el("p", { class: "empty" }, "No open exposure."));
        continue;
      }
      newest = Math.max(newest, update.at_ns);
      holder.replaceChildren(
        exposureTable(update.currencies, "currency", update.currency),
        exposureTable(update.symbols, "symbol", update.currency),
      );
    }
    $("exposure-asof").textContent = newest ? `as of ${clock(newest)} UTC` : "";
  }

  const alertItems = new Map(); // alert id -> its <li>, kept while the alert is open

  function alertItem(alert) {
    const button = el("button", { type: "button", "data-testid": "alert-ack" }, "Acknowledge");
    const item = el(
      "li",
      {
        class: `alert sev-${alert.severity}`,
        "data-testid": "alert",
        "data-alert-id": alert.id,
        "data-severity": alert.severity,
        "data-kind": alert.kind,
        "data-account-id": alert.account_id,
        "data-raised-ns": alert.raised_ns,
      },
      el(
        "div",
        { class: "head" },
        el("span", { class: "badge" }, alert.severity),
        el("span", { class: "rule", title: alert.rule_name }, alert.rule_name),
        el("time", { title: stamp(alert.raised_ns) }, clock(alert.raised_ns)),
      ),
      el("p", { class: "msg", "data-testid": "alert-message" }, alert.message),
      el(
        "div",
        { class: "foot" },
        el(
          "span",
          { class: "mono muted" },
          [alert.account_id, alert.trader_id, alert.subject].filter(Boolean).join(" · "),
        ),
        el("span", { class: "error", "data-testid": "alert-error" }),
        button,
      ),
    );
    button.addEventListener("click", () => acknowledge(alert.id, item));
    return item;
  }

  // While the pointer is over the feed it holds still (no entry moves under a button about to
  // be clicked): new alerts wait, and acknowledged ones are marked, not removed, until it leaves.
  let feedHeld = false;

  function alertCounts(open, shown, waiting) {
    const critical = open.filter((alert) => alert.severity === "critical").length;
    const parts = [`${open.length} open`];
    if (critical) parts.push(`${critical} critical`);
    if (waiting) parts.push(`held: ${waiting} new`);
    else if (open.length > shown) parts.push(`newest ${shown} shown`);
    $("alerts-count").textContent = open.length ? parts.join(" · ") : "";
  }

  function holdAlerts(open) {
    for (const [id, item] of alertItems) {
      if (!state.alerts.has(id) && !item.classList.contains("gone")) {
        item.classList.add("acked", "gone");
        const button = item.querySelector("button");
        button.disabled = true;
        button.textContent = "Acknowledged";
      }
    }
    const list = $("alerts-list");
    const top = list.firstElementChild;
    const since = top ? Number(top.dataset.raisedNs) : -Infinity;
    const waiting = open.filter((alert) => alert.raised_ns > since).length;
    alertCounts(open, list.children.length, waiting);
  }

  function renderAlerts() {
    const open = [...state.alerts.values()].sort(
      (a, b) => b.raised_ns - a.raised_ns || (a.id < b.id ? 1 : -1),
    );
    if (feedHeld) {
      holdAlerts(open);
      return;
    }
    for (const id of alertItems.keys()) {
      if (!state.alerts.has(id)) alertItems.delete(id);
    }
    const shown = open.slice(0, MAX_ALERTS_SHOWN).map((alert) => {
      let item = alertItems.get(alert.id);
      if (!item) {
        item = alertItem(alert);
        alertItems.set(alert.id, item);
      }
      return item;
    });
    const list = $("alerts-list");
    const same = shown.length === list.children.length
      && shown.every((item, i) => list.children[i] === item);
    if (!same) list.replaceChildren(...shown);
    alertCounts(open, shown.length, 0);
    $("alerts-empty").hidden = open.length > 0;
  }

  function breachItem(message) {
    const event = message.event;
    const rule = event.rule.replaceAll("_", " ");
    return el(
      "li",
      {
        class: `breach act-${event.action}`,
        "data-testid": "breach-row",
        "data-account-id": event.account_id,
        "data-rule": event.rule,
      },
      el(
        "div",
        { class: "head" },
        el("span", { class: "badge" }, event.action.replaceAll("_", " ")),
        el("span", { class: "rule" }, rule),
        el("span", { class: "mono", title: message.trader_id ?? "" }, event.account_id),
        el("time", { title: `event time ${stamp(event.ts_ns)}` }, clock(event.ts_ns)),
      ),
      el(
        "div",
        { class: "muted" },
        `value ${TWO.format(event.value)} · limit ${TWO.format(event.limit)} · ${event.phase}`,
      ),
    );
  }

  function renderBreaches() {
    const shown = state.breaches.slice(-MAX_BREACHES_SHOWN).reverse();
    $("breaches-list").replaceChildren(...shown.map(breachItem));
    $("breaches-count").textContent = state.breaches.length
      ? `latest ${shown.length} · event time`
      : "";
    $("breaches-empty").hidden = shown.length > 0;
  }

  function setConnection(value) {
    connection = value;
    dirty.status = true;
    scheduleRender();
  }

  function setDetail(value) {
    detail = value;
    dirty.status = true;
    scheduleRender();
  }

  function renderStatus() {
    const box = $("status");
    box.dataset.state = connection;
    box.dataset.seq = state.seq ?? "";
    box.dataset.epoch = state.epoch ?? "";
    $("status-state").textContent = connection;
    $("status-seq").textContent = state.seq === null ? "–" : GROUPED.format(state.seq);
    $("status-lag").textContent = state.lagMs === null ? "–" : `${Math.round(state.lagMs)} ms`;
    $("status-currency").textContent = state.firm ?? "–";
    $("status-detail").textContent = detail;
  }

  let renderTimer = null;

  function scheduleRender() {
    if (renderTimer === null) renderTimer = setTimeout(render, RENDER_EVERY_MS);
  }

  function render() {
    renderTimer = null;
    if (dirty.accounts) renderAccounts();
    if (dirty.exposure) renderExposure();
    if (dirty.alerts) renderAlerts();
    if (dirty.breaches) renderBreaches();
    if (dirty.status) renderStatus();
    for (const key of Object.keys(dirty)) dirty[key] = false;
  }

  // -- the token ---------------------------------------------------------------------------------

  function showTokenForm(open) {
    document.body.classList.toggle("needs-token", open);
    $("token-input").placeholder = getToken() ? "saved for this tab" : "pv_…";
  }

  function takeTokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = fragment.get("token");
    if (!token) return false;
    sessionStorage.setItem(TOKEN_KEY, token.trim());
    // The token stays out of the address bar and the history.
    history.replaceState(null, "", location.pathname + location.search);
    return true;
  }

  function restart() {
    disconnect();
    clearState();
    resumable = false;
    attempt = 0;
    showTokenForm(!getToken());
    connect();
  }

  function start() {
    const feed = $("alerts-list");
    feed.addEventListener("pointerenter", () => {
      feedHeld = true;
    });
    feed.addEventListener("pointerleave", () => {
      feedHeld = false;
      dirty.alerts = true;
      scheduleRender();
    });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = $("token-input");
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = "";
      restart();
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      restart();
    });
    window.addEventListener("hashchange", () => {
      if (takeTokenFromFragment()) restart();
    });
    takeTokenFromFragment();
    restart();
  }

  start();
})();
