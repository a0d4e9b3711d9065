// outbox dashboard: the queue, live. Plain JavaScript, no libraries, nothing from elsewhere.
// Text from the journal is only ever set with textContent, never parsed as HTML.
"use strict";

const STATES = ["pending", "submitted", "downloading", "done", "failed", "rejected", "cancelled"];
const PAGE = 50;
const $ = (id) => document.getElementById(id);

const view = {
  filters: { state: "", template: "", q: "" },
  cursors: [null], // cursors[i] opens page i; the newest page has none
  page: 0,
  next: null,
  rows: new Map(), // entry id -> <tr>
  open: null, // the entry shown in the detail panel
  detail: null,
  fresh: 0, // entries added since the list was loaded
  lastEvent: 0,
};

// -- talking to the server ---------------------------------------------------------------

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (body.error && body.error.message) || `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function post(path, payload = {}) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

let toastTimer = 0;
function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("show"), 4000);
}

// -- formatting --------------------------------------------------------------------------

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const today = new Date().toDateString() === date.toDateString();
  return today
    ? date.toLocaleTimeString()
    : date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

function badge(element, state) {
  element.className = `badge ${state}`;
  element.textContent = state;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// -- summary: counts and facts -----------------------------------------------------------

function buildCounts() {
  const box = $("counts");
  for (const state of STATES) {
    const button = el("button", "count");
    button.type = "button";
    button.dataset.state = state;
    button.setAttribute("aria-pressed", "false");
    button.append(el("span", "n", "–"), el("span", "label", state));
    button.addEventListener("click", () => {
      setFilter("state", view.filters.state === state ? "" : state);
    });
    box.append(button);
  }
}

const FACT_ROWS = [
  ["connectivity", "network"],
  ["auth", "api key"],
  ["server", "server"],
  ["rate_limit", "rate limit"],
  ["next_due", "next due"],
  ["downloads", "downloads"],
];

function buildFacts() {
  const box = $("facts");
  for (const [name, label] of FACT_ROWS) {
    const row = el("div", "fact");
    row.dataset.fact = name;
    row.append(el("dt", "", label), el("dd", "", "–"));
    box.append(row);
  }
}

async function loadSummary() {
  const summary = await api("api/summary");
  $("journal").textContent = summary.journal;
  $("journal").title = `journal ${summary.journal} · API ${summary.base_url}`;
  for (const button of $("counts").children) {
    const n = summary.counts[button.dataset.state];
    button.querySelector(".n").textContent = n.toLocaleString();
    button.title = `${n.toLocaleString()} ${button.dataset.state}`;
  }
  const known = new Map(summary.facts.map((fact) => [fact.name, fact]));
  for (const row of $("facts").children) {
    const name = row.dataset.fact;
    const cell = row.querySelector("dd");
    let text = "not checked yet";
    let mood = "";
    if (known.has(name)) {
      const fact = known.get(name);
      text = `${fact.text} · ${when(fact.at)}`;
      mood = fact.ok ? "ok" : "bad";
    } else if (name === "next_due") {
      text = summary.next_due ? when(summary.next_due) : "nothing unfinished";
    } else if (name === "downloads") {
      text = summary.downloads;
    }
    cell.textContent = text;
    cell.title = text;
    cell.className = mood;
  }
  syncTemplates(summary.templates);
  return summary;
}

function syncTemplates(templates) {
  const select = $("f-template");
  const present = new Set([...select.options].map((option) => option.value));
  for (const slug of templates) {
    if (!present.has(slug)) select.append(new Option(slug, slug));
  }
}

// -- the list ----------------------------------------------------------------------------

function fillRow(tr, entry) {
  const cells = tr.children;
  badge(cells[0].firstChild, entry.state);
  cells[1].textContent = entry.template;
  cells[2].textContent = entry.key;
  cells[2].title = entry.key;
  cells[3].textContent = when(entry.updated_at);
  cells[3].title = entry.updated_at;
  cells[4].textContent = entry.note;
  cells[4].title = entry.note;
  tr.dataset.state = entry.state;
  // A row that no longer matches the state filter stays put (nothing jumps), dimmed.
  tr.classList.toggle("stale", Boolean(view.filters.state) && view.filters.state !== entry.state);
}

function makeRow(entry) {
  const tr = el("tr");
  tr.tabIndex = 0;
  tr.dataset.id = entry.id;
  const state = el("td", "c-state");
  state.append(el("span"));
  tr.append(state, el("td", "c-template"), el("td", "c-key"), el("td", "c-when"), el("td", "c-note"));
  tr.addEventListener("click", () => openEntry(entry.id));
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") openEntry(entry.id);
  });
  fillRow(tr, entry);
  return tr;
}

async function loadPage() {
  const params = new URLSearchParams({ limit: String(PAGE) });
  for (const [name, value] of Object.entries(view.filters)) if (value) params.set(name, value);
  const cursor = view.cursors[view.page];
  if (cursor) params.set("after", cursor);
  const page = await api(`api/entries?${params}`);
  const body = $("rows");
  const focused = document.activeElement && document.activeElement.dataset.id;
  view.rows.clear();
  body.replaceChildren(
    ...page.entries.map((entry) => {
      const tr = makeRow(entry);
      view.rows.set(entry.id, tr);
      return tr;
    }),
  );
  if (focused && view.rows.has(focused)) view.rows.get(focused).focus();
  markSelected();
  view.next = page.next;
  $("empty").hidden = page.entries.length > 0;
  $("newer").disabled = view.page === 0;
  $("older").disabled = !page.next;
  const first = view.page * PAGE + 1;
  $("pageinfo").textContent = page.entries.length
    ? `${first.toLocaleString()}–${(first + page.entries.length - 1).toLocaleString()}`
    : "";
  if (view.page === 0) setFresh(0);
}

function setFilter(name, value) {
  view.filters[name] = value;
  if (name === "state") $("f-state").value = value;
  for (const button of $("counts").children) {
    button.setAttribute("aria-pressed", String(button.dataset.state === view.filters.state));
  }
  view.cursors = [null];
  view.page = 0;
  loadPage().catch((error) => toast(error.message));
}

function turnPage(step) {
  if (step > 0 && !view.next) return;
  if (step < 0 && view.page === 0) return;
  if (step > 0) view.cursors[view.page + 1] = view.next;
  view.page += step;
  loadPage().catch((error) => toast(error.message));
}

function setFresh(count) {
  view.fresh = count;
  const button = $("fresh");
  button.hidden = count === 0;
  button.textContent = `${count.toLocaleString()} new ${count === 1 ? "entry" : "entries"} — show`;
}

// -- one entry ---------------------------------------------------------------------------

function markSelected() {
  for (const [id, tr] of view.rows) tr.classList.toggle("selected", id === view.open);
}

async function openEntry(id) {
  if (location.hash !== `#${id}`) history.replaceState(null, "", `#${id}`);
  view.open = id;
  markSelected();
  try {
    showDetail(await api(`api/entries/${encodeURIComponent(id)}`));
  } catch (error) {
    toast(error.message);
    closeEntry();
  }
}

