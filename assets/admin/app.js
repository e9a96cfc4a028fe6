// revtun relay admin page: every device of the fleet (/api/devices, online
// and offline, wherever it is) and this relay's own sessions
// (/api/sessions), kept live by /api/events. Every string from the relay
// (key comments, usernames, peers, names) is device-supplied: it goes into
// the page only through textContent.
//
// Events are read with fetch() streaming rather than EventSource: EventSource
// cannot send an Authorization header, and a ?token= in the URL would land in
// the access log of the reverse proxy that terminates TLS in front of us.
//
// Rendering under load (issue 26): events only change state and mark rows
// dirty; at most RENDERS_PER_S times a second the dirty rows, and only they,
// are rebuilt. Measured before: with ~1,000 forwarded connections a second,
// re-rendering the whole table per event froze the page for minutes. The
// device table shows at most `limit` rows (the filter narrows, "show more"
// widens), so 10,000 devices cost a filter over an array, not 10,000 rows.

const $ = (id) => document.getElementById(id);
const tbody = document.querySelector("#sessions tbody");
const devBody = document.querySelector("#devices tbody");
const filterBox = $("filter");
const statusEl = $("status");
const summaryEl = $("summary");
const emptyEl = $("empty");
const SVG = "http://www.w3.org/2000/svg";
const RENDER_MS = 250; // at most 4 renders a second
const PAGE_ROWS = 200;

let token = sessionStorage.getItem("revtun-admin-token") || "";
const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
if (m) {
  token = decodeURIComponent(m[1]);
  sessionStorage.setItem("revtun-admin-token", token);
  // Out of the address bar (and of anything copied from it).
  history.replaceState(null, "", location.pathname + location.search);
}

// ---- state ------------------------------------------------------------------

let sessions = new Map(); // sessionId -> record
const sessionRows = new Map(); // sessionId -> tr
const dirtySessions = new Set();
let sessionsAll = true;

const devices = new Map(); // id -> device view
const deviceRows = new Map(); // id -> tr (rows currently in the table)
const dirtyDevices = new Set();
let devicesAll = true;
let counts = { online: 0, offline: 0 };
let onlineHistory = [];
let limit = PAGE_ROWS;
let selected = "";
let query = "";

let renderTimer = 0;
let loadTimer = 0;
let loadSeq = 0;

function headers() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, init) {
  for (let attempt = 0; ; attempt++) {
    const res = await fetch(path, { ...init, headers: headers(), cache: "no-store" });
    if (res.status !== 401 || attempt > 0) return res;
    const t = prompt("revtun relay admin token");
    if (!t) return res;
    token = t.trim();
    sessionStorage.setItem("revtun-admin-token", token);
  }
}

function setStatus(text, cls) {
  statusEl.textContent = text;
  statusEl.className = `status ${cls}`;
}

function schedule() {
  if (!renderTimer) renderTimer = setTimeout(render, RENDER_MS);
}

// ---- loading ----------------------------------------------------------------

async function loadSessions() {
  loadTimer = 0;
  const seq = ++loadSeq;
  const res = await api("/api/sessions");
  if (!res.ok) throw new Error(`/api/sessions: HTTP ${res.status}`);
  const body = await res.json();
  if (seq !== loadSeq) return; // a newer load is under way
  sessions = new Map(body.sessions.map((s) => [s.sessionId, s]));
  sessionsAll = true;
  schedule();
}

async function loadDevices() {
  // The first page tells how many there are; the rest are asked for at once.
  const page = async (n) => {
    const res = await api(`/api/devices?per_page=1000&page=${n}`);
    if (!res.ok) throw new Error(`/api/devices: HTTP ${res.status}`);
    return res.json();
  };
  const first = await page(1);
  const rest = [];
  for (let n = 2; n <= Math.min(first.pages, 100); n++) rest.push(page(n));
  const bodies = [first, ...(await Promise.all(rest))];
  devices.clear();
  for (const body of bodies) for (const d of body.devices) devices.set(d.id, d);
  counts = bodies.at(-1).counts;
  devicesAll = true;
  // A load is what the operator waits for: drawn now, not at the next batch.
  clearTimeout(renderTimer);
  render();
}

async function loadHistory() {
  const res = await api("/api/devices/history");
  if (!res.ok) return;
  onlineHistory = (await res.json()).history;
  drawOnlineChart();
}

async function load() {
  try {
    await Promise.all([loadSessions(), loadDevices(), loadHistory()]);
  } catch (err) {
    setStatus(String(err.message || err), "down");
  }
}

