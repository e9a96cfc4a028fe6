// revtun relay admin page: the inventory from /api/sessions, kept live by
// /api/events. Every string from the relay (key comments, usernames, peers)
// is device-supplied: it goes into the page only through textContent.
//
// Events are read with fetch() streaming rather than EventSource: EventSource
// cannot send an Authorization header, and a ?token= in the URL would land in
// the access log of the reverse proxy that terminates TLS in front of us.

const tbody = document.querySelector("#sessions tbody");
const filterBox = document.getElementById("filter");
const statusEl = document.getElementById("status");
const summaryEl = document.getElementById("summary");
const emptyEl = document.getElementById("empty");

let token = sessionStorage.getItem("revtun-admin-token") || "";
const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
if (m) {
  token = decodeURIComponent(m[1]);
  sessionStorage.setItem("revtun-admin-token", token);
  // Out of the address bar (and of anything copied from it).
  history.replaceState(null, "", location.pathname + location.search);
}

let sessions = new Map(); // sessionId -> record
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

async function load() {
  loadTimer = 0;
  const seq = ++loadSeq;
  try {
    const res = await api("/api/sessions");
    if (!res.ok) throw new Error(`/api/sessions: HTTP ${res.status}`);
    const body = await res.json();
    if (seq !== loadSeq) return; // a newer load is under way
    sessions = new Map(body.sessions.map((s) => [s.sessionId, s]));
    render();
  } catch (err) {
    setStatus(String(err.message || err), "down");
  }
}

/** At most one reload per 150 ms however many events arrive. */
function scheduleLoad() {
  if (!loadTimer) loadTimer = setTimeout(load, 150);
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function age(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function cell(tr, text, cls, title) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (title) td.title = title;
  tr.appendChild(td);
  return td;
}

function matches(s, q) {
  if (!q) return true;
  const hay = [
    s.keyComment,
    s.certKeyId ?? "",
    ...(s.certPrincipals ?? []),
    s.fingerprint,
    s.username,
    s.peer,
    ...s.bindings.map((b) => b.address),
  ];
  return hay.join("\n").toLowerCase().includes(q);
}

function render() {
  const q = filterBox.value.trim().toLowerCase();
  const rows = [];
  let shown = 0;
  let conns = 0;
  for (const s of sessions.values()) {
    conns += s.connections;
    if (!matches(s, q)) continue;
    shown++;
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
    cell(tr, age(s.since), "", new Date(s.since).toLocaleString());
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
    rows.push(tr);
  }
  tbody.replaceChildren(...rows);
  emptyEl.hidden = sessions.size > 0;
  summaryEl.textContent =
    `${sessions.size} session(s)` +
    (shown !== sessions.size ? `, ${shown} shown` : "") +
    `, ${conns} connection(s) open`;
}

function onEvent(name, data) {
  const s = sessions.get(data.sessionId);
  if (name === "forwarded-open" && s) {
    s.connections++;
    render();
  } else if (name === "forwarded-closed" && s) {
    s.connections = Math.max(0, s.connections - 1);
    s.bytesIn += data.bytesIn;
    s.bytesOut += data.bytesOut;
    render();
  } else if (name === "session-closed") {
    sessions.delete(data.sessionId);
    render();
  } else {
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
    let end = buf.indexOf("\n\n");
    while (end !== -1) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      end = buf.indexOf("\n\n");
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(event, JSON.parse(data));
    }
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

filterBox.addEventListener("input", render);
// Live byte counts of open connections, and the ages, move without events.
setInterval(() => {
  if (!document.hidden) scheduleLoad();
}, 10000);
follow();