function closeEntry() {
  const id = view.open;
  view.open = null;
  view.detail = null;
  $("detail").hidden = true;
  $("amend").hidden = true;
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  markSelected();
  if (id && view.rows.has(id)) view.rows.get(id).focus();
}

const FIELDS = [
  ["id", "id"],
  ["template", "template"],
  ["version", "version"],
  ["key", "key"],
  ["base_key", "first key"],
  ["render_id", "render"],
  ["remote_status", "Craftkit says"],
  ["attempts", "attempts"],
  ["filename", "file name"],
  ["pdf_path", "PDF"],
  ["pdf_bytes", "PDF bytes"],
  ["pdf_sha256", "SHA-256"],
  ["source", "source"],
  ["created_at", "created"],
  ["updated_at", "updated"],
];

function showDetail(detail) {
  const entry = detail.entry;
  const first = view.detail === null || view.detail.entry.id !== entry.id;
  view.detail = detail;
  const panel = $("detail");
  badge($("d-state"), entry.state);
  $("d-title").textContent = entry.key;
  $("d-explain").textContent = detail.explanation;
  $("d-problems").replaceChildren(...detail.problems.map((line) => el("li", "", line)));
  $("a-retry").hidden = !detail.actions.retry;
  $("a-cancel").hidden = !detail.actions.cancel;
  $("a-amend").hidden = !detail.actions.amend;
  const pdf = $("a-pdf");
  pdf.hidden = !detail.pdf;
  pdf.href = detail.pdf ? `pdf/${encodeURIComponent(entry.id)}` : "#";
  const fields = [];
  for (const [name, label] of FIELDS) {
    const value = entry[name];
    if (value === null || value === undefined || value === "") continue;
    const shown = name.endsWith("_at") ? `${when(value)} (${value})` : value;
    fields.push(el("dt", "", label), el("dd", "", shown));
  }
  $("d-fields").replaceChildren(...fields);
  $("d-data").textContent = JSON.stringify(entry.data, null, 2);
  $("d-events").replaceChildren(
    ...detail.events
      .slice()
      .reverse()
      .map((event) => {
        const item = el("li");
        const move = event.from_state ? `${event.from_state} → ${event.to_state}` : event.to_state;
        const extra = [
          event.attempt ? `attempt ${event.attempt}` : "",
          event.http_status ? `HTTP ${event.http_status}` : "",
          event.error_code || "",
        ].filter(Boolean);
        item.append(el("span", "when", when(event.at)), el("span", "what", move));
        if (extra.length) item.append(document.createTextNode(` · ${extra.join(" · ")}`));
        if (event.detail) item.append(el("span", "why", event.detail));
        return item;
      }),
  );
  panel.hidden = false;
  if (first) {
    $("amend").hidden = true;
    panel.scrollTop = 0;
    panel.focus({ preventScroll: true });
  }
}