/** At most one sessions reload per 500 ms however many events ask for one. */
function scheduleLoad() {
  if (!loadTimer)
    loadTimer = setTimeout(() => {
      loadSessions().catch((err) => setStatus(String(err.message || err), "down"));
    }, 500);
}

// ---- formatting -------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

const utc = (ms) =>
  new Date(ms)
    .toISOString()
    .replace("T", " ")
    .replace(/\.\d+Z$/, "Z");

function cell(tr, text, cls, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (title) td.title = title;
  tr.appendChild(td);
  return td;
}

// ---- this relay's sessions --------------------------------------------------

function sessionMatches(s) {
  if (!query) return true;
  const hay = [
    s.keyComment,
    s.certKeyId ?? "",
    ...(s.certPrincipals ?? []),
    s.fingerprint,
    s.username,
    s.peer,
    ...s.bindings.map((b) => b.address),
  ];
  return hay.join("\n").toLowerCase().includes(query);
}

function sessionRow(s) {
  const tr = document.createElement("tr");
  tr.dataset.sessionId = String(s.sessionId);
  if (s.connections > 0) tr.className = "busy";
  // A certificate session: its key id (the line's comment is the CA's).
  if (s.certKeyId !== undefined) cell(tr, `${s.certKeyId} (cert ${s.certSerial})`, "name", s.certCa);
  else cell(tr, s.keyComment || "(no comment)", "name");
  cell(tr, s.connections > 0 ? "in use" : "idle", "state");
  cell(tr, s.fingerprint.replace(/^SHA256:/, "").slice(0, 12), "fp", s.fingerprint);
  cell(tr, s.username);
  cell(tr, s.peer);
  cell(tr, ago(Date.parse(s.since)), "", new Date(s.since).toLocaleString());
  const b = cell(tr, "", "bind");
  for (const x of s.bindings) {
    const div = document.createElement("div");
    div.textContent = x.address;
    div.title = `listening on ${x.listening.join(", ")}`;
    b.appendChild(div);
  }
  cell(tr, String(s.connections), "num conns");
  cell(tr, bytes(s.bytesIn), "num", `${s.bytesIn} bytes toward the device`);
  cell(tr, bytes(s.bytesOut), "num", `${s.bytesOut} bytes from the device`);
  return tr;
}

