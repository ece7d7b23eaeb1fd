// The alarm board: filters, sorting and live updates (server-sent events from /events).
// Rows are built with textContent only: an alarm's text is never parsed as HTML.
"use strict";
(function () {
  const SEVERITIES = ["unknown", "info", "warning", "minor", "major", "critical"];
  const RANK = new Map(SEVERITIES.map((s, i) => [s, i]));
  const rank = (s) => (RANK.has(s) ? RANK.get(s) : -1);
  const table = document.getElementById("alarms");
  const tbody = table.tBodies[0];
  const live = document.getElementById("live");
  const filters = document.getElementById("filters");
  const alarms = new Map();  // ref (text) -> alarm
  let sortKey = null, sortDir = 1;

  function iso(ts) {
    if (ts === null || ts === undefined) return "";
    return new Date(ts * 1000).toISOString().slice(0, 19).replace("T", " ");
  }

  function cell(tr, cls, text) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function link(td, href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  }

  function row(a) {
    const tr = document.createElement("tr");
    tr.dataset.ref = a.ref;
    tr.className = "sev-" + a.severity + (a.acked_by ? " acked" : "");
    const sev = cell(tr);
    const span = document.createElement("span");
    span.className = "sev sev-" + a.severity;
    span.textContent = a.severity;
    sev.appendChild(span);
    link(cell(tr, "host"), "/device?host=" + encodeURIComponent(a.host), a.host);
    link(cell(tr, "name"), "/alarm/" + a.ref, a.name);
    cell(tr, "text", a.message);
    cell(tr, "time", iso(a.first_seen));
    cell(tr, "time", iso(a.last_seen));
    cell(tr, "num", String(a.count));
    cell(tr, "ack", a.acked_by || "");
    const cause = cell(tr, "cause");
    if (a.cause_ref) {
      const parent = alarms.get(a.cause_ref);
      link(cause, "/alarm/" + a.cause_ref, parent ? parent.host + " " + parent.name : a.cause_ref);
    }
    cell(tr, "flap", a.flapping ? "flapping" : "");
    return tr;
  }

  // The filters as a test on one alarm (read from the form once per drawing).
  function filter() {
    const f = new FormData(filters);
    const lowest = f.get("severity") ? Math.max(0, rank(f.get("severity"))) : 0;
    const host = (f.get("host") || "").toLowerCase();
    const text = (f.get("text") || "").toLowerCase();
    const acked = f.get("acked") || "";
    return (a) => {
      if (rank(a.severity) < lowest) return false;
      if (host && !a.host.toLowerCase().includes(host)) return false;
      if (text && ![a.host, a.name, a.message].some((v) => (v || "").toLowerCase().includes(text)))
        return false;
      if ((acked === "yes" && !a.acked_by) || (acked === "no" && a.acked_by)) return false;
      return true;
    };
  }

  function compare(x, y) {
    if (sortKey) {
      let a = x[sortKey], b = y[sortKey];
      if (sortKey === "severity") { a = rank(a); b = rank(b); }
      if (a === null || a === undefined) a = "";
      if (b === null || b === undefined) b = "";
      if (a < b) return -sortDir;
      if (a > b) return sortDir;
    }
    // Worst first, then the most recently seen.
    return rank(y.severity) - rank(x.severity) || y.last_seen - x.last_seen ||
      (x.ref < y.ref ? -1 : 1);
  }

  // Changes are drawn at most every 250 ms: a storm of updates costs one redraw per
  // interval, not one per alarm.
  const changed = new Set();
  let pending = null;
  function schedule(ref) {
    if (ref) changed.add(ref);
    if (pending === null) pending = setTimeout(() => { pending = null; render(); }, 250);
  }

  function render() {
    const shown = Array.from(alarms.values()).filter(filter()).sort(compare);
    const rows = shown.map((a) => {
      const tr = row(a);
      if (changed.has(a.ref)) tr.classList.add("flash");
      return tr;
    });
    changed.clear();
    tbody.replaceChildren(...rows);
    document.getElementById("shown").textContent = String(shown.length);
    document.getElementById("total").textContent = String(alarms.size);
    document.getElementById("empty").hidden = shown.length > 0;
    // When the table was last drawn (ms since the page's start): for benchmarks and tests.
    table.dataset.renderedAt = String(performance.now());
  }

  function setLive(state, text) {
    live.className = "live " + state;
    live.textContent = text;
    live.dataset.state = state;
  }

  function connect() {
    const source = new EventSource("/events");
    source.onopen = () => setLive("live-on", "live");
    source.onerror = () => {
      setLive("reconnecting", "reconnecting…");
      // A stream refused for want of a session never comes back by itself (the
      // console restarted, or the login expired): say so and stop trying.
      fetch("/api/alarms", {credentials: "same-origin", cache: "no-store"}).then((r) => {
        if (r.status === 401) {
          source.close();
          setLive("logged-out", "logged out: reload to log in");
        }
      }).catch(() => {});
    };
    source.addEventListener("snapshot", (e) => {
      const rows = JSON.parse(e.data);
      if (rows === null) return;  // the console is still reading the alarms
      const loading = document.getElementById("loading");
      if (loading) loading.hidden = true;
      alarms.clear();
      for (const a of rows) alarms.set(a.ref, a);
      render();
      setLive("live-on", "live");
    });
    source.addEventListener("upsert", (e) => {
      const a = JSON.parse(e.data);
      alarms.set(a.ref, a);
      schedule(a.ref);
    });
    source.addEventListener("remove", (e) => {
      alarms.delete(JSON.parse(e.data).ref);
      schedule();
    });
  }

  function refilter() {
    render();
    // Keep the filters in the address, so that a reload or a shared link shows the same.
    const params = new URLSearchParams(new FormData(filters));
    for (const [k, v] of Array.from(params.entries())) if (!v) params.delete(k);
    const query = params.toString();
    history.replaceState(null, "", query ? "?" + query : location.pathname);
  }
  // "input" as one types; "change" for the lists (some browsers send only that).
  filters.addEventListener("input", refilter);
  filters.addEventListener("change", refilter);
  filters.addEventListener("submit", (e) => e.preventDefault());

  for (const th of table.tHead.rows[0].cells) {
    const key = th.dataset.sort;
    if (!key) continue;
    th.tabIndex = 0;
    const sort = () => {
      sortDir = sortKey === key ? -sortDir : 1;
      sortKey = key;
      for (const other of table.tHead.rows[0].cells) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      render();
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  }
  connect();
})();
