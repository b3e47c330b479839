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
  // The consumer whose dead letters are shown ({id, name, queue}), or null.
  let deadLetterConsumer = null;
  // Samples for the charts, taken at each refresh and kept for CHART_WINDOW_MS.
  const CHART_WINDOW_MS = 15 * 60 * 1000;
  const consumerSamples = new Map(); // consumer id -> [{t, delivered, failed}]
  const queueSamples = new Map(); // queue name -> [{t, publish, deliver, ready}]
  // The workers' samples of the last 15 minutes (GET /api/v1/stats/history), read once per sign-in
  // so the charts are full on load; the page's own samples follow them.
  let historyAsked = false;
  let historyStep = null; // seconds between the workers' samples; null: no history read
  let consumerSchema = null; // components.schemas.ConsumerUpdate of /openapi.json

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
    // The control named by the whole field (auth.password), else by its first part (auth).
    const field = err.field ? String(err.field) : null;
    const named = (n) => {
      const found = form.elements.namedItem(n);
      return found && found.setAttribute && !found.closest("[hidden]") ? found : null;
    };
    const control = field ? named(field) || named(field.split(".")[0]) : null;
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
    deadLetterConsumer = null;
    $("dead-letters").hidden = true;
    consumerSamples.clear();
    queueSamples.clear();
    historyAsked = false;
    historyStep = null;
    $("consumer-charts").replaceChildren();
    $("queue-charts").replaceChildren();
    for (const dialog of document.querySelectorAll("dialog[open]")) dialog.close();
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
    const askHistory = !historyAsked;
    historyAsked = true;
    const [queues, consumers, connections, workers, history] = await Promise.allSettled([
      api("GET", queuePath),
      api("GET", "/api/v1/consumers?page_size=500"),
      api("GET", "/api/v1/connections"),
      workersApi === false ? Promise.resolve(null) : api("GET", "/api/v1/workers"),
      askHistory ? api("GET", "/api/v1/stats/history?minutes=15") : Promise.resolve(null),
    ]);
    const results = [queues, consumers, connections, workers, history];
    const refused = results.find((r) => r.status === "rejected" && r.reason.status === 401);
    if (refused) {
      signOut("Signed out: the API refused the key (" + refused.reason.message + ").");
      return;
    }
    // Without the history (an older API, or an error) the charts start from this page's samples.
    if (history.status === "fulfilled" && history.value) applyHistory(history.value);

    const queueList = queues.status === "fulfilled" ? queues.value : null;
    sectionError("queues", queues);
    if (queueList) {
      renderQueues(queueList);
      sampleQueues(queueList.items || []);
    }

    sectionError("consumers", consumers);
    // The first page of 500; the API shows credentials in target URLs and headers as ***.
    const consumerPage = consumers.status === "fulfilled" ? consumers.value : null;
    const consumerList = consumerPage ? consumerPage.items || [] : null;
    if (consumerList) {
      const counts = await deadLetterCounts(consumerList, queueList, !filter);
      if (!apiKey) return;
      renderConsumers(consumerList, counts, consumerPage.total || consumerList.length);
      sampleConsumers(consumerList);
    }
    renderCharts(consumerList, queueList);
    if (deadLetterConsumer) await refreshDeadLetters();

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
    const publish = el("button", { type: "button", className: "small", dataset: { action: "publish" } }, "Publish…");
    publish.addEventListener("click", () => {
      $("publish-queue").value = publish.closest("tr").dataset.key;
      $("publish-body").focus();
    });
    const purge = el("button", { type: "button", className: "small", dataset: { action: "purge" } }, "Purge");
    purge.addEventListener("click", () => purgeQueue(purge.closest("tr")));
    const remove = el("button", { type: "button", className: "small", dataset: { action: "delete" } }, "Delete");
    remove.addEventListener("click", () => deleteQueue(remove.closest("tr")));
    return el("tr", {},
      el("th", { scope: "row", dataset: { col: "name" } }),
      cell("ready", "num"), cell("unacked", "num"), cell("consumers", "num"),
      cell("publish-rate", "num"), cell("deliver-rate", "num"),
      el("td", { dataset: { col: "figures" } }, el("span", { className: "age" })), cell("type"),
      el("td", { className: "actions" }, publish, " ", purge, " ", remove));
  }

  function updateQueueRow(row, q) {
    const c = row.cells;
    setText(c[0], q.name);
    setText(c[1], num(q.messages_ready));
    setText(c[2], num(q.messages_unacknowledged));
    setText(c[3], num(q.consumers));
    setText(c[4], rate(q.publish_rate));
    setText(c[5], rate(q.deliver_rate));
    const age = figuresAge(q.stats_age_seconds);
    setText(c[6].firstChild, age.label);
    setAttr(c[6].firstChild, "class", "age age-" + age.label);
    setAttr(c[6].firstChild, "title", age.title);
    setText(c[7], (q.type || "") + (q.durable === false ? ", transient" : ""));
    row.dataset.ready = typeof q.messages_ready === "number" ? q.messages_ready : "";
    row.dataset.messages = typeof q.messages === "number" ? q.messages : "";
    setAttr(row.querySelector("[data-action=publish]"), "aria-label", "Publish a message to " + q.name);
    setAttr(row.querySelector("[data-action=purge]"), "aria-label", "Purge " + q.name);
    setAttr(row.querySelector("[data-action=delete]"), "aria-label", "Delete queue " + q.name);
  }

  /** How old a queue's figures are: ready and consumers read live (stats_age_seconds 0), or
   *  everything from the management API's sample (null), which RabbitMQ takes every 5 s. */
  function figuresAge(seconds) {
    if (typeof seconds !== "number") {
      return { label: "sampled", title: "All figures are the management API's sample, up to 5 s old " +
        "(the broker could not be asked live)." };
    }
    if (seconds <= 0) {
      return { label: "live", title: "Ready and consumers were read live from the broker; unacked and " +
        "the rates are the management API's sample, up to 5 s old." };
    }
    return { label: "sampled", title: "The figures are " + seconds + " s old." };
  }

  function messagesText(n) {
    return n === "" || n === undefined ? "its messages" : n + (Number(n) === 1 ? " message" : " messages");
  }

  async function purgeQueue(row) {
    const name = row.dataset.key;
    const ok = await confirmAction("Purge " + name + "?",
      "Drop " + messagesText(row.dataset.ready) + " ready in " + name +
      ". They cannot be brought back.", "Purge");
    if (!ok) return;
    await act("Purging " + name, () => api("POST", "/api/v1/queues/" + enc(name) + "/purge"),
      () => "Purged " + name + ".");
  }

  async function deleteQueue(row) {
    const name = row.dataset.key;
    const ok = await confirmAction("Delete queue " + name + "?",
      "Delete " + name + " and " + messagesText(row.dataset.messages) + " in it. Consumers of it stop delivering.",
      "Delete queue");
    if (!ok) return;
    await act("Deleting " + name, () => api("DELETE", "/api/v1/queues/" + enc(name)),
      () => "Deleted queue " + name + ".");
  }

  /** Run *request*, announce what *done* says of its result, or show the error; then refresh. */
  async function act(what, request, done) {
    let result;
    try {
      result = await request();
    } catch (err) {
      if (err.status === 401) return signOut("Signed out: the API refused the key (" + err.message + ").");
      alertError(what + " failed: " + err.message);
      refresh();
      return null;
    }
    announce(done(result));
    refresh();
    return result;
  }

  // -- confirmation ----------------------------------------------------------------------------

  /** Ask in a modal dialog; resolves true when the user confirms. */
  function confirmAction(title, text, okLabel) {
    const dialog = $("confirm-dialog");
    setText($("confirm-title"), title);
    setText($("confirm-text"), text);
    setText($("confirm-ok"), okLabel || "Confirm");
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-cancel").focus();
    });
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
    const view = el("button", { type: "button", className: "small", dataset: { action: "view" } }, "Show");
    view.addEventListener("click", () => {
      const row = view.closest("tr");
      openDeadLetters({ id: row.dataset.id, name: row.dataset.name, queue: row.dataset.queue });
    });
    const toggle = el("button", { type: "button", className: "small", dataset: { action: "toggle" } });
    toggle.addEventListener("click", () => toggleConsumer(toggle));
    const edit = el("button", { type: "button", className: "small", dataset: { action: "edit" } }, "Edit");
    edit.addEventListener("click", () => editConsumer(edit.closest("tr").dataset.id));
    const remove = el("button", { type: "button", className: "small", dataset: { action: "delete" } }, "Delete");
    remove.addEventListener("click", () => deleteConsumer(remove.closest("tr")));
    const state = cell("state");
    state.append(el("span", { className: "state" }), " ",
      el("span", { className: "badge health-degraded", dataset: { col: "health" }, hidden: true }),
      el("span", { className: "sub health-reason", hidden: true }), el("span", { className: "sub" }));
    const lastError = cell("last-error", "error-cell");
    lastError.append(el("span", { className: "error-text" }), el("span", { className: "sub" }));
    const dead = cell("dead-letters", "dlq");
    dead.append(el("span", { className: "dlq-count", dataset: { col: "dead-letter-count" } }), " ", view, " ", replay);
    return el("tr", {},
      el("th", { scope: "row", dataset: { col: "name" } }),
      cell("queue"), cell("target", "target"), state,
      cell("delivered", "num"), cell("failed", "num"), cell("retried", "num"),
      cell("dead-lettered", "num"), cell("in-flight", "num"),
      el("td", { dataset: { col: "circuit" } }, el("span", { className: "badge" })),
      lastError, dead,
      el("td", { className: "actions" }, toggle, " ", edit, " ", remove));
  }

  function updateConsumerRow(row, consumer, dlqCount) {
    const stats = consumer.stats || {};
    const c = row.cells;
    const name = consumer.name || consumer.id;
    row.dataset.id = consumer.id;
    row.dataset.name = name;
    row.dataset.queue = consumer.queue;
    setText(c[0], name);
    setText(c[1], consumer.queue);
    setText(c[2], consumer.target_url);
    setAttr(c[2], "title", consumer.target_url);

    const paused = consumer.state === "paused";
    setText(c[3].firstChild, consumer.state);
    setAttr(c[3].firstChild, "class", "state " + (paused ? "paused" : "running"));
    // Degraded (circuit open, or dead letters growing, for longer than degraded_after): a badge
    // saying since when, the reason on a line of its own and in the badge's tooltip.
    const degraded = consumer.health === "degraded";
    const healthBadge = c[3].querySelector("[data-col=health]");
    const reasonLine = c[3].querySelector(".health-reason");
    healthBadge.hidden = !degraded;
    reasonLine.hidden = !degraded || !consumer.degraded_reason;
    setText(healthBadge, degraded ? "degraded" + (consumer.degraded_since ? " since " + when(consumer.degraded_since) : "") : "");
    setAttr(healthBadge, "title", degraded
      ? (consumer.degraded_reason || "degraded") + (consumer.degraded_since ? " (since " + consumer.degraded_since + ")" : "")
      : null);
    setText(reasonLine, degraded ? consumer.degraded_reason || "" : "");
    setAttr(reasonLine, "title", degraded && consumer.degraded_reason ? consumer.degraded_reason : null);
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
    const known = typeof dlqCount === "number";
    setText(count, known ? String(dlqCount) : "?");
    row.dataset.deadLetters = known ? String(dlqCount) : "";
    setAttr(c[11], "title", consumer.dead_letter_queue ? "in " + consumer.dead_letter_queue : null);
    setAttr(c[11].querySelector("[data-action=view]"), "aria-label", "Show the dead letters of " + name);
    const replay = c[11].querySelector("[data-action=replay]");
    if (!replay.hasAttribute("aria-busy")) {
      setAttr(replay, "aria-label", "Replay the dead letters of " + name);
      replay.hidden = !(known && dlqCount > 0); // nothing to replay
    }
    setAttr(c[12].querySelector("[data-action=edit]"), "aria-label", "Edit " + name);
    setAttr(c[12].querySelector("[data-action=delete]"), "aria-label", "Delete consumer " + name);

    const toggle = c[12].querySelector("[data-action=toggle]");
    if (!toggle.hasAttribute("aria-busy")) {
      setText(toggle, paused ? "Resume" : "Pause");
      setAttr(toggle, "aria-label", (paused ? "Resume " : "Pause ") + name);
      toggle.dataset.state = consumer.state;
    }
  }

  async function replayDeadLetters(button) {
    const row = button.closest("tr");
    const name = row.dataset.name;
    const waiting = Number(row.dataset.deadLetters || 0);
    const ok = await confirmAction("Replay " + waiting + (waiting === 1 ? " dead letter" : " dead letters") + "?",
      "Move the " + waiting + (waiting === 1 ? " message" : " messages") + " in the dead-letter queue of " + name +
      " back to " + row.dataset.queue + ", to be delivered again.", "Replay " + waiting);
    if (!ok) return;
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

  async function deleteConsumer(row) {
    const name = row.dataset.name;
    const ok = await confirmAction("Delete consumer " + name + "?",
      "Workers stop delivering " + row.dataset.queue + " to its target. The queue and its dead-letter queue " +
      "stay, with their messages.", "Delete consumer");
    if (!ok) return;
    if (deadLetterConsumer && deadLetterConsumer.id === row.dataset.id) closeDeadLetters();
    await act("Deleting " + name, () => api("DELETE", "/api/v1/consumers/" + enc(row.dataset.id)),
      () => "Deleted consumer " + name + ".");
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

  // -- dead letters ------------------------------------------------------------------------------------

  const DEAD_LETTER_LIMIT = 100;

  function plural(n, word) {
    return n + " " + word + (n === 1 ? "" : "s");
  }

  function openDeadLetters(consumer) {
    if (!deadLetterConsumer || deadLetterConsumer.id !== consumer.id) {
      $("dead-letters-table").tBodies[0].replaceChildren();
      $("dl-select-all").checked = false;
    }
    deadLetterConsumer = consumer;
    setText($("dead-letters-title"), "Dead letters of " + consumer.name);
    $("dead-letters").hidden = false;
    refreshDeadLetters().then(() => {
      $("dead-letters").scrollIntoView({ block: "start" });
      $("dead-letters-title").focus();
    });
  }

  function closeDeadLetters() {
    deadLetterConsumer = null;
    $("dead-letters").hidden = true;
    $("dead-letters-table").tBodies[0].replaceChildren();
  }

  async function refreshDeadLetters() {
    const consumer = deadLetterConsumer;
    if (!consumer) return;
    let page;
    try {
      page = await api("GET", "/api/v1/consumers/" + enc(consumer.id) + "/dead-letters?limit=" + DEAD_LETTER_LIMIT);
    } catch (err) {
      if (deadLetterConsumer !== consumer) return;
      setText($("dead-letters-error"), "Could not load: " + err.message);
      return;
    }
    if (deadLetterConsumer !== consumer) return;
    setText($("dead-letters-error"), "");
    const items = page.items || [];
    const total = typeof page.total === "number" ? page.total : items.length;
    consumer.total = total;
    setText($("dead-letters-count"), total > items.length
      ? "first " + items.length + " of " + total + " shown"
      : plural(total, "dead letter"));
    $("dead-letters-empty").hidden = items.length > 0;
    $("dead-letters-wrap").hidden = items.length === 0;
    $("dl-replay-all").hidden = total === 0;
    $("dl-discard-all").hidden = total === 0;
    let position = 0;
    syncRows($("dead-letters-table").tBodies[0], items,
      (m) => (m.message_id ? "id:" + m.message_id : "at:" + position++), buildDeadLetterRow, updateDeadLetterRow);
    updateSelection();
  }

  function buildDeadLetterRow() {
    const select = el("input", { type: "checkbox", dataset: { action: "select" } });
    select.addEventListener("change", updateSelection);
    const id = el("button", { type: "button", className: "link", dataset: { action: "history" } });
    id.addEventListener("click", () => showHistory(id.closest("tr").dataset.messageId));
    const replay = el("button", { type: "button", className: "small", dataset: { action: "replay-one" } }, "Replay");
    replay.addEventListener("click", () => {
      const messageId = replay.closest("tr").dataset.messageId;
      changeDeadLetters("replay", { message_ids: [messageId] }, 1, "message " + messageId);
    });
    return el("tr", {},
      el("td", {}, select),
      el("th", { scope: "row", dataset: { col: "message-id" } }, id),
      cell("dead-lettered-at"), cell("attempts", "num"), cell("last-status"),
      cell("last-error", "error-cell"),
      el("td", { dataset: { col: "headers" }, className: "headers-cell" }, el("pre", { className: "small" })),
      el("td", { dataset: { col: "body" }, className: "body-cell" }, el("span", { className: "kind" }),
        el("pre", { className: "small" })),
      el("td", { className: "actions" }, replay));
  }

  /** A body as the page shows it: text as it is, anything else (base64 from the API) as hex. */
  function bodyView(message) {
    const payload = message.payload === null || message.payload === undefined ? "" : String(message.payload);
    if (message.payload_encoding !== "base64") {
      return { kind: "text" + (message.content_type ? ", " + message.content_type : ""), text: payload };
    }
    let bytes;
    try {
      bytes = Uint8Array.from(atob(payload), (ch) => ch.charCodeAt(0));
    } catch (_err) {
      return { kind: "base64", text: payload };
    }
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
    return { kind: "hex, " + plural(bytes.length, "byte") + (message.content_type ? ", " + message.content_type : ""),
      text: hex };
  }

  function updateDeadLetterRow(row, message) {
    const c = row.cells;
    const messageId = message.message_id || "";
    row.dataset.messageId = messageId;
    const select = c[0].firstChild;
    select.disabled = !messageId;
    setAttr(select, "aria-label", "Select " + (messageId || "this message"));
    const id = c[1].firstChild;
    setText(id, messageId || "(no id)");
    id.disabled = !messageId;
    setAttr(id, "aria-label", "Show the attempts of " + (messageId || "this message"));
    setText(c[2], when(message.dead_lettered_at));
    setAttr(c[2], "title", message.dead_lettered_at || null);
    setText(c[3], num(message.attempts));
    setText(c[4], message.last_status === null || message.last_status === undefined ? "–" : String(message.last_status));
    setText(c[5], message.last_error || "—");
    const headers = message.headers || {};
    setText(c[6].firstChild, Object.keys(headers).length ? JSON.stringify(headers, null, 1) : "none");
    const body = bodyView(message);
    setText(c[7].firstChild, body.kind);
    setText(c[7].lastChild, body.text);
    const replay = c[8].firstChild;
    replay.hidden = !messageId;
    setAttr(replay, "aria-label", "Replay message " + (messageId || ""));
  }

  function selectedIds() {
    return Array.from($("dead-letters-table").querySelectorAll("tbody input[data-action=select]:checked"))
      .map((box) => box.closest("tr").dataset.messageId).filter(Boolean);
  }

  function updateSelection() {
    const n = selectedIds().length;
    setText($("dl-replay-selected"), n ? "Replay selected (" + n + ")" : "Replay selected");
    setText($("dl-discard-selected"), n ? "Discard selected (" + n + ")" : "Discard selected");
    $("dl-replay-selected").disabled = n === 0;
    $("dl-discard-selected").disabled = n === 0;
  }

  /** Replay or discard the dead letters *selector* picks, after a confirmation that says how many. */
  async function changeDeadLetters(action, selector, count, what) {
    const consumer = deadLetterConsumer;
    if (!consumer) return;
    const verb = action === "replay" ? "Replay" : "Discard";
    const text = action === "replay"
      ? "Move " + what + " from the dead-letter queue of " + consumer.name + " back to " + consumer.queue +
        ", to be delivered again."
      : "Drop " + what + " from the dead-letter queue of " + consumer.name + ". They cannot be brought back.";
    const ok = await confirmAction(verb + " " + plural(count, "dead letter") + "?", text, verb + " " + count);
    if (!ok) return;
    const base = "/api/v1/consumers/" + enc(consumer.id) + "/dead-letters";
    await act(verb + " for " + consumer.name,
      () => action === "replay" ? api("POST", base + "/replay", selector)
        : api("DELETE", base + (selector.all ? "?all=true" : ""), selector.all ? undefined : selector),
      (result) => {
        const done = action === "replay" ? (result.moved ?? result.replayed) : result.discarded;
        let line = (action === "replay" ? "Replayed " : "Discarded ") + plural(done || 0, "message") + " of " +
          consumer.name;
        if (typeof result.remaining === "number") line += "; " + result.remaining + " remain";
        return line + ".";
      });
  }

  function onDeadLetterToolbar() {
    $("dl-close").addEventListener("click", closeDeadLetters);
    $("dl-select-all").addEventListener("change", () => {
      const on = $("dl-select-all").checked;
      for (const box of $("dead-letters-table").querySelectorAll("tbody input[data-action=select]")) {
        if (!box.disabled) box.checked = on;
      }
      updateSelection();
    });
    $("dl-replay-selected").addEventListener("click", () => {
      const ids = selectedIds();
      if (ids.length) changeDeadLetters("replay", { message_ids: ids }, ids.length, "the " + plural(ids.length, "selected message"));
    });
    $("dl-discard-selected").addEventListener("click", () => {
      const ids = selectedIds();
      if (ids.length) changeDeadLetters("discard", { message_ids: ids }, ids.length, "the " + plural(ids.length, "selected message"));
    });
    $("dl-replay-all").addEventListener("click", () => {
      const n = (deadLetterConsumer && deadLetterConsumer.total) || 0;
      if (n) changeDeadLetters("replay", {}, n, "all " + plural(n, "message"));
    });
    $("dl-discard-all").addEventListener("click", () => {
      const n = (deadLetterConsumer && deadLetterConsumer.total) || 0;
      if (n) changeDeadLetters("discard", { all: true }, n, "all " + plural(n, "message"));
    });
  }

  // -- what happened to a message ---------------------------------------------------------------------

  async function showHistory(messageId) {
    if (!messageId) return;
    $("history-id").value = messageId;
    const form = $("history-form");
    clearFormError(form);
    let page;
    try {
      page = await api("GET", "/api/v1/messages/" + enc(messageId) + "/attempts?page_size=100");
    } catch (err) {
      if (err.status === 401) return signOut("Signed out: the API refused the key (" + err.message + ").");
      showFormError(form, err, "Looking up " + messageId);
      return;
    }
    const items = (page && page.items) || [];
    const total = typeof page.total === "number" ? page.total : items.length;
    const last = items[0];
    setText($("history-summary"), total
      ? "Message " + messageId + ": " + plural(total, "attempt") + (total > items.length ? " (newest " + items.length + " shown)" : "") +
        "; last " + String(last.outcome || "").replace(/_/g, " ") + " at " + when(last.at) + "."
      : "No attempt of " + messageId + " is recorded.");
    $("history-wrap").hidden = items.length === 0;
    let position = 0;
    syncRows($("history-table").tBodies[0], items, () => String(position++),
      () => el("tr", {}, el("th", { scope: "row", dataset: { col: "at" } }), cell("consumer"), cell("attempt", "num"),
        cell("outcome"), cell("status"), cell("error"), cell("duration", "num"),
        el("td", { dataset: { col: "response" }, className: "body-cell" }, el("pre", { className: "small" })),
        cell("worker")),
      (row, a) => {
        const c = row.cells;
        setText(c[0], when(a.at));
        setAttr(c[0], "title", a.at || null);
        setText(c[1], a.consumer || a.consumer_id || "");
        setText(c[2], num(a.attempt));
        setText(c[3], String(a.outcome || "").replace(/_/g, " "));
        setAttr(c[3], "class", "outcome-" + String(a.outcome || "").replace(/[^a-z_]/g, ""));
        setText(c[4], a.status === null || a.status === undefined ? "–" : String(a.status));
        setText(c[5], a.error || "");
        setText(c[6], num(a.duration_ms));
        setText(c[7].firstChild, a.response || "");
        setText(c[8], a.worker || "");
      });
    announce("Showing the attempts of " + messageId + ".");
    $("message-history").scrollIntoView({ block: "start" });
  }

  // -- charts ------------------------------------------------------------------------------------------

  const MAX_CHARTS = 12;
  const SAMPLE_GAP_S = 60; // more than this between two samples: a gap in the line, not a rate

  function keepWindow(list, now) {
    while (list.length && list[0].t < now - CHART_WINDOW_MS) list.shift();
  }

  function sampleConsumers(consumers) {
    const now = Date.now();
    for (const consumer of consumers) {
      const stats = consumer.stats || {};
      if (!consumerSamples.has(consumer.id)) consumerSamples.set(consumer.id, []);
      const list = consumerSamples.get(consumer.id);
      list.push({ t: now, delivered: stats.delivered || 0, failed: stats.failed || 0 });
      keepWindow(list, now);
    }
  }

  function sampleQueues(queues) {
    const now = Date.now();
    for (const queue of queues) {
      if (!queueSamples.has(queue.name)) queueSamples.set(queue.name, []);
      const list = queueSamples.get(queue.name);
      list.push({ t: now, publish: queue.publish_rate, deliver: queue.deliver_rate, ready: queue.messages_ready });
      keepWindow(list, now);
    }
  }

  /** Put the workers' samples (GET /api/v1/stats/history) before the page's own. Their times
   *  are the server's clock, in seconds. */
  function applyHistory(history) {
    const columns = history.columns || {};
    const at = (list, name) => (list || []).indexOf(name);
    const merge = (samples, key, past) => {
      const own = samples.get(key) || [];
      const firstOwn = own.length ? own[0].t : Infinity;
      samples.set(key, past.filter((s) => s.t < firstOwn).concat(own));
    };
    const [delivered, failed] = ["delivered", "failed"].map((n) => at(columns.consumers, n));
    let count = 0;
    for (const [id, series] of Object.entries(history.consumers || {})) {
      const points = series.points || [];
      count = Math.max(count, points.length);
      merge(consumerSamples, id, points.map((p) => ({ t: p[0] * 1000, delivered: p[delivered], failed: p[failed] })));
    }
    const [ready, publish, deliver] = ["messages_ready", "publish_rate", "deliver_rate"]
      .map((n) => at(columns.queues, n));
    for (const [name, series] of Object.entries(history.queues || {})) {
      const points = series.points || [];
      count = Math.max(count, points.length);
      merge(queueSamples, name, points.map((p) => ({ t: p[0] * 1000, publish: p[publish], deliver: p[deliver], ready: p[ready] })));
    }
    historyStep = typeof history.step === "number" ? history.step : null;
    $("charts").dataset.historySamples = String(count);
  }

  /** Per-second rates between consecutive samples of the counters; a counter that went down
   *  (a worker restarted), or samples too far apart (no worker sampled meanwhile), give no point. */
  function consumerRates(samples) {
    const delivered = [];
    const failed = [];
    const errorRate = [];
    for (let i = 1; i < samples.length; i++) {
      const a = samples[i - 1];
      const b = samples[i];
      const seconds = (b.t - a.t) / 1000;
      const d = b.delivered - a.delivered;
      const f = b.failed - a.failed;
      if (seconds <= 0 || seconds > SAMPLE_GAP_S || d < 0 || f < 0) {
        delivered.push([b.t, null]);
        failed.push([b.t, null]);
        errorRate.push([b.t, null]);
        continue;
      }
      delivered.push([b.t, d / seconds]);
      failed.push([b.t, f / seconds]);
      errorRate.push([b.t, d + f ? (100 * f) / (d + f) : 0]);
    }
    return { delivered, failed, errorRate };
  }

  function chartCard(container, key, title) {
    let card = container.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (!card) {
      card = el("div", { className: "chart", role: "listitem", dataset: { key } }, el("h3", {}));
      container.append(card);
    }
    setText(card.firstChild, title);
    return card;
  }

  function chart(card, name, labels) {
    let box = card.querySelector('[data-chart="' + name + '"]');
    if (!box) {
      box = el("div", { dataset: { chart: name } });
      box.append(window.WorkerRMQCharts.svg({}), window.WorkerRMQCharts.legend(labels), el("p", { className: "figures" }));
      card.append(box);
    }
    return box;
  }

  function dropStale(container, keys) {
    for (const card of Array.from(container.children)) if (!keys.has(card.dataset.key)) card.remove();
  }

  function lastRate(points) {
    for (let i = points.length - 1; i >= 0; i--) if (points[i][1] !== null) return points[i][1];
    return null;
  }

  function renderCharts(consumers, queuePage) {
    const charts = window.WorkerRMQCharts;
    if (!charts) return;
    const now = Date.now();
    const first = consumerSamples.size ? Math.min(...Array.from(consumerSamples.values(), (l) => (l[0] || { t: now }).t)) : now;
    const minutes = Math.min(15, Math.floor((now - first) / 60000));
    const sampled = historyStep
      ? "sampled by the workers every " + historyStep + " s, then by this page every " + REFRESH_MS / 1000 + " s"
      : "sampled by this page every " + REFRESH_MS / 1000 + " s while it is open";
    setText($("charts-note"), sampled +
      (minutes < 15 ? " (" + (minutes ? minutes + " min so far" : "since less than a minute") + ")" : ""));

    const consumerBox = $("consumer-charts");
    const shownConsumers = (consumers || []).slice(0, MAX_CHARTS);
    for (const consumer of shownConsumers) {
      const name = consumer.name || consumer.id;
      const card = chartCard(consumerBox, consumer.id, "Consumer " + name);
      const rates = consumerRates(consumerSamples.get(consumer.id) || []);
      const throughput = chart(card, "throughput", ["delivered /s", "failed attempts /s"]);
      charts.draw(throughput.firstChild, [
        { label: "delivered", points: rates.delivered },
        { label: "failed", points: rates.failed },
      ], { now, windowMs: CHART_WINDOW_MS, label: "Throughput of " + name + ", messages per second" });
      const recent = consumerSamples.get(consumer.id) || [];
      const span = recent.length > 1 ? recent[recent.length - 1] : null;
      const base = recent[0];
      const windowDelivered = span ? span.delivered - base.delivered : 0;
      const windowFailed = span ? span.failed - base.failed : 0;
      setText(throughput.lastChild, "now " + rate(lastRate(rates.delivered)) + " delivered/s; in the window " +
        Math.max(0, windowDelivered) + " delivered, " + Math.max(0, windowFailed) + " failed attempts");
      const errors = chart(card, "error-rate", ["failed attempts, % of attempts"]);
      charts.draw(errors.firstChild, [{ label: "error rate", points: rates.errorRate }],
        { now, windowMs: CHART_WINDOW_MS, top: 100, unit: "%", label: "Error rate of " + name + ", percent" });
      const attempts = windowDelivered + windowFailed;
      setText(errors.lastChild, "error rate in the window: " +
        (attempts > 0 ? Math.round((100 * windowFailed) / attempts) + " %" : "no attempts"));
    }
    dropStale(consumerBox, new Set(shownConsumers.map((c) => String(c.id))));

    const queueBox = $("queue-charts");
    const showInternal = $("show-internal").checked;
    const queues = ((queuePage && queuePage.items) || [])
      .filter((q) => showInternal || !INTERNAL_QUEUE.test(q.name)).slice(0, MAX_CHARTS);
    for (const queue of queues) {
      const card = chartCard(queueBox, queue.name, "Queue " + queue.name);
      const samples = queueSamples.get(queue.name) || [];
      const box = chart(card, "rates", ["published /s", "delivered /s"]);
      const pick = (field) => samples.map((s) => [s.t, typeof s[field] === "number" ? s[field] : null]);
      charts.draw(box.firstChild, [
        { label: "published", points: pick("publish") },
        { label: "delivered", points: pick("deliver") },
      ], { now, windowMs: CHART_WINDOW_MS, label: "Message rates of queue " + queue.name + ", per second" });
      setText(box.lastChild, "now " + rate(queue.publish_rate) + " published/s, " + rate(queue.deliver_rate) +
        " delivered/s, " + num(queue.messages_ready) + " ready");
    }
    dropStale(queueBox, new Set(queues.map((q) => q.name)));
  }

  // -- editing a consumer ------------------------------------------------------------------------------

  /** The consumer's fields as the API's OpenAPI document describes them (read once). */
  async function loadConsumerSchema() {
    if (consumerSchema) return consumerSchema;
    const response = await fetch(ROOT + "/openapi.json", { cache: "no-store", credentials: "omit" });
    if (!response.ok) throw new ApiError(response.status, "http_" + response.status, "cannot read /openapi.json");
    const doc = await response.json();
    const schemas = (doc.components && doc.components.schemas) || {};
    // A field is a plain schema, a $ref (or allOf of one), or anyOf [$ref, {nullable}] (source, batch).
    const resolve = (prop) => {
      const options = prop.anyOf || prop.oneOf || [];
      const refOption = options.find((o) => o.$ref);
      const ref = prop.$ref || (prop.allOf && prop.allOf.length === 1 && prop.allOf[0].$ref) ||
        (refOption && refOption.$ref);
      if (!ref) return prop;
      const target = schemas[ref.split("/").pop()] || {};
      const nullable = Boolean(prop.nullable || options.some((o) => o.nullable));
      return Object.assign({}, target, prop, { type: target.type || "object", nullable });
    };
    const update = schemas.ConsumerUpdate || { properties: {} };
    consumerSchema = Object.entries(update.properties || {}).map(([name, prop]) => [name, resolve(prop)]);
    return consumerSchema;
  }

  function fieldKind(prop) {
    if (prop.writeOnly) return "secret";
    if (Array.isArray(prop.enum)) return "choice";
    if (prop.type === "boolean") return "boolean";
    if (prop.type === "integer" || prop.type === "number") return "number";
    if (prop.type === "array" && prop.items && prop.items.type === "string") return "list";
    if (prop.type === "object" || prop.type === "array") return "json";
    return "text";
  }

  /** The value a control shows for *value* (a text), so that changes can be found by comparing. */
  function shown(kind, value) {
    if (value === null || value === undefined) return "";
    if (kind === "list") return Array.isArray(value) ? value.join(", ") : String(value);
    if (kind === "json") return JSON.stringify(value, null, 1);
    if (kind === "boolean") return value ? "true" : "false";
    return String(value);
  }

  // The auth values the API keeps write-only (core/endpoint_auth.py SECRET_FIELDS).
  const AUTH_SECRETS = ["token", "password", "client_secret", "key_pem"];

  /** *auth* with its secrets as "***": the API sends them so already; this page never shows one
   *  in plain text, whatever a server answers. Sent back as "***", each keeps the stored secret. */
  function maskedAuth(auth) {
    if (!auth || typeof auth !== "object") return auth;
    const copy = Object.assign({}, auth);
    for (const key of AUTH_SECRETS) if (typeof copy[key] === "string" && copy[key]) copy[key] = "***";
    return copy;
  }

  // Each auth type's fields, as core/endpoint_auth.py takes them (optional ones marked).
  const AUTH_SHAPES = {
    bearer: ["token"],
    basic: ["username", "password"],
    oauth2: ["token_url", "client_id", "client_secret", "scope?"],
    mtls: ["cert_pem", "key_pem", "ca_pem?"],
  };
  const PEM = /_pem$/;

  /** auth as a small form: its type, then that type's fields. Secrets are never prefilled:
   *  left empty they are sent as "***", which keeps the stored one (for the same type). */
  function buildAuthField(consumer) {
    const stored = maskedAuth(consumer.auth) || null;
    const storedType = stored && AUTH_SHAPES[stored.type] ? stored.type : "";
    const helpId = "edit-auth-help";
    const select = el("select", { id: "edit-auth", name: "auth", dataset: { kind: "auth" },
      "aria-describedby": helpId + " edit-form-error" });
    select.append(el("option", { value: "" }, "(none)"));
    for (const type of Object.keys(AUTH_SHAPES)) select.append(el("option", { value: type }, type));
    select.value = storedType;
    const parts = el("div", { className: "auth-parts" });
    for (const [type, keys] of Object.entries(AUTH_SHAPES)) {
      const group = el("div", { className: "auth-type", dataset: { authType: type }, hidden: type !== storedType });
      for (const spec of keys) {
        const key = spec.replace("?", "");
        const secret = AUTH_SECRETS.includes(key);
        const id = "edit-auth-" + type + "-" + key;
        const attrs = { id, name: "auth." + key, autocomplete: "off", spellcheck: "false",
          dataset: { authKey: key } };
        const control = PEM.test(key) ? el("textarea", Object.assign({ rows: 2 }, attrs))
          : el("input", Object.assign({ type: secret ? "password" : "text" }, attrs));
        if (secret) control.placeholder = type === storedType ? "*** (kept)" : "(required)";
        else if (type === storedType && typeof stored[key] === "string") control.value = stored[key];
        group.append(el("p", {}, el("label", { for: id }, "auth." + key), control));
      }
      parts.append(group);
    }
    select.addEventListener("change", () => {
      for (const group of parts.children) group.hidden = group.dataset.authType !== select.value;
    });
    select.dataset.stored = storedType;
    select.dataset.original = JSON.stringify(authValue(select, parts));
    // The schema's description speaks of the JSON shape; this form needs fewer words.
    const help = "how requests authenticate to the endpoint; secrets are write-only: left empty, the stored " +
      "one is kept (sent as ***)";
    return el("div", { className: "wide auth-field" },
      el("p", {}, el("label", { for: "edit-auth" }, "auth"), select, el("span", { id: helpId, className: "help" }, help)),
      parts);
  }

  /** The auth the form now describes; a secret left empty is "***" (kept) for the stored type. */
  function authValue(select, parts) {
    const type = select.value;
    if (!type) return null;
    const value = { type };
    const group = parts.querySelector('[data-auth-type="' + type + '"]');
    for (const control of group.querySelectorAll("[data-auth-key]")) {
      const key = control.dataset.authKey;
      const text = PEM.test(key) ? control.value : control.value.trim();
      if (text) value[key] = text;
      else if (AUTH_SECRETS.includes(key) && type === select.dataset.stored) value[key] = "***";
    }
    return value;
  }

  function buildField(name, prop, consumer) {
    if (name === "auth") return buildAuthField(consumer);
    const kind = fieldKind(prop);
    const id = "edit-" + name;
    const helpId = id + "-help";
    const common = { id, name, "aria-describedby": helpId + " edit-form-error", dataset: { kind } };
    let control;
    if (kind === "choice") {
      control = el("select", common);
      if (prop.nullable) control.append(el("option", { value: "" }, "(none)"));
      for (const choice of prop.enum) control.append(el("option", { value: String(choice) }, String(choice)));
    } else if (kind === "boolean") {
      control = el("input", Object.assign({ type: "checkbox" }, common));
    } else if (kind === "json") {
      control = el("textarea", Object.assign({ rows: 3, spellcheck: "false" }, common));
    } else if (kind === "number") {
      control = el("input", Object.assign({ type: "number", step: prop.type === "integer" ? "1" : "any",
        min: prop.minimum, max: prop.maximum, inputmode: prop.type === "integer" ? "numeric" : "decimal" }, common));
    } else {
      control = el("input", Object.assign({ type: kind === "secret" ? "password" : "text", autocomplete: "off",
        spellcheck: "false", maxlength: prop.maxLength }, common));
    }
    const value = name === "auth" ? maskedAuth(consumer.auth) : consumer[name];
    const current = kind === "secret" ? "" : shown(kind, value);
    if (kind === "boolean") control.checked = current === "true";
    else control.value = current;
    if (kind === "secret") control.placeholder = consumer.signing || consumer[name] ? "*** (kept)" : "(none)";
    control.dataset.original = current;
    let help = prop.description || "";
    if (kind === "list") help += (help ? "; " : "") + "separated by commas";
    if (kind === "json") help += (help ? "; " : "") + "JSON";
    if (kind === "secret") help += (help ? "; " : "") + "write-only: type a new one to replace it";
    if (prop.nullable && kind !== "secret") help += (help ? "; " : "") + "empty: none";
    const label = el("label", { for: id }, name);
    const wide = kind === "json" || name === "target_url" || kind === "list";
    if (kind === "boolean") {
      return el("p", { className: "check" + (wide ? " wide" : "") }, control, " ", label, el("span", { id: helpId, className: "help" }, help));
    }
    return el("p", { className: wide ? "wide" : "" }, label, control, el("span", { id: helpId, className: "help" }, help));
  }

  /** Whether two JSON texts hold the same value (false when either is not JSON). */
  function sameJson(a, b) {
    try {
      return JSON.stringify(JSON.parse(a || "null")) === JSON.stringify(JSON.parse(b || "null"));
    } catch (_err) {
      return false;
    }
  }

  /** The changed fields of the edit form, as the API takes them; throws an ApiError for bad input. */
  function changedFields(form) {
    const body = {};
    for (const control of form.querySelectorAll("[data-kind]")) {
      const kind = control.dataset.kind;
      if (kind === "auth") {
        const auth = authValue(control, form.querySelector(".auth-parts"));
        if (JSON.stringify(auth) !== control.dataset.original) body.auth = auth;
        continue;
      }
      const text = kind === "boolean" ? (control.checked ? "true" : "false") : control.value;
      if (kind === "secret") {
        if (text) body[control.name] = text;
        continue;
      }
      if (text === control.dataset.original) continue;
      const trimmed = text.trim();
      if (kind === "json" && sameJson(trimmed, control.dataset.original)) continue; // only reformatted
      let value;
      if (kind === "boolean") value = control.checked;
      else if (trimmed === "") value = null;
      else if (kind === "number") value = isFinite(Number(trimmed)) ? Number(trimmed) : trimmed;
      else if (kind === "list") value = trimmed.split(",").map((t) => t.trim()).filter(Boolean);
      else if (kind === "json") {
        try {
          value = JSON.parse(trimmed);
        } catch (err) {
          throw new ApiError(0, "invalid_input", control.name + " is not valid JSON (" + err.message + ")",
            control.name);
        }
      } else value = trimmed;
      body[control.name] = value;
    }
    return body;
  }

  async function editConsumer(consumerId) {
    let consumer;
    let schema;
    try {
      [consumer, schema] = await Promise.all([api("GET", "/api/v1/consumers/" + enc(consumerId)), loadConsumerSchema()]);
    } catch (err) {
      if (err.status === 401) return signOut("Signed out: the API refused the key (" + err.message + ").");
      alertError("Opening the consumer failed: " + err.message);
      return;
    }
    const form = $("edit-form");
    clearFormError(form);
    form.dataset.id = consumer.id;
    form.dataset.name = consumer.name || consumer.id;
    setText($("edit-title"), "Edit consumer " + form.dataset.name);
    $("edit-fields").replaceChildren(...schema.map(([name, prop]) => buildField(name, prop, consumer)));
    $("edit-dialog").showModal();
    const first = $("edit-fields").querySelector("input, select, textarea");
    if (first) first.focus();
  }

  async function onEditSubmit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    clearFormError(form);
    let body;
    try {
      body = changedFields(form);
    } catch (err) {
      showFormError(form, err, "Saving");
      return;
    }
    const names = Object.keys(body);
    if (!names.length) {
      $("edit-dialog").close();
      announce("Nothing changed in " + form.dataset.name + ".");
      return;
    }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const saved = await api("PATCH", "/api/v1/consumers/" + enc(form.dataset.id), body);
      $("edit-dialog").close();
      announce("Saved " + (saved.name || form.dataset.name) + ": " + names.join(", ") + " changed.");
    } catch (err) {
      if (err.status === 401) return signOut("Signed out: the API refused the key (" + err.message + ").");
      showFormError(form, err, "Saving " + form.dataset.name);
    } finally {
      button.disabled = false;
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
    $("edit-form").addEventListener("submit", onEditSubmit);
    $("edit-cancel").addEventListener("click", () => $("edit-dialog").close());
    $("history-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const id = $("history-id").value.trim();
      if (id) showHistory(id);
      else showFormError($("history-form"), new ApiError(0, "invalid_input", "enter a message id", "message_id"), "Looking up");
    });
    onDeadLetterToolbar();

    apiKey = storedKey();
    showSignedIn(Boolean(apiKey));
    if (apiKey) refresh();
    else $("api-key").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