async function act(action) {
  const detail = view.detail;
  if (!detail || !detail.actions[action]) return;
  const id = detail.entry.id;
  try {
    showDetail(await post(`api/entries/${encodeURIComponent(id)}/${action}`));
    toast(action === "retry" ? "Back to pending: it is sent at the next flush." : "Cancelled.");
    await refreshRows([id]);
  } catch (error) {
    toast(error.message);
  }
}

// -- amend -------------------------------------------------------------------------------

function amendData() {
  try {
    const data = JSON.parse($("amend-data").value);
    if (data === null || typeof data !== "object" || Array.isArray(data)) {
      throw new Error("the data must be a JSON object: { ... }");
    }
    return data;
  } catch (error) {
    $("amend-errors").replaceChildren(el("li", "", error.message));
    return null;
  }
}

function showCheck(check) {
  const lines = [];
  for (const [field, messages] of Object.entries(check.field_errors || {})) {
    lines.push(`${field || "the data"}: ${messages.join("; ")}`);
  }
  if (!lines.length && check.message) lines.push(check.message);
  $("amend-errors").replaceChildren(...lines.map((line) => el("li", "", line)));
  return check.passed;
}

async function checkAmend() {
  const data = amendData();
  if (!data || !view.detail) return false;
  const id = view.detail.entry.id;
  const check = await post(`api/entries/${encodeURIComponent(id)}/check`, { data });
  return showCheck(check);
}

async function saveAmend(event) {
  event.preventDefault();
  try {
    if (!(await checkAmend())) return;
    const id = view.detail.entry.id;
    showDetail(await post(`api/entries/${encodeURIComponent(id)}/amend`, { data: amendData() }));
    $("amend").hidden = true;
    toast("Amended: the new data is sent at the next flush.");
    await refreshRows([id]);
  } catch (error) {
    toast(error.message);
  }
}

// -- purge -------------------------------------------------------------------------------

function purgeSeconds() {
  return Number($("purge-amount").value) * Number($("purge-unit").value);
}

async function previewPurge() {
  const seconds = purgeSeconds();
  const preview = await api(`api/purge?older_than=${seconds}`);
  const go = $("purge-go");
  go.dataset.seconds = String(seconds);
  go.disabled = preview.count === 0;
  go.textContent = `Delete ${preview.count.toLocaleString()}`;
  $("purge-preview").textContent =
    preview.count === 0
      ? "Nothing to purge at that age."
      : `${preview.count.toLocaleString()} finished entries would be deleted.`;
}

async function purge() {
  const go = $("purge-go");
  const result = await post("api/purge", { older_than: Number(go.dataset.seconds) });
  go.disabled = true;
  $("purge-preview").textContent = `Purged ${result.purged.toLocaleString()} entries.`;
  refreshAll();
}

// -- live updates ------------------------------------------------------------------------

const changed = new Set();
let flushTimer = 0;
let summaryTimer = 0;
let summaryAt = 0;

function refreshSummarySoon() {
  if (summaryTimer) return;
  const wait = Math.max(0, 1000 - (Date.now() - summaryAt));
  summaryTimer = setTimeout(async () => {
    summaryTimer = 0;
    summaryAt = Date.now();
    try {
      const summary = await loadSummary();
      // The counts are kept by the server about once a second: ask again until they include
      // every change this page has seen.
      if (summary.counted_through < view.lastEvent) refreshSummarySoon();
    } catch (error) {
      toast(error.message);
    }
  }, wait);
}

async function refreshRows(ids) {
  const wanted = ids.filter((id) => view.rows.has(id));
  if (!wanted.length) return;
  const result = await api(`api/rows?ids=${wanted.map(encodeURIComponent).join(",")}`);
  for (const entry of result.rows) {
    const tr = view.rows.get(entry.id);
    if (!tr) continue;
    if (entry.gone) tr.classList.add("stale");
    else fillRow(tr, entry);
  }
}

function onChange(change) {
  view.lastEvent = change.id;
  if (change.from === null) setFresh(view.fresh + 1);
  changed.add(change.entry);
  refreshSummarySoon();
  if (flushTimer) return;
  flushTimer = setTimeout(async () => {
    flushTimer = 0;
    const ids = [...changed];
    changed.clear();
    try {
      await refreshRows(ids);
      if (view.open && ids.includes(view.open)) {
        showDetail(await api(`api/entries/${encodeURIComponent(view.open)}`));
      }
    } catch (error) {
      toast(error.message);
    }
  }, 150);
}

