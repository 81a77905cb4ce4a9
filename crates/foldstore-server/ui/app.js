// foldstore UI: a small hash router over the HTTP API. No build step, no
// dependencies. Every piece of event content reaches the page as text nodes or
// attributes set through the DOM API; nothing is ever parsed as HTML.
"use strict";

(() => {
  const view = document.getElementById("view");
  let cleanup = null; // the current page's teardown (timers, EventSource)

  // ---- DOM helpers ---------------------------------------------------------

  /** Builds an element: h("a.cls", {href: "#/"}, "text", child, ...). */
  function h(tag, attrs, ...children) {
    const [name, ...classes] = tag.split(".");
    const el = document.createElement(name || "div");
    if (classes.length) el.className = classes.join(" ");
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }

  /** Pretty JSON with syntax colours, built from text nodes. */
  function jsonView(value) {
    const pre = h("pre.json");
    const put = (text, cls) => pre.append(cls ? h("span." + cls, null, text) : document.createTextNode(text));
    const walk = (v, indent) => {
      const pad = "  ".repeat(indent);
      if (v === null || typeof v === "boolean") put(String(v), "j-lit");
      else if (typeof v === "number") put(String(v), "j-num");
      else if (typeof v === "string") put(JSON.stringify(v), "j-str");
      else if (Array.isArray(v)) {
        if (!v.length) return put("[]");
        put("[\n");
        v.forEach((item, i) => {
          put(pad + "  ");
          walk(item, indent + 1);
          put(i < v.length - 1 ? ",\n" : "\n");
        });
        put(pad + "]");
      } else {
        const keys = Object.keys(v);
        if (!keys.length) return put("{}");
        put("{\n");
        keys.forEach((k, i) => {
          put(pad + "  ");
          put(JSON.stringify(k), "j-key");
          put(": ");
          walk(v[k], indent + 1);
          put(i < keys.length - 1 ? ",\n" : "\n");
        });
        put(pad + "}");
      }
    };
    walk(value, 0);
    return pre;
  }

  function fmtNumber(n) {
    return new Intl.NumberFormat().format(n);
  }

  function fmtRate(n) {
    return n >= 100 ? fmtNumber(Math.round(n)) : n.toFixed(1);
  }

  function relTime(iso) {
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return "";
    const s = Math.round((Date.now() - t) / 1000);
    if (s < 5) return "just now";
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    if (s < 86400) return Math.floor(s / 3600) + "h ago";
    return new Date(t).toLocaleDateString();
  }

  function fmtTime(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }

  function fmtDuration(secs) {
    const s = Math.floor(secs);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }

  // ---- API -----------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || "HTTP " + status);
      this.status = status;
      this.code = problem && problem.code;
    }
  }

  async function api(path) {
    const res = await fetch(path, { headers: { accept: "application/json" } });
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }

  function qs(params) {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
    const s = p.toString();
    return s ? "?" + s : "";
  }

  const streamHref = (name) => "#/streams/" + encodeURIComponent(name);
  const eventHref = (position) => "#/events/" + encodeURIComponent(position);

  function errorBox(err) {
    return h("div.error-box", { role: "alert" }, err && err.message ? err.message : String(err));
  }

  // ---- Shared pieces ---------------------------------------------------------

  /** One event as an expandable row; showStream for global lists. */
  function eventRow(e, { showStream = true, fresh = false } = {}) {
    const li = h("li.event" + (fresh ? ".new" : ""), { dataset: { position: e.position } });
    const toggle = () => {
      li.classList.toggle("open");
      head.setAttribute("aria-expanded", li.classList.contains("open") ? "true" : "false");
    };
    const head = h(
      "div.event-head",
      { role: "button", tabindex: "0", "aria-expanded": "false", onclick: toggle,
        onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); toggle(); } } },
      h("span.rev", { title: "revision" }, "#" + e.revision),
      h("span.type", null, e.type),
      showStream ? h("span.stream", { title: e.stream }, e.stream) : h("span.stream.mono", { title: "position" }, "@" + e.position),
      h("span.time", { title: fmtTime(e.recorded_at) }, relTime(e.recorded_at)),
    );
    const body = h(
      "div.event-body",
      null,
      h("div", null, h("div.label", null, e.content_type ? "Data (" + e.content_type + ", base64)" : "Data"), jsonView(e.data)),
      h("div", null, h("div.label", null, "Metadata"), jsonView(e.metadata),
        h("div.links", null,
          h("a", { href: eventHref(e.position) }, "Event details"), " · ",
          h("a", { href: streamHref(e.stream) }, "Stream " + e.stream))),
    );
    li.append(head, body);
    return li;
  }

  function eventsList(events, opts) {
    if (!events.length) return h("p.empty", null, "No events.");
    return h("ul.events", null, events.map((e) => eventRow(e, opts)));
  }

  function sparkline(values) {
    const w = 200, hgt = 36;
    const s = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", "aria-hidden": "true" });
    const max = Math.max(1, ...values);
    const step = values.length > 1 ? w / (values.length - 1) : w;
    const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(hgt - 2 - (v / max) * (hgt - 4)).toFixed(1)}`);
    if (pts.length) {
      s.append(svg("polygon", { points: `0,${hgt} ${pts.join(" ")} ${((values.length - 1) * step).toFixed(1)},${hgt}` }));
      s.append(svg("polyline", { points: pts.join(" ") }));
    }
    return s;
  }

  // ---- Pages -----------------------------------------------------------------

  async function dashboard() {
    const rateValue = h("div.stat-value", { id: "stat-rate" }, "–");
    const spark = h("div");
    const streamsValue = h("div.stat-value", { id: "stat-streams" }, "–");
    const subsValue = h("div.stat-value", { id: "stat-subscribers" }, "–");
    const headValue = h("div.stat-value", { id: "stat-head" }, "–");
    const appendsFoot = h("div.stat-foot", null, " ");
    const uptimeFoot = h("div.stat-foot", null, " ");
    const recent = h("div.card", null, h("p.empty", null, "Loading…"));
    const problem = h("div");
    view.replaceChildren(
      h("div.page-head", null, h("div", null, h("h1", null, "Dashboard"), h("p.sub", null, "What the store is doing right now."))),
      problem,
      h("div.stats", null,
        h("div.card.stat", null, h("div.stat-label", null, "Events per second"), rateValue, spark),
        h("div.card.stat", null, h("div.stat-label", null, "Streams"), streamsValue, h("div.stat-foot", null, h("a", { href: "#/streams" }, "Browse streams"))),
        h("div.card.stat", null, h("div.stat-label", null, "Live subscribers"), subsValue, h("div.stat-foot", null, h("a", { href: "#/tail" }, "Open the live tail"))),
        h("div.card.stat", null, h("div.stat-label", null, "Head position"), headValue, appendsFoot, uptimeFoot),
      ),
      h("section.section", null, h("h2", null, "Latest events"), recent),
    );

    const rates = [];
    let last = null;
    let stopped = false;
    async function tick() {
      try {
        const s = await api("/api/stats");
        const now = performance.now();
        // A prefix-limited token gets its own streams' count and no store-wide figures.
        const limited = Array.isArray(s.prefixes);
        if (last && !limited) {
          const dt = (now - last.at) / 1000;
          rates.push(Math.max(0, (s.events_appended - last.events) / dt));
          if (rates.length > 60) rates.shift();
          rateValue.textContent = fmtRate(rates[rates.length - 1]);
          spark.replaceChildren(sparkline(rates));
        }
        last = { at: now, events: s.events_appended };
        streamsValue.textContent = fmtNumber(s.streams) + (s.streams_capped ? "+" : "");
        if (limited) {
          rateValue.textContent = "–";
          subsValue.textContent = "–";
          headValue.textContent = "–";
          appendsFoot.textContent = "your streams: " + s.prefixes.join(", ");
        } else {
          subsValue.textContent = fmtNumber(s.subscribers);
          headValue.textContent = s.head_position ?? "empty";
          appendsFoot.textContent = fmtNumber(s.events_appended) + " events in " + fmtNumber(s.appends) + " appends";
        }
        uptimeFoot.textContent = "up " + fmtDuration(s.uptime_seconds);
        const page = await api("/all" + qs({ direction: "backwards", limit: 10 }));
        recent.replaceChildren(eventsList(page.events));
        problem.replaceChildren();
      } catch (err) {
        problem.replaceChildren(errorBox(err));
      }
      if (!stopped) timer = setTimeout(tick, 2000);
    }
    let timer = null;
    await tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  async function streams(params) {
    const mode = params.get("category") !== null ? "category" : "prefix";
    const query = params.get(mode) || "";
    const after = params.get("after") || "";
    const input = h("input.grow", { type: "search", id: "stream-search", value: query, "aria-label": "Search streams",
      placeholder: mode === "category" ? "Category, such as order" : "Stream name prefix, such as order-" });
    const modeButtons = ["prefix", "category"].map((m) =>
      h("button", { type: "button", "aria-pressed": m === mode ? "true" : "false", dataset: { mode: m },
        onclick: () => go({ [m]: input.value }) }, m === "prefix" ? "Prefix" : "Category"));
    const go = (p) => { location.hash = "#/streams" + qs(p); };
    const form = h("form.toolbar", { role: "search", onsubmit: (ev) => { ev.preventDefault(); go({ [mode]: input.value }); } },
      input, h("div.segmented", { role: "group", "aria-label": "Search by" }, modeButtons), h("button.primary", { type: "submit" }, "Search"));
    const body = h("div.card", null, h("p.empty", null, "Loading…"));
    view.replaceChildren(
      h("div.page-head", null, h("div", null, h("h1", null, "Streams"), h("p.sub", null, "Every stream ever written, by name."))),
      form, body);
    try {
      const page = await api("/api/streams" + qs({ [mode]: query, after, limit: 50 }));
      if (!page.streams.length) {
        body.replaceChildren(h("p.empty", null, query ? "No stream matches." : "No streams yet: append an event to create one."));
        return;
      }
      const rows = page.streams.map((s) => h("tr", null,
        h("td.name", null, h("a", { href: streamHref(s.name) }, s.name)),
        h("td", null, h("span.badge." + s.state, null, s.state)),
        h("td.num", null, s.revision ?? "–"),
        h("td.hide-narrow", null, s.last_type ? h("span.type", null, s.last_type) : "–"),
        h("td.time.hide-narrow", { title: s.last_recorded_at ? fmtTime(s.last_recorded_at) : "" }, s.last_recorded_at ? relTime(s.last_recorded_at) : "–")));
      const pager = h("div.pager", null,
        after ? h("button", { type: "button", onclick: () => go({ [mode]: query }) }, "First page") : null,
        h("button", { type: "button", disabled: !page.next, onclick: () => go({ [mode]: query, after: page.next }) }, "Next page"));
      body.replaceChildren(
        h("div.table-wrap", null, h("table", null,
          h("thead", null, h("tr", null, h("th", null, "Stream"), h("th", null, "State"), h("th.num", null, "Revision"),
            h("th.hide-narrow", null, "Last event"), h("th.hide-narrow", null, "Updated"))),
          h("tbody", null, rows))),
        pager);
    } catch (err) {
      body.replaceChildren(errorBox(err));
    }
  }

  const PAGE = 20;

  async function stream(name, params) {
    const from = params.get("from");
    const body = h("div.card", null, h("p.empty", null, "Loading…"));
    const badge = h("span");
    view.replaceChildren(
      h("div.page-head", null,
        h("div", null, h("div.crumbs", null, h("a", { href: "#/streams" }, "Streams"), " / "), h("h1", null, name), h("p.sub", null, badge)),
        h("div.toolbar", null, h("a", { href: "#/tail" + qs({ stream: name }) }, "Tail this stream live"))),
      body);
    try {
      const page = await api("/streams/" + encodeURIComponent(name) + qs({ direction: "backwards", limit: PAGE, from }));
      const events = page.events;
      const newest = from === null;
      if (!events.length && !newest) {
        // Past the newest event (the stream is shorter than "Newer" assumed).
        location.replace(streamHref(name));
        return;
      }
      badge.replaceChildren(events.length
        ? "Revisions " + events[events.length - 1].revision + "–" + events[0].revision + (newest ? " (newest first)" : "")
        : "No events");
      const go = (f) => { location.hash = streamHref(name) + qs({ from: f }); };
      const pager = h("div.pager", null,
        h("button", { type: "button", disabled: newest, onclick: () => go(null) }, "Newest"),
        h("button", { type: "button", disabled: newest, onclick: () => go(events.length ? events[0].revision + PAGE : null) }, "Newer"),
        h("button", { type: "button", disabled: page.next === undefined, onclick: () => go(page.next) }, "Older"));
      body.replaceChildren(eventsList(events, { showStream: false }), pager);
      const first = body.querySelector(".event");
      if (first) first.classList.add("open");
    } catch (err) {
      if (err.code === "stream_not_found") badge.replaceChildren(h("span.badge.deleted", null, "not found"));
      if (err.code === "stream_tombstoned") badge.replaceChildren(h("span.badge.tombstoned", null, "tombstoned"));
      body.replaceChildren(errorBox(err));
    }
  }

  async function eventDetail(position) {
    const body = h("div", null, h("p.empty", null, "Loading…"));
    view.replaceChildren(body);
    try {
      const page = await api("/all" + qs({ from: position, limit: 1 }));
      const e = page.events[0];
      if (!e || e.position !== position) throw new Error("No event at position " + position + ".");
      const fields = [
        ["Id", e.id], ["Stream", h("a", { href: streamHref(e.stream) }, e.stream)], ["Revision", e.revision],
        ["Position", e.position], ["Recorded", fmtTime(e.recorded_at) + " (" + e.recorded_at + ")"],
        ["Content type", e.content_type || "application/json"],
      ];
      const raw = JSON.stringify(e, null, 2);
      const copy = h("button", { type: "button", onclick: async () => {
        try { await navigator.clipboard.writeText(raw); copy.textContent = "Copied"; } catch (_) { copy.textContent = "Copy failed"; }
      } }, "Copy JSON");
      body.replaceChildren(
        h("div.page-head", null,
          h("div", null, h("div.crumbs", null, h("a", { href: streamHref(e.stream) }, e.stream), " / #" + e.revision), h("h1", null, e.type)),
          h("div.toolbar", null, copy)),
        h("div.card.pad", null, h("dl.fields", null, fields.flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]))),
        h("div.grid-2.section", null,
          h("div", null, h("div.label", null, e.content_type ? "Data (base64)" : "Data"), jsonView(e.data)),
          h("div", null, h("div.label", null, "Metadata"), jsonView(e.metadata))));
    } catch (err) {
      body.replaceChildren(h("div.page-head", null, h("h1", null, "Event " + position)), errorBox(err));
    }
  }

  function tail(params) {
    const only = params.get("stream"); // one stream instead of filtered $all
    const filters = { category: params.get("category") || "", type: params.get("type") || "", prefix: params.get("prefix") || "" };
    const inputs = {
      category: h("input.grow", { type: "text", id: "tail-category", placeholder: "Category", value: filters.category, "aria-label": "Category" }),
      prefix: h("input.grow", { type: "text", id: "tail-prefix", placeholder: "Stream prefix", value: filters.prefix, "aria-label": "Stream prefix" }),
      type: h("input.grow", { type: "text", id: "tail-type", placeholder: "Event types, comma-separated", value: filters.type, "aria-label": "Event types" }),
    };
    const status = h("span.pill.connecting", { id: "tail-status", role: "status" }, h("span.dot"), h("span.pill-text", null, "Connecting"));
    const counter = h("span.counter", { id: "tail-count" }, "0 events");
    const list = h("ul.events", { id: "tail-list", "aria-live": "polite" });
    const empty = h("p.empty", { id: "tail-empty" }, "Waiting for new events…");
    const problem = h("div");
    let paused = false;
    let count = 0;
    const held = [];
    const pauseBtn = h("button", { type: "button", id: "tail-pause", onclick: () => {
      paused = !paused;
      pauseBtn.textContent = paused ? "Resume" : "Pause";
      if (!paused) { held.splice(0).forEach(add); setStatus("live", "Live"); } else setStatus("paused", "Paused");
    } }, "Pause");
    const form = h("form.toolbar", { onsubmit: (ev) => {
      ev.preventDefault();
      location.hash = "#/tail" + qs({ category: inputs.category.value.trim(), prefix: inputs.prefix.value.trim(), type: inputs.type.value.trim() });
    } }, inputs.category, inputs.prefix, inputs.type, h("button.primary", { type: "submit" }, "Apply"));
    view.replaceChildren(
      h("div.page-head", null,
        h("div", null, h("h1", null, "Live tail"),
          h("p.sub", null, only ? ["New events in ", h("a", { href: streamHref(only) }, only), " as they are committed · ", h("a", { href: "#/tail" }, "all streams")]
            : "New events in $all as they are committed.")),
        h("div.toolbar", null, counter, status, pauseBtn,
          h("button", { type: "button", onclick: () => { list.replaceChildren(); count = 0; counter.textContent = "0 events"; list.before(empty); } }, "Clear"))),
      only ? null : form, problem, h("div.card", null, empty, list));

    function setStatus(kind, text) {
      status.className = "pill " + kind;
      status.querySelector(".pill-text").textContent = text;
    }
    function add(e) {
      empty.remove();
      list.prepend(eventRow(e, { fresh: true }));
      while (list.children.length > 500) list.lastElementChild.remove();
      count += 1;
      counter.textContent = fmtNumber(count) + (count === 1 ? " event" : " events");
    }

    const source = new EventSource(only
      ? "/streams/" + encodeURIComponent(only) + "/subscribe" + qs({ from: "end" })
      : "/all/subscribe" + qs({ from: "end", category: filters.category, prefix: filters.prefix, type: filters.type }));
    source.addEventListener("open", () => { problem.replaceChildren(); setStatus(paused ? "paused" : "live", paused ? "Paused" : "Live"); });
    source.addEventListener("event", (msg) => {
      let e;
      try { e = JSON.parse(msg.data); } catch (_) { return; }
      if (paused) held.push(e); else add(e);
    });
    source.addEventListener("error", (msg) => {
      if (msg.data) {
        // The server's own error event: a problem body.
        let p = null;
        try { p = JSON.parse(msg.data); } catch (_) { /* not JSON */ }
        problem.replaceChildren(errorBox(new ApiError(p && p.status, p)));
        if (p && p.code !== "subscriber_too_slow") { source.close(); setStatus("error", "Stopped"); return; }
      }
      setStatus(source.readyState === EventSource.CLOSED ? "error" : "connecting", source.readyState === EventSource.CLOSED ? "Disconnected" : "Reconnecting");
    });
    return () => source.close();
  }

  function notFound() {
    view.replaceChildren(h("div.page-head", null, h("h1", null, "Not found")), h("p", null, h("a", { href: "#/" }, "Back to the dashboard")));
  }

  // ---- Router ----------------------------------------------------------------

  let generation = 0;

  async function route() {
    if (cleanup) { cleanup(); cleanup = null; }
    const mine = ++generation;
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query = ""] = hash.split("?");
    const params = new URLSearchParams(query);
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    let nav = "";
    let result;
    if (parts.length === 0) { nav = "dashboard"; result = dashboard(); }
    else if (parts[0] === "streams" && parts.length === 1) { nav = "streams"; result = streams(params); }
    else if (parts[0] === "streams" && parts.length === 2) { nav = "streams"; result = stream(parts[1], params); }
    else if (parts[0] === "events" && parts.length === 2) { result = eventDetail(parts[1]); }
    else if (parts[0] === "tail") { nav = "tail"; result = tail(params); }
    else result = notFound();
    document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === nav));
    document.title = "foldstore" + (nav ? " · " + nav : "");
    const teardown = await Promise.resolve(result);
    if (mine !== generation) {
      // The user moved on while this page loaded.
      if (typeof teardown === "function") teardown();
      return;
    }
    if (typeof teardown === "function") cleanup = teardown;
    document.body.dataset.ready = hash;
  }

  async function health() {
    const el = document.getElementById("health");
    try {
      const r = await api("/health");
      el.className = "health ok";
      el.querySelector(".health-text").textContent = r.status === "ok" ? "healthy" : r.status;
    } catch (_) {
      el.className = "health bad";
      el.querySelector(".health-text").textContent = "unreachable";
    }
  }

  window.addEventListener("hashchange", route);
  route();
  health();
  setInterval(health, 10000);
})();