function renderSessions() {
  if (sessionsAll) {
    sessionsAll = false;
    dirtySessions.clear();
    sessionRows.clear();
    const rows = [];
    for (const s of sessions.values()) {
      if (!sessionMatches(s)) continue;
      const tr = sessionRow(s);
      sessionRows.set(s.sessionId, tr);
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  } else {
    for (const id of dirtySessions) {
      const s = sessions.get(id);
      const old = sessionRows.get(id);
      if (!s || !sessionMatches(s)) {
        old?.remove();
        sessionRows.delete(id);
        continue;
      }
      const tr = sessionRow(s);
      sessionRows.set(id, tr);
      if (old) old.replaceWith(tr);
      else tbody.appendChild(tr);
    }
    dirtySessions.clear();
  }
  let conns = 0;
  for (const s of sessions.values()) conns += s.connections;
  emptyEl.hidden = sessions.size > 0;
  const shown = sessionRows.size;
  summaryEl.textContent =
    `${sessions.size} session(s) here` +
    (shown !== sessions.size ? `, ${shown} shown` : "") +
    `, ${conns} connection(s) open`;
}

// ---- the fleet's devices ----------------------------------------------------

function label(d) {
  return d.names[0] || d.keyComment || d.id;
}

function deviceMatches(d) {
  if (!query) return true;
  if (d.id.toLowerCase().includes(query) || d.keyComment.toLowerCase().includes(query)) return true;
  if (d.relayId.toLowerCase().includes(query) || d.peer.includes(query)) return true;
  return d.names.some((n) => n.includes(query)) || d.bindings.some((b) => b.toLowerCase().includes(query));
}

function deviceRow(d) {
  const tr = document.createElement("tr");
  tr.dataset.id = d.id;
  tr.className = d.state === "online" ? "online" : "offline";
  if (d.id === selected) tr.classList.add("selected");
  cell(tr, label(d), "name");
  cell(tr, d.state, "state");
  cell(tr, d.relayId, "relay");
  if (d.state === "online") cell(tr, "now", "seen");
  else cell(tr, `${ago(d.lastSeen)} ago`, "seen", utc(d.lastSeen));
  cell(tr, d.keyComment || "-", "comment");
  cell(tr, d.id.replace(/^SHA256:/, "").slice(0, 12), "fp", d.id);
  cell(tr, d.bindings.join(" "), "bind");
  cell(tr, String(d.connections), "num conns");
  cell(tr, bytes(d.bytesIn), "num", `${d.bytesIn} bytes toward the device`);
  cell(tr, bytes(d.bytesOut), "num", `${d.bytesOut} bytes from the device`);
  return tr;
}

/** The devices the table shows: matching the filter, by name, at most `limit`. */
function visibleDevices() {
  const out = [];
  for (const d of devices.values()) if (deviceMatches(d)) out.push(d);
  out.sort((a, b) => (label(a) < label(b) ? -1 : label(a) > label(b) ? 1 : a.id < b.id ? -1 : 1));
  return out;
}

function renderDevices() {
  // Only rows already shown and changed are rebuilt in place; an arrival, a
  // departure or a row that stopped matching reorders the list (keyed: rows
  // that did not change are the same elements, moved).
  let reorder = devicesAll;
  for (const id of dirtyDevices) {
    const d = devices.get(id);
    const old = deviceRows.get(id);
    if (!old) {
      if (d && deviceMatches(d)) reorder = true;
      continue;
    }
    if (!d || !deviceMatches(d)) {
      reorder = true;
      continue;
    }
    const tr = deviceRow(d);
    deviceRows.set(id, tr);
    old.replaceWith(tr);
  }
  if (devicesAll) deviceRows.clear();
  devicesAll = false;
  dirtyDevices.clear();
  let total = 0;
  if (reorder) {
    const list = visibleDevices();
    total = list.length;
    const keep = new Map();
    const rows = [];
    for (const d of list.slice(0, limit)) {
      const tr = deviceRows.get(d.id) ?? deviceRow(d);
      keep.set(d.id, tr);
      rows.push(tr);
    }
    deviceRows.clear();
    for (const [id, tr] of keep) deviceRows.set(id, tr);
    devBody.replaceChildren(...rows);
    $("devices-more").hidden = total <= limit;
    $("devices-more-text").textContent = `${limit} of ${total} shown;`;
  }
  $("devices-empty").hidden = devices.size > 0;
  $("online-count").textContent = String(counts.online);
  $("offline-count").textContent = String(counts.offline);
  if (selected) drawDetail();
}

// ---- charts (hand-drawn SVG) ------------------------------------------------

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function drawOnlineChart() {
  const svg = $("online-chart");
  const now = Math.floor(Date.now() / 60000);
  const from = now - 24 * 60;
  const points = onlineHistory.filter(([mm]) => mm > from && mm < now);
  points.push([now, counts.online]);
  const max = Math.max(1, ...points.map(([, n]) => n));
  const x = (mm) => ((mm - from) / (24 * 60)) * 720;
  const y = (n) => 115 - (n / max) * 105;
  const els = [svgEl("line", { x1: 0, y1: 115, x2: 720, y2: 115, class: "axis" })];
  if (points.length) {
    // A step line: the count holds until the next minute's sample.
    let d = `M${x(points[0][0]).toFixed(1)},${y(points[0][1]).toFixed(1)}`;
    for (const [mm, n] of points.slice(1)) d += ` H${x(mm).toFixed(1)} V${y(n).toFixed(1)}`;
    d += ` H720`;
    els.push(svgEl("path", { d, class: "online-line" }));
  }
  const top = svgEl("text", { x: 4, y: 12, class: "tick" });
  top.textContent = `${max}`;
  els.push(top);
  svg.replaceChildren(...els);
  $("online-range").textContent = `now ${counts.online}, peak ${max}`;
}

function drawDetail() {
  const d = devices.get(selected);
  const box = $("detail");
  if (!d) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  $("detail-title").textContent = `${label(d)} — ${d.state}`;
  $("detail-meta").textContent =
    `${d.keyComment || "(no comment)"} · ${d.id} · ${d.clientVersion || "version unknown"} · ` +
    (d.state === "online" ? `on ${d.relayId}` : `last seen ${utc(d.lastSeen)} on ${d.relayId}`) +
    ` · first seen ${utc(d.firstSeen)}`;
  const now = Math.floor(Date.now() / 60000);
  const from = now - 59;
  const byMinute = new Map(d.minutes.map(([mm, c, b]) => [mm, [c, b]]));
  let maxC = 1;
  let maxB = 1;
  for (const [, [c, b]] of byMinute) {
    maxC = Math.max(maxC, c);
    maxB = Math.max(maxB, b);
  }
  const w = 720 / 60;
  const els = [svgEl("line", { x1: 0, y1: 95, x2: 720, y2: 95, class: "axis" })];
  let line = "";
  for (let i = 0; i < 60; i++) {
    const [c, b] = byMinute.get(from + i) ?? [0, 0];
    if (c > 0) {
      const h = (c / maxC) * 85;
      els.push(svgEl("rect", { x: i * w + 1, y: 95 - h, width: w - 2, height: h, class: "bar-conns" }));
    }
    line += `${i === 0 ? "M" : " L"}${(i * w + w / 2).toFixed(1)},${(95 - (b / maxB) * 85).toFixed(1)}`;
  }
  els.push(svgEl("path", { d: line, class: "line-bytes" }));
  $("device-chart").replaceChildren(...els);
  $("device-range").textContent = `peak ${maxC} connection(s), ${bytes(maxB)} a minute`;
}

// ---- one render for everything that changed ----------------------------------

function render() {
  renderTimer = 0;
  renderSessions();
  renderDevices();
  drawOnlineChart();
}

// ---- events -----------------------------------------------------------------

function onEvent(name, data) {
  if (name === "devices") {
    counts = data.counts;
    if (data.all) {
      loadDevices().catch((err) => setStatus(String(err.message || err), "down"));
      return;
    }
    for (const d of data.changed) {
      devices.set(d.id, d);
      dirtyDevices.add(d.id);
    }
    for (const id of data.removed) {
      devices.delete(id);
      dirtyDevices.add(id);
    }
    schedule();
    return;
  }
  const s = sessions.get(data.sessionId);
  if (name === "forwarded-open" && s) {
    s.connections++;
    dirtySessions.add(s.sessionId);
    schedule();
  } else if (name === "forwarded-closed" && s) {
    s.connections = Math.max(0, s.connections - 1);
    s.bytesIn += data.bytesIn;
    s.bytesOut += data.bytesOut;
    dirtySessions.add(s.sessionId);
    schedule();
  } else if (name === "session-closed") {
    sessions.delete(data.sessionId);
    dirtySessions.add(data.sessionId);
    schedule();
  } else if (name !== "forwarded-open" && name !== "forwarded-closed") {
    scheduleLoad();
  }
}

/** Reads text/event-stream from a fetch body; resolves when the stream ends. */
async function readEvents(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let start = 0;
    let end = buf.indexOf("\n\n");
    while (end !== -1) {
      const block = buf.slice(start, end);
      start = end + 2;
      end = buf.indexOf("\n\n", start);
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(event, JSON.parse(data));
    }
    buf = buf.slice(start);
  }
}