function follow(since) {
  const live = $("live");
  const source = new EventSource(`api/events?since=${since}`);
  source.onopen = () => {
    live.dataset.state = "live";
    live.textContent = "live";
  };
  source.onmessage = (message) => onChange(JSON.parse(message.data));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      live.dataset.state = "down";
      live.textContent = "disconnected";
      toast("Lost the dashboard: reload, or open the URL it printed if it restarted.");
    } else {
      live.dataset.state = "connecting";
      live.textContent = "reconnecting";
    }
  };
}

async function refreshAll() {
  await Promise.all([loadSummary(), loadPage()]).catch((error) => toast(error.message));
}

// -- keyboard ----------------------------------------------------------------------------

function moveFocus(step) {
  const rows = [...view.rows.values()];
  if (!rows.length) return;
  const at = rows.indexOf(document.activeElement);
  const next = at < 0 ? 0 : Math.min(rows.length - 1, Math.max(0, at + step));
  rows[next].focus();
  rows[next].scrollIntoView({ block: "nearest" });
}

function onKey(event) {
  const typing = event.target.matches("input, textarea, select");
  if (event.key === "Escape") {
    if ($("purge").open) return; // the dialog closes itself
    if (typing) event.target.blur();
    else if (view.open) closeEntry();
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const keys = {
    "/": () => $("f-q").focus(),
    j: () => moveFocus(1),
    k: () => moveFocus(-1),
    ArrowDown: () => moveFocus(1),
    ArrowUp: () => moveFocus(-1),
    r: () => act("retry"),
    c: () => act("cancel"),
    "]": () => turnPage(1),
    "[": () => turnPage(-1),
  };
  const handler = keys[event.key];
  if (handler) {
    event.preventDefault();
    handler();
  }
}

// -- start -------------------------------------------------------------------------------

function wire() {
  $("f-state").addEventListener("change", (event) => setFilter("state", event.target.value));
  $("f-template").addEventListener("change", (event) => setFilter("template", event.target.value));
  let typing = 0;
  $("f-q").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => setFilter("q", event.target.value.trim()), 250);
  });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("newer").addEventListener("click", () => turnPage(-1));
  $("older").addEventListener("click", () => turnPage(1));
  $("fresh").addEventListener("click", () => {
    view.cursors = [null];
    view.page = 0;
    refreshAll();
  });
  $("d-close").addEventListener("click", closeEntry);
  $("a-retry").addEventListener("click", () => act("retry"));
  $("a-cancel").addEventListener("click", () => act("cancel"));
  $("a-amend").addEventListener("click", () => {
    $("amend-data").value = JSON.stringify(view.detail.entry.data, null, 2);
    $("amend-errors").replaceChildren();
    $("amend").hidden = false;
    $("amend-data").focus();
  });
  $("amend-check").addEventListener("click", () => {
    checkAmend()
      .then((passed) => passed && $("amend-errors").replaceChildren(el("li", "ok", "The data fits the template.")))
      .catch((error) => toast(error.message));
  });
  $("amend").addEventListener("submit", saveAmend);
  $("amend-cancel").addEventListener("click", () => {
    $("amend").hidden = true;
  });
  $("purge-open").addEventListener("click", () => {
    $("purge-preview").textContent = "";
    $("purge-go").disabled = true;
    $("purge-go").textContent = "Delete";
    $("purge").showModal();
  });
  $("purge-check").addEventListener("click", () => previewPurge().catch((error) => toast(error.message)));
  $("purge-amount").addEventListener("input", () => {
    $("purge-go").disabled = true;
  });
  $("purge-unit").addEventListener("change", () => {
    $("purge-go").disabled = true;
  });
  $("purge-go").addEventListener("click", () => purge().catch((error) => toast(error.message)));
  $("purge-close").addEventListener("click", () => $("purge").close());
  document.addEventListener("keydown", onKey);
}

async function start() {
  buildCounts();
  buildFacts();
  wire();
  try {
    const summary = await loadSummary();
    summaryAt = Date.now();
    view.lastEvent = summary.last_event;
    if (summary.counted_through < summary.last_event) refreshSummarySoon();
    await loadPage();
    follow(summary.last_event);
  } catch (error) {
    $("live").dataset.state = "down";
    $("live").textContent = "disconnected";
    toast(error.message);
    return;
  }
  const id = location.hash.slice(1);
  if (id) openEntry(id);
}

document.addEventListener("DOMContentLoaded", start);
