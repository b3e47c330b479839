/* WorkerRMQ dashboard: plain DOM code, no framework, no build step.
 *
 * The API key lives in sessionStorage only (gone when the tab closes) and is
 * sent as "Authorization: Bearer". Every text that comes from the API is put
 * into the page with textContent, never as HTML.
 */
"use strict";

(function () {
  const KEY_STORAGE = "workerrmq.apiKey";
  const REFRESH_MS = 2000;
  const INTERNAL_QUEUE = /^workerrmq\./;

  const $ = (id) => document.getElementById(id);

  let apiKey = null;
  let timer = null;
  let refreshing = false;
  let refreshAgain = false;
  // null: not asked yet; true: GET /api/v1/workers answers; false: it is not there (404).
  let workersApi = null;

  // -- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field || null;
    }
  }

  // The path the API lives under behind a proxy (URL_PREFIX), "" at the root.
  const ROOT = document.documentElement.dataset.root || "";

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + apiKey, Accept: "application/json" };
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(ROOT + path, init);
    } catch (err) {
      throw new ApiError(0, "network_error", "cannot reach the WorkerRMQ API (" + err.message + ")");
    }
    let data = null;
    if (response.status !== 204) {
      const text = await response.text();
      try {
        data = text ? JSON.parse(text) : null;
      } catch (_err) {
        data = null;
      }
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      let message = error.message || response.statusText || "HTTP " + response.status;
      const retry = response.headers.get("Retry-After");
      if (response.status === 503 && retry) message += " (retry in " + retry + " s)";
      throw new ApiError(response.status, error.code || "http_" + response.status, message, error.field);
    }
    return data;
  }

  const enc = encodeURIComponent;

  // -- small DOM helpers ------------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "className") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  /** Set an element's text only when it changed: keeps the DOM (and screen readers) calm. */
  function setText(node, text) {
    const value = text === null || text === undefined ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function setAttr(node, name, value) {
    if (value === null || value === undefined) {
      if (node.hasAttribute(name)) node.removeAttribute(name);
    } else if (node.getAttribute(name) !== String(value)) {
      node.setAttribute(name, String(value));
    }
  }

  /** Bring a tbody in line with *items*, keeping existing rows (and the focus in them). */
  function syncRows(tbody, items, keyOf, build, update) {
    const existing = new Map();
    for (const row of Array.from(tbody.rows)) existing.set(row.dataset.key, row);
    let previous = null;
    for (const item of items) {
      const key = String(keyOf(item));
      let row = existing.get(key);
      if (row) existing.delete(key);
      else {
        row = build(item);
        row.dataset.key = key;
      }
      update(row, item);
      const expected = previous ? previous.nextElementSibling : tbody.firstElementChild;
      if (expected !== row) tbody.insertBefore(row, expected);
      previous = row;
    }
    for (const row of existing.values()) row.remove();
  }

  function cell(col, className) {
    return el("td", { dataset: { col }, className });
  }

  function num(value) {
    return typeof value === "number" && isFinite(value) ? String(value) : "–";
  }

  function rate(value) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(1) : "–";
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (isNaN(date.getTime())) return String(iso);
    const time = date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    if (date.toDateString() === new Date().toDateString()) return time;
    return date.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + time;
  }

  function ago(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (isNaN(date.getTime())) return String(iso);
    const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
    if (seconds < 90) return seconds + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    return when(iso);
  }

  // -- messages ----------------------------------------------------------------------------------

  function announce(text) {
    setText($("alert"), "");
    $("status").textContent = text;
  }

  function alertError(text) {
    $("status").textContent = "";
    $("alert").textContent = text;
  }

  function clearFormError(form) {
    for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
    const box = form.querySelector(".form-error");
    if (box) box.textContent = "";
  }

  /** Show an API error at the form it came from, marking the field it names. */
  function showFormError(form, err, what) {
    const box = form.querySelector(".form-error");
    const text = what + " failed: " + err.message;
    if (box) box.textContent = text;
    alertError(text);
    const fieldName = err.field ? String(err.field).split(".")[0] : null;
    const control = fieldName ? form.elements.namedItem(fieldName) : null;
    if (control && control.setAttribute) {
      control.setAttribute("aria-invalid", "true");
      control.focus();
    }
  }

  // -- signing in and out -------------------------------------------------------------------------

  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE);
    } catch (_err) {
      return null;
    }
  }

  function showSignedIn(signedIn) {
    $("sign-in").hidden = signedIn;
    $("dashboard").hidden = !signedIn;
    $("section-nav").hidden = !signedIn;
    $("session-controls").hidden = !signedIn;
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("api-key");
    const errorBox = $("sign-in-error");
    const key = input.value.trim();
    input.removeAttribute("aria-invalid");
    errorBox.textContent = "";
    if (!key) {
      input.setAttribute("aria-invalid", "true");
      errorBox.textContent = "Enter an API key.";
      input.focus();
      return;
    }
    const button = event.submitter || $("sign-in-form").querySelector("button");
    button.disabled = true;
    apiKey = key;
    try {
      await api("GET", "/api/v1/consumers"); // any scope may read: proves the key works
    } catch (err) {
      apiKey = null;
      input.setAttribute("aria-invalid", "true");
      errorBox.textContent = "Sign-in failed: " + err.message;
      alertError("Sign-in failed: " + err.message);
      input.focus();
      return;
    } finally {
      button.disabled = false;
    }
    sessionStorage.setItem(KEY_STORAGE, key);
    input.value = "";
    showSignedIn(true);
    announce("Signed in.");
    $("main").focus();
    refresh();
  }

  function signOut(message) {
    apiKey = null;
    workersApi = null;
    clearTimeout(timer);
    timer = null;
    try {
      sessionStorage.removeItem(KEY_STORAGE);
      sessionStorage.clear();
    } catch (_err) {
      /* storage disabled: nothing kept */
    }
    for (const tbody of document.querySelectorAll("#dashboard tbody")) tbody.replaceChildren();
    showSignedIn(false);
    if (message) alertError(message);
    else announce("Signed out. The key was removed from this browser tab.");
    $("api-key").focus();
  }

  // -- refreshing -------------------------------------------------------------------------------

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (apiKey && $("auto-refresh").checked) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    if (!apiKey) return;
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    refreshing = true;
    clearTimeout(timer);
    try {
      await Promise.all([refreshAll(), refreshWarning()]);
    } finally {
      refreshing = false;
      if (refreshAgain && apiKey) {
        refreshAgain = false;
        refresh();
      } else {
        schedule();
      }
    }
  }

  async function refreshAll() {
    const filter = $("queue-filter").value.trim();
    const queuePath = "/api/v1/queues?page_size=500" + (filter ? "&name=" + enc(filter) : "");
    const [queues, consumers, connections, workers] = await Promise.allSettled([
      api("GET", queuePath),
      api("GET", "/api/v1/consumers?page_size=500"),
      api("GET", "/api/v1/connections"),
      workersApi === false ? Promise.resolve(null) : api("GET", "/api/v1/workers"),
    ]);
    const results = [queues, consumers, connections, workers];
    const refused = results.find((r) => r.status === "rejected" && r.reason.status === 401);
    if (refused) {
      signOut("Signed out: the API refused the key (" + refused.reason.message + ").");
      return;
    }

    const queueList = queues.status === "fulfilled" ? queues.value : null;
    sectionError("queues", queues);
    if (queueList) renderQueues(queueList);

    sectionError("consumers", consumers);
    // The first page of 500; the API shows credentials in target URLs and headers as ***.
    const consumerPage = consumers.status === "fulfilled" ? consumers.value : null;
    const consumerList = consumerPage ? consumerPage.items || [] : null;
    if (consumerList) {
      const counts = await deadLetterCounts(consumerList, queueList, !filter);
      if (!apiKey) return;
      renderConsumers(consumerList, counts, consumerPage.total || consumerList.length);
    }

    sectionError("connections", connections);
    if (connections.status === "fulfilled") renderConnections(connections.value || []);

    renderWorkers(workers, consumerList);

    const anyFailed = results.some((r) => r.status === "rejected" && !(r === workers && r.reason.status === 404));
    setText($("last-updated"), (anyFailed ? "Partly updated " : "Updated ") + new Date().toLocaleTimeString());
  }

  /** /readyz's warnings (such as "no worker is alive") in the banner above the sections. */
  async function refreshWarning() {
    let warnings = [];
    try {
      // Public, and answered with JSON also while unready (503).
      const response = await fetch(ROOT + "/readyz", { cache: "no-store", credentials: "omit" });
      const data = await response.json();
      if (data && Array.isArray(data.warnings)) warnings = data.warnings.map(String);
    } catch (_err) {
      /* unreachable or an older API: the sections say what failed */
    }
    const banner = $("service-warning");
    setText(banner, warnings.length ? "Warning: " + warnings.join(" ") : "");
    banner.hidden = warnings.length === 0;
  }

  function sectionError(section, result) {
    const box = $(section + "-error");
    setText(box, result.status === "rejected" ? "Could not load: " + result.reason.message : "");
  }

  /** Messages waiting in each consumer's dead-letter queue, by consumer id (null: unknown). */
  async function deadLetterCounts(consumers, queuePage, unfiltered) {
    const byName = new Map();
    const items = (queuePage && queuePage.items) || [];
    for (const queue of items) byName.set(queue.name, queue);
    const complete = Boolean(queuePage) && unfiltered && items.length >= (queuePage.total || 0);
    const counts = new Map();
    await Promise.all(consumers.map(async (consumer) => {
      const dlq = consumer.dead_letter_queue;
      if (!dlq) {
        counts.set(consumer.id, null);
      } else if (byName.has(dlq)) {
        counts.set(consumer.id, byName.get(dlq).messages);
      } else if (complete) {
        counts.set(consumer.id, 0); // not declared yet: nothing dead-lettered
      } else {
        try {
          counts.set(consumer.id, (await api("GET", "/api/v1/queues/" + enc(dlq))).messages);
        } catch (err) {
          counts.set(consumer.id, err.status === 404 ? 0 : null);
        }
      }
    }));
    return counts;
  }

  // -- queues -------------------------------------------------------------------------------------

  function renderQueues(page) {
    const showInternal = $("show-internal").checked;
    const all = page.items || [];
    const items = all.filter((q) => showInternal || !INTERNAL_QUEUE.test(q.name));
    const total = page.total || all.length;
    const hidden = all.length - items.length;
    setText($("queues-count"), items.length + " shown" +
      (hidden ? ", " + hidden + " internal hidden" : "") +
      (total > all.length ? ", " + total + " in all (first " + all.length + " listed)" : ""));
    $("queues-empty").hidden = items.length > 0;

    syncRows($("queues-table").tBodies[0], items, (q) => q.name, buildQueueRow, updateQueueRow);

    const names = $("queue-names");
    const wanted = items.map((q) => q.name);
    const current = Array.from(names.options).map((o) => o.value);
    if (wanted.join("\n") !== current.join("\n")) {
      names.replaceChildren(...wanted.map((name) => el("option", { value: name })));
    }
  }

  function buildQueueRow(queue) {
    const publish = el("button", { type: "button", className: "small" }, "Publish…");
    publish.addEventListener("click", () => {
      $("publish-queue").value = publish.closest("tr").dataset.key;
      $("publish-body").focus();
    });
    return el("tr", {},
      el("th", { scope: "row", dataset: { col: "name" } }),
      cell("ready", "num"), cell("unacked", "num"), cell("consumers", "num"),
      cell("publish-rate", "num"), cell("deliver-rate", "num"), cell("type"),
      el("td", { className: "actions" }, publish));
  }

  function updateQueueRow(row, q) {
    const c = row.cells;
    setText(c[0], q.name);
    setText(c[1], num(q.messages_ready));
    setText(c[2], num(q.messages_unacknowledged));
    setText(c[3], num(q.consumers));
    setText(c[4], rate(q.publish_rate));
    setText(c[5], rate(q.deliver_rate));
    setText(c[6], (q.type || "") + (q.durable === false ? ", transient" : ""));
    setAttr(row.querySelector("button"), "aria-label", "Publish a message to " + q.name);
  }

  // -- consumers -------------------------------------------------------------------------------------

  function renderConsumers(consumers, dlqCounts, total) {
    const shown = total > consumers.length ? consumers.length + " of " + total : String(consumers.length);
    setText($("consumers-count"), shown + (total === 1 ? " consumer" : " consumers"));
    $("consumers-empty").hidden = consumers.length > 0;
    syncRows($("consumers-table").tBodies[0], consumers, (c) => c.id, buildConsumerRow,
      (row, consumer) => updateConsumerRow(row, consumer, dlqCounts.get(consumer.id)));
  }

  function buildConsumerRow() {
    const replay = el("button", { type: "button", className: "small", dataset: { action: "replay" } }, "Replay");
    replay.addEventListener("click", () => replayDeadLetters(replay));
    const toggle = el("button", { type: "button", className: "small", dataset: { action: "toggle" } });
    toggle.addEventListener("click", () => toggleConsumer(toggle));
    const state = cell("state");
    state.append(el("span", { className: "state" }), el("span", { className: "sub" }));
    const lastError = cell("last-error", "error-cell");
    lastError.append(el("span", { className: "error-text" }), el("span", { className: "sub" }));
    const dead = cell("dead-letters", "dlq");
    dead.append(el("span", { className: "dlq-count", dataset: { col: "dead-letter-count" } }), " ", replay);
    return el("tr", {},
      el("th", { scope: "row", dataset: { col: "name" } }),
      cell("queue"), cell("target", "target"), state,
      cell("delivered", "num"), cell("failed", "num"), cell("retried", "num"),
      cell("dead-lettered", "num"), cell("in-flight", "num"),
      el("td", { dataset: { col: "circuit" } }, el("span", { className: "badge" })),
      lastError, dead,
      el("td", { className: "actions" }, toggle));
  }

  function updateConsumerRow(row, consumer, dlqCount) {
    const stats = consumer.stats || {};
    const c = row.cells;
    const name = consumer.name || consumer.id;
    row.dataset.id = consumer.id;
    row.dataset.name = name;
    setText(c[0], name);
    setText(c[1], consumer.queue);
    setText(c[2], consumer.target_url);
    setAttr(c[2], "title", consumer.target_url);

    const paused = consumer.state === "paused";
    setText(c[3].firstChild, consumer.state);
    setAttr(c[3].firstChild, "class", "state " + (paused ? "paused" : "running"));
    setText(c[3].lastChild, (stats.status || []).join(", ").replace(/_/g, " "));

    setText(c[4], num(stats.delivered));
    setText(c[5], num(stats.failed));
    setText(c[6], num(stats.retried));
    setText(c[7], num(stats.dead_lettered));
    setText(c[8], num(stats.in_flight));

    const circuit = stats.circuit || "closed";
    const badge = c[9].firstChild;
    setText(badge, circuit.replace(/_/g, "-"));
    setAttr(badge, "class", "badge circuit-" + circuit);

    const errorText = c[10].firstChild;
    setText(errorText, stats.last_error || "—");
    setAttr(errorText, "title", stats.last_error || null);
    setText(c[10].lastChild, stats.last_error_at ? when(stats.last_error_at) : "");

    const count = c[11].querySelector(".dlq-count");
    setText(count, dlqCount === null || dlqCount === undefined ? "?" : String(dlqCount));
    setAttr(c[11], "title", consumer.dead_letter_queue ? "in " + consumer.dead_letter_queue : null);
    const replay = c[11].querySelector("button");
    if (!replay.hasAttribute("aria-busy")) {
      setAttr(replay, "aria-label", "Replay the dead letters of " + name);
    }

    const toggle = c[12].querySelector("button");
    if (!toggle.hasAttribute("aria-busy")) {
      setText(toggle, paused ? "Resume" : "Pause");
      setAttr(toggle, "aria-label", (paused ? "Resume " : "Pause ") + name);
      toggle.dataset.state = consumer.state;
    }
  }

  async function replayDeadLetters(button) {
    const row = button.closest("tr");
    const name = row.dataset.name;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    setText(button, "Replaying…");
    announce("Replaying the dead letters of " + name + "…");
    try {
      const result = await api("POST", "/api/v1/consumers/" + enc(row.dataset.id) + "/dead-letters/replay", {});
      const n = result ? result.replayed : 0;
      announce("Replayed " + n + (n === 1 ? " message" : " messages") + " of " + name + ".");
    } catch (err) {
      if (err.status === 401) return signOut("Signed out: the API refused the key (" + err.message + ").");
      alertError("Replay of " + name + " failed: " + err.message);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      setText(button, "Replay");
    }
    refresh();
  }

  async function toggleConsumer(button) {
    const row = button.closest("tr");
    const name = row.dataset.name;
    const action = button.dataset.state === "paused" ? "resume" : "pause";
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const consumer = await api("POST", "/api/v1/consumers/" + enc(row.dataset.id) + "/" + action);
      announce((action === "pause" ? "Paused " : "Resumed ") + name + "; it is now " + consumer.state + ".");
    } catch (err) {
      if (err.status === 401) return signOut("Signed out: the API refused the key (" + err.message + ").");
      alertError((action === "pause" ? "Pausing " : "Resuming ") + name + " failed: " + err.message);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
    refresh();
  }

  // -- connections and workers -----------------------------------------------------------------------

  function renderConnections(connections) {
    setText($("connections-count"), connections.length + (connections.length === 1 ? " connection" : " connections"));
    $("connections-empty").hidden = connections.length > 0;
    syncRows($("connections-table").tBodies[0], connections, (c) => c.name,
      () => el("tr", {},
        el("th", { scope: "row", dataset: { col: "client" } }, el("span", {}), el("span", { className: "sub" })),
        cell("user"), cell("channels", "num"), cell("state"), cell("connected")),
      (row, conn) => {
        const props = conn.client_properties || {};
        const client = props.connection_name || props.product || conn.name;
        const c = row.cells;
        setText(c[0].firstChild, client);
        setText(c[0].lastChild, conn.peer_host ? conn.peer_host + (conn.peer_port ? ":" + conn.peer_port : "") : "");
        setAttr(c[0], "title", conn.name);
        setText(c[1], conn.user);
        setText(c[2], num(conn.channels));
        setText(c[3], conn.state);
        setText(c[4], when(conn.connected_at));
      });
  }

  /** What a worker runs: consumer names (by id, from the consumer list) with their status. */
  function consumersText(value, namesById) {
    if (Array.isArray(value)) {
      if (!value.length) return "none";
      return value.map((v) => {
        if (!v || typeof v !== "object") return String(v);
        const id = v.consumer_id || v.id;
        const name = v.name || namesById.get(id) || id || JSON.stringify(v);
        const details = [];
        if (v.status) details.push(String(v.status).replace(/_/g, " "));
        if (typeof v.in_flight === "number") details.push(v.in_flight + " in flight");
        return details.length ? name + " (" + details.join(", ") + ")" : name;
      }).join("; ");
    }
    if (value === null || value === undefined) return "";
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  function renderWorkers(result, consumers) {
    const errorBox = $("workers-error");
    if (result.status === "rejected" && result.reason.status === 404) {
      workersApi = false; // this API has no /api/v1/workers: fall back to consumer statistics
    } else if (result.status === "rejected") {
      setText(errorBox, "Could not load: " + result.reason.message);
      return;
    } else if (workersApi !== false) {
      workersApi = true;
    }
    setText(errorBox, "");

    if (workersApi) {
      const namesById = new Map((consumers || []).map((c) => [c.id, c.name || c.id]));
      const data = result.value;
      const workers = Array.isArray(data) ? data : (data && data.items) || [];
      $("workers-list-wrap").hidden = false;
      $("workers-by-consumer-wrap").hidden = true;
      $("workers-note").hidden = true;
      $("workers-empty").hidden = workers.length > 0;
      setText($("workers-count"), workers.length + (workers.length === 1 ? " worker" : " workers"));
      syncRows($("workers-table").tBodies[0], workers, (w) => w.id,
        () => el("tr", {}, el("th", { scope: "row", dataset: { col: "id" } }), cell("host"), cell("pid", "num"),
          cell("version"), cell("started"), cell("heartbeat"), cell("state"), cell("consumers", "consumers-cell")),
        (row, w) => {
          const c = row.cells;
          setText(c[0], w.id);
          setText(c[1], w.host);
          setText(c[2], w.pid);
          setText(c[3], w.version);
          setText(c[4], when(w.started_at));
          setText(c[5], ago(w.last_heartbeat));
          setAttr(c[5], "title", w.last_heartbeat || null);
          setText(c[6], w.state);
          setAttr(c[6], "class", "worker-" + String(w.state || "unknown").replace(/[^a-z_-]/gi, ""));
          setText(c[7], consumersText(w.consumers, namesById));
        });
      return;
    }

    $("workers-list-wrap").hidden = true;
    $("workers-by-consumer-wrap").hidden = false;
    const note = $("workers-note");
    note.hidden = false;
    setText(note, "This API has no worker list; shown here is how many workers report running each consumer.");
    if (!consumers) return;
    const most = consumers.reduce((m, c) => Math.max(m, (c.stats && c.stats.workers) || 0), 0);
    setText($("workers-count"), "at least " + most + (most === 1 ? " worker" : " workers"));
    $("workers-empty").hidden = consumers.length > 0;
    syncRows($("workers-by-consumer-table").tBodies[0], consumers, (c) => c.id,
      () => el("tr", {}, el("th", { scope: "row", dataset: { col: "name" } }), cell("workers", "num"), cell("status")),
      (row, consumer) => {
        const stats = consumer.stats || {};
        setText(row.cells[0], consumer.name || consumer.id);
        setText(row.cells[1], num(stats.workers));
        setText(row.cells[2], (stats.status || []).join(", ").replace(/_/g, " "));
      });
  }

  // -- forms -----------------------------------------------------------------------------------------------

  async function submitForm(form, what, request, done) {
    clearFormError(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const result = await request();
      done(result);
    } catch (err) {
      if (err.status === 401) return signOut("Signed out: the API refused the key (" + err.message + ").");
      showFormError(form, err, what);
    } finally {
      button.disabled = false;
    }
    refresh();
  }

  function numberOrUndefined(input) {
    const text = input.value.trim();
    if (!text) return undefined;
    const value = Number(text);
    return isFinite(value) ? value : text; // let the API name the bad field
  }

  function onCreateQueue(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const name = $("queue-name").value.trim();
    const body = { name, type: $("queue-type").value, durable: $("queue-durable").checked };
    submitForm(form, "Creating the queue", () => api("POST", "/api/v1/queues", body), (queue) => {
      announce("Queue " + queue.name + " is ready.");
      $("queue-name").value = "";
    });
  }

  function onPublish(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const queue = $("publish-queue").value.trim();
    const raw = $("publish-body").value;
    let message;
    if ($("publish-json").checked) {
      try {
        message = { body: JSON.parse(raw) };
      } catch (err) {
        clearFormError(form);
        showFormError(form, new ApiError(0, "invalid_input", "the body is not valid JSON (" + err.message + ")", "body"),
          "Publishing");
        return;
      }
    } else {
      message = { body: raw };
    }
    if (!queue) {
      clearFormError(form);
      showFormError(form, new ApiError(0, "invalid_input", "choose a queue", "queue"), "Publishing");
      return;
    }
    submitForm(form, "Publishing", () => api("POST", "/api/v1/queues/" + enc(queue) + "/messages", message),
      (result) => {
        announce("Published message " + result.message_id + " to " + queue + ".");
        $("publish-body").value = "";
      });
  }

  function onCreateConsumer(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const body = {
      queue: $("consumer-queue").value.trim(),
      target_url: $("consumer-target").value.trim(),
      create_queue: $("consumer-create-queue").checked,
    };
    const name = $("consumer-name").value.trim();
    if (name) body.name = name;
    const attempts = numberOrUndefined($("consumer-max-attempts"));
    if (attempts !== undefined) body.max_attempts = attempts;
    const delay = numberOrUndefined($("consumer-initial-delay"));
    if (delay !== undefined) body.initial_delay = delay;
    if (!body.target_url) delete body.target_url; // the API may have a DEFAULT_TARGET_URL
    submitForm(form, "Creating the consumer", () => api("POST", "/api/v1/consumers", body), (consumer) => {
      announce("Consumer " + consumer.name + " created on " + consumer.queue + "; workers start it within a second.");
      $("consumer-name").value = "";
    });
  }

  // -- start -------------------------------------------------------------------------------------------------

  function start() {
    $("sign-in-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut());
    $("refresh-now").addEventListener("click", () => refresh());
    $("auto-refresh").addEventListener("change", () => {
      announce($("auto-refresh").checked ? "Live refresh on." : "Live refresh off.");
      if ($("auto-refresh").checked) refresh();
      else schedule();
    });
    $("show-internal").addEventListener("change", () => refresh());
    let filterTimer = null;
    $("queue-filter").addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(refresh, 300);
    });
    $("queue-form").addEventListener("submit", onCreateQueue);
    $("publish-form").addEventListener("submit", onPublish);
    $("consumer-form").addEventListener("submit", onCreateConsumer);

    apiKey = storedKey();
    showSignedIn(Boolean(apiKey));
    if (apiKey) refresh();
    else $("api-key").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