async function follow() {
  let delay = 500;
  for (;;) {
    try {
      const res = await api("/api/events");
      if (res.status === 401) {
        // Asking again every few seconds would only nag: a reload asks once more.
        setStatus("token required or refused: reload, or open the page with #token=…", "down");
        return;
      }
      if (!res.ok) throw new Error(`/api/events: HTTP ${res.status}`);
      setStatus("live", "live");
      delay = 500;
      // Subscribed first, then loaded: no change falls between the two.
      await load();
      await readEvents(res);
      setStatus("relay closed the event stream; reconnecting…", "down");
    } catch (err) {
      setStatus(`${err.message || err}; reconnecting…`, "down");
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

filterBox.addEventListener("input", () => {
  query = filterBox.value.trim().toLowerCase();
  limit = PAGE_ROWS;
  sessionsAll = true;
  devicesAll = true;
  // Typing is answered at once, not at the next batch.
  clearTimeout(renderTimer);
  render();
});
$("show-more").addEventListener("click", () => {
  limit += PAGE_ROWS;
  devicesAll = true;
  render();
});
devBody.addEventListener("click", (e) => {
  const tr = e.target.closest("tr");
  if (!tr?.dataset.id) return;
  deviceRows.get(selected)?.classList.remove("selected");
  selected = tr.dataset.id === selected ? "" : tr.dataset.id;
  deviceRows.get(selected)?.classList.add("selected");
  drawDetail();
});
// Live byte counts of open connections and the ages move without events.
setInterval(() => {
  if (!document.hidden) scheduleLoad();
}, 10000);
setInterval(() => {
  if (!document.hidden) loadHistory().catch(() => {});
}, 60000);
follow();
