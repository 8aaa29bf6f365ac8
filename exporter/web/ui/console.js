/* The celery-jobs-exporter web console (docs/console.md).
 *
 * Vanilla JavaScript, no framework and no build step, on purpose: zero dependencies,
 * nothing to build or audit, the whole console is a few KB (three files, about 33 KB
 * uncompressed) and ships in the wheel next to the sidecar that serves it.
 *
 * Everything shown comes from the sidecar's JSON APIs, asked with the API key in the
 * X-API-KEY header. The key lives in sessionStorage only: never a cookie, never a URL.
 * API data is only ever written with textContent (the `h` helper): never innerHTML.
 */
"use strict";

(() => {
  const KEY_STORE = "celery-jobs-console.key";
  const STATUSES = ["waiting", "active", "delayed", "paused", "completed", "failed"];
  const PAGE_SIZE = 20;
  const POLL_MS = 2000;
  const RATE_WINDOW_MS = 60000;
  const CLIP = 120;

  const state = {
    generation: null,
    lastRender: null, // JSON of the data the current view was drawn from
    lastWhere: null, // JSON of the route the current view was drawn for
    keyDeclined: false, // the key dialog was dismissed: do not open it again unasked
    readOnly: false,
    busy: false,
    history: new Map(), // queue -> [{t, completed, failed}]
  };

  const $ = (id) => document.getElementById(id);
  const main = $("main");

  // -- DOM ------------------------------------------------------------------------------

  /** An element; string and number children become text nodes, never markup. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "text") el.textContent = String(value);
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const table = (head, rows, label) =>
    h("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: "0" },
      h("table", {},
        h("thead", {}, h("tr", {}, head.map(([text, cls]) => h("th", { scope: "col", class: cls }, text)))),
        h("tbody", {}, rows)));

  const enc = encodeURIComponent;
  const clip = (text, n = CLIP) => (text.length > n ? text.slice(0, n - 1) + "…" : text);
  const json = (value) => JSON.stringify(value, null, 2);

  function when(ms) {
    if (ms === null || ms === undefined) return h("span", { class: "muted" }, "—");
    const date = new Date(ms);
    return h("time", { datetime: date.toISOString(), title: date.toLocaleString() }, ago(ms));
  }

  function ago(ms) {
    const s = Math.round((Date.now() - ms) / 1000);
    const future = s < 0;
    const a = Math.abs(s);
    const text = a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m` :
      a < 86400 ? `${Math.floor(a / 3600)}h` : `${Math.floor(a / 86400)}d`;
    return future ? `in ${text}` : `${text} ago`;
  }

  function argsSummary(data) {
    if (!data) return "";
    const args = Array.isArray(data.args) ? data.args.map((a) => JSON.stringify(a)) : [];
    const kwargs = data.kwargs && typeof data.kwargs === "object" ?
      Object.entries(data.kwargs).map(([k, v]) => `${k}=${JSON.stringify(v)}`) : [];
    const text = [...args, ...kwargs].join(", ");
    return data.undecodable ? `(undecodable: ${data.undecodable})` : clip(text);
  }

  function notify(message, kind = "", link = null) {
    const box = $("notice");
    box.className = `notice ${kind}`;
    box.replaceChildren(message, link ? " " : "", link || "");
    box.hidden = false;
  }

  // -- API ------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers["X-API-KEY"] = key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method, headers, credentials: "omit", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      data = null;
    }
    if (!resp.ok) {
      const message = (data && data.message) || `${resp.status} ${resp.statusText}`;
      // Asked once: after Escape the view says why and offers the key button instead.
      if (method === "GET" && (resp.status === 401 || resp.status === 403) && !state.keyDeclined) askKey(message);
      throw new ApiError(resp.status, message);
    }
    return data;
  }

  // -- the API key ----------------------------------------------------------------------

  function askKey(reason) {
    const dialog = $("key-dialog");
    if (reason) $("key-reason").textContent = `${reason}. Enter an API key with read:jobs or manage:all; it is kept in this tab only.`;
    $("key-input").value = "";
    if (!dialog.open) dialog.showModal();
    $("key-input").focus();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
    state.keyDeclined = false;
    $("key-input").value = "";
    $("key-dialog").close();
    setReadOnly(null);
    refresh(true);
  });
  $("key-button").addEventListener("click", () => askKey(""));
  $("key-dialog").addEventListener("cancel", () => {
    state.keyDeclined = true;
    if (!main.hasAttribute("data-view")) refresh(true); // nothing drawn yet: show what a read answers
  });

  // -- actions --------------------------------------------------------------------------

  function setReadOnly(message) {
    state.readOnly = Boolean(message);
    const box = $("readonly");
    box.hidden = !message;
    box.textContent = message ? `Actions are turned off: ${message}` : "";
    for (const b of document.querySelectorAll("button[data-action]")) b.disabled = state.readOnly;
  }

  /**
   * Ask before an action, in the page's own modal dialog rather than window.confirm():
   * it is styled like the page, the focus starts on Cancel, Tab moves to the action,
   * Enter answers, Escape cancels, and closing it gives the focus back to the button
   * that asked. Resolves true only when the action's own button was chosen.
   */
  function ask(label, question, danger) {
    const dialog = $("confirm-dialog");
    const ok = $("confirm-ok");
    $("confirm-title").textContent = `${label}?`;
    $("confirm-question").textContent = question;
    ok.textContent = label;
    ok.className = danger ? "danger" : "";
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  $("confirm-form").addEventListener("submit", (event) => {
    event.preventDefault();
    $("confirm-dialog").close("ok");
  });
  $("confirm-cancel").addEventListener("click", () => $("confirm-dialog").close("cancel"));

  function actionButton(label, question, run, danger = false) {
    return h("button", {
      type: "button", "data-action": label, class: danger ? "danger" : null,
      disabled: state.readOnly,
      onclick: async (event) => {
        const button = event.currentTarget;
        if (!(await ask(label, question, danger))) return;
        button.disabled = true;
        try {
          const [message, link] = await run();
          notify(message, "", link);
        } catch (err) {
          if (err.status === 403) setReadOnly(err.message);
          notify(`Refused: ${err.message}`, "error");
        } finally {
          button.disabled = state.readOnly;
        }
        await refresh(true);
        // The view was drawn again: the focus goes back to this action (or to the view).
        const active = document.activeElement;
        if (!active || active === document.body || !active.isConnected) {
          if (!restoreFocus(label)) main.focus({ preventScroll: true });
        }
      },
    }, label);
  }

  const jobPath = (queue, id) => `/v1/jobs/queues/${enc(queue)}/jobs/${enc(id)}`;
  const queuePath = (queue) => `/v1/jobs/queues/${enc(queue)}`;
  const jobLink = (queue, id, text) => h("a", { href: `#/job/${enc(queue)}/${enc(id)}` }, text || id);

  function jobActions(queue, job) {
    const id = job.id;
    const buttons = [];
    if (id === null) return buttons;
    if (job.state === "failed" || job.state === "completed") {
      buttons.push(actionButton("Retry", `Run job ${id} of queue ${queue} again, with its exact arguments, as a new job?`,
        async () => {
          const r = await api(`${jobPath(queue, id)}/retry`, { method: "POST", body: {} });
          return [`Job ${id} retried as new job`, jobLink(queue, r.job.id)];
        }));
    }
    if (["waiting", "paused", "delayed", "active"].includes(job.state)) {
      buttons.push(actionButton("Cancel", `Cancel (revoke) job ${id} of queue ${queue}? Workers will discard it.`,
        async () => {
          const r = await api(`${jobPath(queue, id)}/cancel`, { method: "POST", body: {} });
          return [`Job ${id} cancelled (was ${r.previousState}).`];
        }, true));
    }
    if (["waiting", "paused", "completed", "failed"].includes(job.state)) {
      buttons.push(actionButton("Remove", `Remove job ${id} from queue ${queue}? This cannot be undone.`,
        async () => {
          const r = await api(jobPath(queue, id), { method: "DELETE" });
          return [`Job ${r.removed} removed.`];
        }, true));
    }
    return buttons;
  }

  function queueActions(queue) {
    const workers = (r) => (r.workers.length ? ` Workers told: ${r.workers.join(", ")}.` : "");
    return [
      actionButton("Pause", `Pause queue ${queue}? Workers stop consuming it until it is resumed.`,
        async () => {
          const r = await api(`${queuePath(queue)}/pause`, { method: "POST", body: {} });
          return [`Queue ${r.queue} paused.${workers(r)}`];
        }),
      actionButton("Resume", `Resume queue ${queue}? The workers that consumed it consume it again.`,
        async () => {
          const r = await api(`${queuePath(queue)}/resume`, { method: "POST", body: {} });
          return [`Queue ${r.queue} resumed.${workers(r)}`];
        }),
      actionButton("Retry failed", `Retry up to 100 of the newest failed jobs of queue ${queue}, each as a new job?`,
        async () => {
          const r = await api(`${queuePath(queue)}/retry-failed`, { method: "POST", body: { limit: 100 } });
          return [`Retried ${r.retried.length} failed jobs of ${queue}; skipped ${r.skipped.length}.`];
        }),
      actionButton("Purge", `Purge queue ${queue}? Every waiting and paused message of it is deleted. This cannot be undone.`,
        async () => {
          const r = await api(`${queuePath(queue)}/purge`, { method: "POST", body: { confirm: queue } });
          return [`Purged ${r.purged} messages from ${queue}.`];
        }, true),
    ];
  }

  // -- views ----------------------------------------------------------------------------

  function queueState(counts, consumers) {
    if (consumers === undefined) return h("span", { class: "muted" }, "—");
    if (consumers > 0) return h("span", { class: "badge ok", "data-state": "consumed" }, `${consumers} consumer${consumers > 1 ? "s" : ""}`);
    if (counts.paused > 0) return h("span", { class: "badge warn", "data-state": "paused" }, "paused");
    return h("span", { class: "badge warn", "data-state": "no-consumer" }, "no consumer");
  }

  /**
   * Completed and failed jobs per minute over the last minute, from consecutive totals.
   * `totals` are the sidecar's finished executions since it started (the sums of
   * celery_tasks_total), which keep moving when a queue's retention is full.
   */
  function rates(queue, totals, now) {
    let list = state.history.get(queue) || [];
    const last = list[list.length - 1];
    // Totals that went down: the sidecar restarted (or another process took over): start over.
    if (last && (totals.completed < last.completed || totals.failed < last.failed)) list = [];
    const newest = list[list.length - 1];
    if (!newest || newest.completed !== totals.completed || newest.failed !== totals.failed || now - newest.t > 5000) {
      list.push({ t: now, completed: totals.completed, failed: totals.failed });
    }
    while (list.length > 2 && now - list[0].t > RATE_WINDOW_MS) list.shift();
    state.history.set(queue, list);
    const first = list[0];
    const minutes = (now - first.t) / 60000;
    if (minutes < 5 / 60) return null;
    const per = (k) => (totals[k] - first[k]) / minutes;
    return { completed: per("completed"), failed: per("failed") };
  }

  const VIEWS = {
    async queues() {
      const [q, w] = await Promise.all([api("/v1/jobs/queues"), workersOrNull()]);
      return [{ q, consumers: w ? w.consumers : null, finished: w ? w.finished : null }, (data) => {
        const now = Date.now();
        const rows = data.q.queues.map((queue) => {
          const done = data.finished ? data.finished[queue.name] : null;
          const r = done ? rates(queue.name, { completed: done.succeeded, failed: done.failed }, now) : null;
          const consumers = data.consumers ? data.consumers[queue.name] : undefined;
          return h("tr", { "data-queue": queue.name },
            h("th", { scope: "row" }, h("a", { href: `#/queue/${enc(queue.name)}/failed/1` }, queue.name)),
            STATUSES.map((s) => h("td", { class: "num", "data-status": s },
              h("a", { href: `#/queue/${enc(queue.name)}/${s}/1`, "aria-label": `${queue.name} ${s}: ${queue.counts[s]}` }, queue.counts[s]))),
            h("td", {}, queueState(queue.counts, consumers)),
            h("td", { class: "num" }, r ? r.completed.toFixed(1) : "…"),
            h("td", { class: "num" }, r ? r.failed.toFixed(1) : "…"));
        });
        return [
          h("h1", {}, "Queues"),
          data.q.queues.length ? table([["Queue"], ...STATUSES.map((s) => [s, "num"]), ["State"],
            ["Completed/min", "num"], ["Failed/min", "num"]], rows, "Queues") :
            h("p", {}, "No queue known yet."),
          h("p", { class: "muted" }, "Rates: jobs that succeeded or failed per minute over the last minute, from the sidecar's totals (celery_tasks_total). The completed and failed counts are the jobs the sidecar retains."),
        ];
      }];
    },

    async queue(name, status = "failed", page = "1") {
      if (!STATUSES.includes(status)) status = "failed";
      const n = Math.max(1, parseInt(page, 10) || 1);
      const [d, w] = await Promise.all([
        api(`${queuePath(name)}?status=${enc(status)}&page=${n}&limit=${PAGE_SIZE}`), workersOrNull()]);
      return [{ d, consumers: w ? w.consumers[name] : undefined }, (data) => {
        const { d } = data;
        const base = `#/queue/${enc(name)}`;
        const tabs = h("ul", { class: "tabs", "aria-label": "Statuses" }, STATUSES.map((s) =>
          h("li", {}, h("a", { href: `${base}/${s}/1`, "aria-current": s === status ? "page" : null, "data-tab": s },
            `${s} (${d.counts[s]})`))));
        const rows = d.jobs.map((job) => h("tr", { "data-job": job.id || "" },
          h("td", { class: "clip" }, job.id === null ? h("span", { class: "muted" }, "(no id)") : jobLink(name, job.id)),
          h("td", {}, job.name || "—"),
          h("td", { class: "clip", title: argsSummary(job.data) }, argsSummary(job.data)),
          h("td", {}, when(job.timestamp)),
          h("td", { class: "num" }, job.attemptsMade),
          h("td", { class: "reason" }, job.failedReason || "")));
        const p = d.pagination;
        return [
          h("h1", {}, "Queue ", h("code", {}, name), " ", h("span", { id: "queue-state" }, queueState(d.counts, data.consumers))),
          h("div", { class: "actions", role: "group", "aria-label": "Queue actions" }, queueActions(name)),
          h("nav", { "aria-label": "Statuses" }, tabs),
          d.jobs.length ? table([["Id"], ["Name"], ["Arguments"], ["Published"], ["Attempts", "num"], ["Failed reason"]], rows, `${status} jobs`) :
            h("p", {}, `No ${status} jobs.`),
          pager(p, (k) => `${base}/${status}/${k}`),
        ];
      }];
    },

    async job(queue, id) {
      const found = await api(`/v1/jobs/search?q=${enc(id)}&queue=${enc(queue)}&limit=50`);
      const job = found.jobs.find((j) => j.id === id) || null;
      return [job, (job) => {
        if (!job) return [h("h1", {}, "Job ", h("code", {}, id)),
          h("p", {}, `Job ${id} is not known in queue ${queue}: it may have left the retained history, or sit beyond the bounded scan of the lists.`)];
        const known = ["id", "name", "state", "data", "failedReason", "timestamp", "processedOn", "finishedOn",
          "attemptsMade", "stacktrace", "returnValue", "ingestionSourceId", "error", "retriedBy"];
        const field = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
        const text = (v) => (v === null || v === undefined ? h("span", { class: "muted" }, "null") : String(v));
        const extra = Object.keys(job).filter((k) => !known.includes(k));
        return [
          h("h1", {}, "Job ", h("code", {}, job.id)),
          h("div", { class: "actions", role: "group", "aria-label": "Job actions" }, jobActions(queue, job)),
          h("dl", { class: "fields" },
            field("Queue", h("a", { href: `#/queue/${enc(queue)}/${job.state}/1` }, queue)),
            field("Name", text(job.name)),
            field("State", h("span", { "data-field": "state" }, job.state)),
            field("Published", when(job.timestamp)),
            field("Started", when(job.processedOn)),
            field("Finished", when(job.finishedOn)),
            field("Attempts", String(job.attemptsMade)),
            field("Failed reason", text(job.failedReason)),
            field("Error", text(job.error)),
            field("Ingestion source", text(job.ingestionSourceId)),
            job.retriedBy ? field("Retried by", h("a", { href: `#/job/${enc(queue)}/${enc(job.retriedBy)}`, "data-field": "retriedBy" }, job.retriedBy)) : null,
            extra.map((k) => field(k, h("pre", {}, json(job[k]))))),
          h("h2", {}, "Data"), h("pre", { "data-field": "data" }, json(job.data)),
          h("h2", {}, "Return value"), h("pre", { "data-field": "returnValue" }, json(job.returnValue)),
          h("h2", {}, `Tracebacks (${job.stacktrace.length})`),
          job.stacktrace.length ? job.stacktrace.map((tb, i) => h("details", { open: i === job.stacktrace.length - 1 },
            h("summary", {}, `Attempt ${i + 1} of the ${job.stacktrace.length} kept`), h("pre", { class: "traceback" }, tb))) :
            h("p", { class: "muted" }, "None."),
        ];
      }];
    },

    async workers() {
      const w = await api("/v1/jobs/workers");
      return [w, (w) => [
        h("h1", {}, "Workers"),
        w.workers.length ? table([["Hostname"], ["State"], ["Queues"], ["Active", "num"], ["Concurrency", "num"], ["Last seen"]],
          w.workers.map((x) => h("tr", { "data-worker": x.hostname },
            h("th", { scope: "row" }, x.hostname),
            h("td", {}, h("span", { class: `badge ${x.up ? "ok" : "bad"}` }, x.up ? "up" : "down")),
            h("td", {}, x.queues.map((q, i) => [i ? ", " : "", h("a", { href: `#/queue/${enc(q)}/active/1` }, q)])),
            h("td", { class: "num" }, x.active),
            h("td", { class: "num" }, x.concurrency === null ? "—" : x.concurrency),
            h("td", {}, when(x.lastSeen)))), "Workers") :
          h("p", {}, "No worker seen yet."),
      ]];
    },

    async search(params) {
      const q = params.get("q") || "";
      $("search-input").value = q;
      if (!q) return [null, () => [h("h1", {}, "Search"), h("p", {}, "Type a task id, a name, an argument or an error.")]];
      // The job object does not name its queue: search each queue to link every hit.
      const queues = (await api("/v1/jobs/queues")).queues.slice(0, 50);
      const pages = await Promise.all(queues.map((queue) =>
        api(`/v1/jobs/search?q=${enc(q)}&queue=${enc(queue.name)}&limit=${PAGE_SIZE}`)
          .then((r) => ({ queue: queue.name, r }))));
      return [pages, (pages) => {
        const rows = [];
        let total = 0;
        for (const { queue, r } of pages) {
          total += r.pagination.totalJobs;
          for (const job of r.jobs) {
            rows.push(h("tr", { "data-job": job.id || "" },
              h("td", { class: "clip" }, job.id === null ? "(no id)" : jobLink(queue, job.id)),
              h("td", {}, queue), h("td", {}, job.state), h("td", {}, job.name || "—"),
              h("td", { class: "clip", title: argsSummary(job.data) }, argsSummary(job.data)),
              h("td", { class: "reason" }, job.failedReason || "")));
          }
        }
        return [
          h("h1", {}, "Search ", h("code", {}, q)),
          h("p", {}, `${total} matching job${total === 1 ? "" : "s"}${rows.length < total ? `, the first ${PAGE_SIZE} of each queue shown` : ""}.`),
          rows.length ? table([["Id"], ["Queue"], ["State"], ["Name"], ["Arguments"], ["Failed reason"]], rows, "Search results") : null,
          h("p", { class: "muted" }, "Waiting and paused lists are scanned up to a bound; see the Jobs API's `scanned`."),
        ];
      }];
    },

    async audit(page = "1") {
      const n = Math.max(1, parseInt(page, 10) || 1);
      const a = await api(`/v1/jobs/audit?page=${n}&limit=${PAGE_SIZE}`);
      return [a, (a) => [
        h("h1", {}, "Audit log"),
        a.entries.length ? table([["When"], ["Key"], ["Action"], ["Queue"], ["Job"], ["Parameters"], ["Outcome"], ["Detail"]],
          a.entries.map((e) => h("tr", {},
            h("td", {}, when(e.at)), h("td", {}, e.key), h("td", {}, e.action), h("td", {}, e.queue),
            h("td", { class: "clip" }, e.job ? jobLink(e.queue, e.job) : "—"),
            h("td", { class: "clip", title: JSON.stringify(e.params) }, clip(JSON.stringify(e.params))),
            h("td", {}, h("span", { class: `badge ${e.outcome === "ok" ? "ok" : e.outcome === "failed" ? "bad" : "warn"}` }, e.outcome)),
            h("td", { class: "reason" }, e.detail || ""))), "Audit log") :
          h("p", {}, "No action recorded."),
        pager(a.pagination, (k) => `#/audit/${k}`),
      ]];
    },
  };

  async function workersOrNull() {
    try {
      return await api("/v1/jobs/workers");
    } catch (err) {
      if (err.status === 401 || err.status === 403) throw err;
      return null;
    }
  }

  function pager(p, href) {
    if (p.totalPages <= 1) return null;
    return h("nav", { class: "pager", "aria-label": "Pages" },
      p.currentPage > 1 ? h("a", { href: href(p.currentPage - 1), rel: "prev" }, "← Previous") : null,
      h("span", {}, `Page ${p.currentPage} of ${p.totalPages} (${p.totalJobs} jobs)`),
      p.currentPage < p.totalPages ? h("a", { href: href(p.currentPage + 1), rel: "next" }, "Next →") : null);
  }

  // -- routing and refreshing -----------------------------------------------------------

  function route() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [path, query] = hash.split("?");
    const parts = path.split("/").filter((p) => p !== "").map(decodeURIComponent);
    const name = parts.shift() || "queues";
    if (name === "search") return { name, args: [new URLSearchParams(query || "")] };
    if (!Object.hasOwn(VIEWS, name)) return { name: "queues", args: [] };
    return { name, args: parts };
  }

  let renderSeq = 0;

  async function refresh(force) {
    const { name, args } = route();
    const seq = ++renderSeq;
    for (const a of document.querySelectorAll("[data-nav]")) {
      a.setAttribute("aria-current", a.dataset.nav === name ? "page" : "false");
    }
    try {
      const [data, draw] = await VIEWS[name](...args);
      if (seq !== renderSeq) return;
      const where = JSON.stringify([name, args.map(String)]);
      const key = JSON.stringify([where, data]);
      if (!force && key === state.lastRender) return;
      state.lastRender = key;
      const focused = document.activeElement && main.contains(document.activeElement) ?
        focusKey(document.activeElement) : null;
      // A redraw of the same view keeps what the reader folded or unfolded.
      const folds = where === state.lastWhere ? [...main.querySelectorAll("details")].map((d) => d.open) : [];
      main.replaceChildren(...draw(data).flat(Infinity).filter(Boolean));
      main.querySelectorAll("details").forEach((d, i) => {
        if (i < folds.length) d.open = folds[i];
      });
      state.lastWhere = where;
      if (focused) restoreFocus(focused);
      main.setAttribute("data-view", name);
      main.setAttribute("aria-busy", "false");
    } catch (err) {
      if (seq !== renderSeq) return;
      state.lastRender = null;
      state.lastWhere = null;
      const keyProblem = err.status === 401 || err.status === 403;
      main.replaceChildren(h("h1", {}, "Could not load this view"), h("p", { class: "notice error" }, err.message),
        keyProblem ? h("p", {}, h("button", { type: "button", id: "key-retry", onclick: () => askKey(err.message) }, "Enter an API key")) : null);
      main.setAttribute("data-view", "error");
      main.setAttribute("aria-busy", "false");
    }
  }

  /**
   * What names a focused element across a redraw: its link or its action, else its place
   * among the view's elements of its kind (a traceback's fold, a table's frame).
   */
  function focusKey(el) {
    const named = el.getAttribute("href") || el.dataset.action;
    if (named) return named;
    const tag = el.tagName.toLowerCase();
    return `${tag}:${[...main.querySelectorAll(tag)].indexOf(el)}`;
  }

  /** Focus the element of the view that `focusKey` names `k`; whether there is one. */
  function restoreFocus(k) {
    const place = /^([a-z0-9]+):(\d+)$/.exec(k);
    const candidates = place ? [main.querySelectorAll(place[1])[Number(place[2])]] :
      main.querySelectorAll("a, button");
    for (const el of candidates) {
      if (el && focusKey(el) === k && !el.disabled) {
        el.focus();
        return true;
      }
    }
    return false;
  }

  async function poll() {
    // Nothing is redrawn under an open dialog (the key, or an action's confirmation).
    if (document.querySelector("dialog[open]") || document.hidden) return;
    try {
      const g = await api("/v1/jobs/generation");
      $("live").textContent = `snapshot ${g.generation}, checked ${new Date().toLocaleTimeString()}`;
      if (g.generation !== state.generation) {
        state.generation = g.generation;
        await refresh(false);
      }
    } catch (err) {
      $("live").textContent = `not updated, checked ${new Date().toLocaleTimeString()}: ${err.message}`;
    }
  }

  $("skip").addEventListener("click", (event) => {
    event.preventDefault(); // #main is no view: move the focus instead of the route
    main.focus();
  });
  window.addEventListener("hashchange", () => {
    $("notice").hidden = true;
    main.setAttribute("aria-busy", "true");
    refresh(true).then(() => main.focus({ preventScroll: true }));
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("search-input").value.trim();
    if (q) location.hash = `#/search?q=${enc(q)}`;
  });

  if (sessionStorage.getItem(KEY_STORE) === null) askKey("");
  else refresh(true);
  setInterval(poll, POLL_MS);
})();
