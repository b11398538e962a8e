// KAI live seat map: search trains, watch a train's seats change live over /v1/ws,
// hold free seats, confirm with a passenger form or release. No dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, wsReady: false, backoff: 500, sub: null, version: -1,
  schedule: null, from: null, to: null, seats: {}, prices: {}, selected: new Set(),
  hold: null, mine: new Set(), timer: null, token: null, user: null,
};

// ---- helpers ---------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c));
  return node;
}
function say(text, ok = false) {
  const m = $("message");
  m.textContent = text; m.classList.toggle("ok", ok); m.classList.toggle("hidden", !text);
}
function rupiah(n) { return "Rp " + Number(n).toLocaleString("id-ID"); }
async function api(method, path, body, auth = false) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (auth) headers["Authorization"] = "Bearer " + await demoToken();
  if (auth && state.admission) headers["X-Admission-Token"] = state.admission;  // waiting room
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await resp.json(); } catch (_) { /* empty body */ }
  if (!resp.ok) {
    const err = new Error((data && (data.detail || data.title)) || resp.statusText);
    err.status = resp.status; err.body = data; throw err;
  }
  return data;
}
async function demoToken() {
  if (state.token && state.tokenExp > Date.now() + 60000) return state.token;
  const remembered = localStorage.getItem("kai-demo-user") || "";
  const data = await api("GET", "/v1/demo/token?user=" + encodeURIComponent(remembered));
  localStorage.setItem("kai-demo-user", data.user);
  state.token = data.token; state.user = data.user; state.tokenExp = Date.now() + 3000000;
  return state.token;
}

// ---- live connection -------------------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(proto + "//" + location.host + "/v1/ws");
  state.ws = ws;
  ws.onopen = () => {
    state.wsReady = true; state.backoff = 500; setLive(true);
    if (state.schedule) subscribe();
  };
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  ws.onclose = () => {
    state.wsReady = false; state.sub = null; setLive(false);
    setTimeout(connect, state.backoff); state.backoff = Math.min(state.backoff * 2, 8000);
  };
}
function setLive(on) {
  $("live").classList.toggle("on", on); $("live").classList.toggle("off", !on);
  $("live-text").textContent = on ? "live" : "reconnecting…";
}
function send(msg) { if (state.wsReady) state.ws.send(JSON.stringify(msg)); }
function subscribe() {
  if (state.sub) send({ op: "unsubscribe", sub: state.sub });
  state.sub = null; state.version = -1;
  send({ op: "subscribe", schedule_id: state.schedule.schedule_id, from: state.from, to: state.to, seats: true });
}
setInterval(() => send({ op: "ping" }), 25000);

function onMessage(msg) {
  switch (msg.type) {
    case "subscribed": state.sub = msg.sub; break;
    case "snapshot":
      if (msg.sub !== state.sub) return;
      state.version = msg.version; state.seats = msg.seats || {};
      renderClasses(msg.classes); paintAll(); $("coaches").dataset.version = msg.version; break;
    case "update":
      if (msg.sub !== state.sub || msg.version <= state.version) return;
      state.version = msg.version;
      for (const [seat, st] of Object.entries(msg.seats || {})) { state.seats[seat] = st; paint(seat); }
      renderClasses(msg.classes); $("coaches").dataset.version = msg.version; break;
    case "queue": showQueue(msg); break;          // waiting room: live position
    case "admitted": admitted(msg); break;        // waiting room: our turn
    case "schedule_status": showStatus(msg.status, msg.delay_minutes, msg.reason); break;
    case "error": if (msg.code !== "subscription_not_found") say("Live updates: " + msg.message); break;
    default: break;
  }
}

// ---- search ----------------------------------------------------------------------------------
async function search(ev) {
  ev && ev.preventDefault();
  const from = $("from").value.trim().toUpperCase(), to = $("to").value.trim().toUpperCase();
  const date = $("date").value;
  const box = $("results"); box.replaceChildren(el("div", { class: "muted" }, "Searching…"));
  try {
    const data = await api("GET", `/v1/schedules?from=${from}&to=${to}&date=${date}`);
    box.replaceChildren();
    if (!data.schedules.length) box.append(el("div", { class: "muted" }, "No trains on that day."));
    for (const s of data.schedules) {
      const chips = el("div", { class: "chips" }, ...s.classes.map(classChip));
      box.append(el("div", { class: "train", dataset: { schedule: s.schedule_id } },
        el("div", {}, el("h3", {}, `${s.train.name} ${s.train.number}`), el("div", { class: "muted" }, s.status)),
        el("div", { class: "times" }, `${s.from.station} ${s.from.departure || ""} → ${s.to.station} ${s.to.arrival || ""}`),
        chips,
        el("button", { class: "primary", onclick: () => openSchedule(s.schedule_id, from, to) }, "Choose seats")));
    }
  } catch (err) { box.replaceChildren(el("div", { class: "message" }, "Search failed: " + err.message)); }
}
function classChip(c) {
  return el("span", { class: "chip" + (c.available ? "" : " none"), dataset: { cls: c.class } },
    c.class + " ", el("b", {}, String(c.available)), "/" + c.total);
}

// ---- seat map --------------------------------------------------------------------------------
async function openSchedule(id, from, to) {
  say("");
  let sched;
  try { sched = await api("GET", "/v1/schedules/" + encodeURIComponent(id)); }
  catch (err) { say("Could not open the train: " + err.message); return; }
  const stations = sched.stops.map((s) => s.station);
  state.schedule = sched; $("date").value = sched.departure_date;
  state.from = stations.includes(from) ? from : stations[0];
  state.to = stations.includes(to) ? to : stations[stations.length - 1];
  state.selected.clear(); state.seats = {}; state.prices = {};
  const params = new URLSearchParams({ schedule: id, from: state.from, to: state.to });
  history.replaceState(null, "", "?" + params);
  $("sm-title").textContent = `${sched.train.name} ${sched.train.number} · ${sched.departure_date}`;
  const stop = (code) => sched.stops.find((s) => s.station === code);
  $("sm-journey").textContent = `${state.from} ${stop(state.from).departure || ""} → ${state.to} ${stop(state.to).arrival || ""}`;
  showStatus(sched.status, sched.delay_minutes, sched.reason || "");
  const coaches = $("coaches"); coaches.replaceChildren();
  for (const coach of sched.coaches) {
    const grid = el("div", { class: "seats" });
    for (const label of coach.seats) {
      const seatId = `${coach.car}-${label}`;
      state.prices[seatId] = coach.base_price;
      grid.append(el("button", { class: "seat", title: seatId, dataset: { seat: seatId, state: "free" },
        onclick: () => toggle(seatId) }, label));
    }
    coaches.append(el("div", { class: "coach" }, el("h4", {}, `Car ${coach.car}`, el("span", {}, coach.class)), grid));
  }
  $("seatmap-panel").classList.remove("hidden");
  updateSelection();
  subscribe();
}
function showStatus(status, delay, reason) {
  const box = $("sm-status");
  if (status === "scheduled") { box.classList.add("hidden"); return; }
  box.textContent = status === "delayed" ? `Delayed ${delay} min${reason ? " — " + reason : ""}`
    : `Cancelled${reason ? " — " + reason : ""}`;
  box.classList.remove("hidden");
}
function renderClasses(classes) { $("sm-classes").replaceChildren(...classes.map(classChip)); }
function seatButton(seat) { return document.querySelector(`.seat[data-seat="${CSS.escape(seat)}"]`); }
function paint(seat) {
  const b = seatButton(seat); if (!b) return;
  const st = state.seats[seat] || "free";
  if (st !== "free") state.selected.delete(seat);
  b.dataset.state = st;
  b.className = "seat " + st + (state.selected.has(seat) ? " selected" : "") + (state.mine.has(seat) && st !== "free" ? " mine" : "");
  b.disabled = st !== "free" && !state.mine.has(seat);
}
function paintAll() { for (const b of document.querySelectorAll(".seat[data-seat]")) paint(b.dataset.seat); updateSelection(); }
function toggle(seat) {
  if ((state.seats[seat] || "free") !== "free" || state.hold) return;
  if (state.selected.has(seat)) state.selected.delete(seat); else state.selected.add(seat);
  paint(seat); updateSelection();
}
function updateSelection() {
  const n = state.selected.size;
  $("hold-btn").disabled = n === 0 || !!state.hold;
  $("hold-btn").textContent = n ? `Hold ${n} seat${n > 1 ? "s" : ""}` : "Hold seats";
  $("selection").textContent = n ? [...state.selected].join(", ") : (state.hold ? "You have a hold below." : "Select free seats to hold them.");
}

// ---- hold, confirm, release ------------------------------------------------------------------
async function holdSeats() {
  const seats = [...state.selected];
  $("hold-btn").disabled = true;
  try {
    const hold = await api("POST", "/v1/holds", { schedule_id: state.schedule.schedule_id, from: state.from, to: state.to, seats }, true);
    state.hold = hold; state.mine = new Set(hold.seats); state.selected.clear();
    say(""); showHold(); paintAll();
  } catch (err) {
    if (err.body && err.body.code === "not_admitted" && err.body.sale_id) { joinQueue(err.body.sale_id); return; }
    const lost = err.body && err.body.unavailable;
    say(lost ? `Just taken by someone else: ${lost.join(", ")}` : "Could not hold: " + err.message);
    updateSelection();
  }
}
function showHold() {
  const h = state.hold;
  $("hold-panel").classList.remove("hidden"); $("booking").classList.add("hidden");
  $("confirm-form").classList.remove("hidden");
  const total = h.seats.reduce((sum, s) => sum + Number(state.prices[s] || 0), 0);
  $("hold-seats").replaceChildren(el("div", {}, `${h.from} → ${h.to}: `, el("b", {}, h.seats.join(", "))),
    el("div", { class: "muted" }, "Total " + rupiah(total)));
  $("passengers").replaceChildren(...h.seats.map((seat, i) => el("div", { class: "pax", dataset: { seat } },
    el("div", { class: "seatlabel" }, seat),
    el("label", {}, "Name", el("input", { name: "name", required: "", value: "", placeholder: "Full name", "data-i": i })),
    el("label", {}, "ID number", el("input", { name: "id_number", required: "", placeholder: "NIK / passport" })),
    el("label", {}, "Type", (() => { const s = el("select", { name: "type" });
      for (const t of ["adult", "child", "infant", "senior"]) s.append(el("option", { value: t }, t)); return s; })()))));
  clearInterval(state.timer);
  const tick = () => {
    const left = Math.max(0, Math.round((Date.parse(h.expires_at) - Date.now()) / 1000));
    $("countdown").textContent = `${String(Math.floor(left / 60)).padStart(2, "0")}:${String(left % 60).padStart(2, "0")}`;
    if (left === 0) { clearInterval(state.timer); endHold("Your hold expired; the seats are back on sale."); }
  };
  tick(); state.timer = setInterval(tick, 1000);
  updateSelection();
}
function endHold(text, ok = false) {
  clearInterval(state.timer); state.hold = null; state.mine = new Set();
  $("hold-panel").classList.add("hidden"); say(text, ok); paintAll();
}
async function confirmHold(ev) {
  ev.preventDefault();
  const h = state.hold; if (!h) return;
  const passengers = [...document.querySelectorAll("#passengers .pax")].map((row) => ({
    name: row.querySelector("[name=name]").value.trim(),
    id_number: row.querySelector("[name=id_number]").value.trim(),
    type: row.querySelector("[name=type]").value, seat: row.dataset.seat,
  }));
  const amount = String(h.seats.reduce((sum, s) => sum + Number(state.prices[s] || 0), 0));
  const payment = { method: $("pay-method").value, reference: "DEMO-" + Date.now(), amount };
  $("confirm-btn").disabled = true;
  try {
    const booking = await api("POST", `/v1/holds/${encodeURIComponent(h.hold_id)}/confirm`, { passengers, payment }, true);
    clearInterval(state.timer);
    $("confirm-form").classList.add("hidden");
    const b = $("booking"); b.classList.remove("hidden");
    b.replaceChildren(el("h3", {}, "Booked · " + booking.booking_number),
      ...booking.tickets.map((t) => el("div", {}, `${t.seat} — ${t.passenger.name || ""} · ticket ${t.ticket_number}`)));
    b.dataset.booking = booking.booking_number;
    state.hold = null; updateSelection();
  } catch (err) {
    if (err.status === 410) endHold("Your hold expired before the booking; please choose again.");
    else say("Could not confirm: " + err.message);
  } finally { $("confirm-btn").disabled = false; }
}
async function releaseHold() {
  const h = state.hold; if (!h) return;
  try { await api("DELETE", `/v1/holds/${encodeURIComponent(h.hold_id)}`, undefined, true); endHold("Released.", true); }
  catch (err) { say("Could not release: " + err.message); }
}

// ---- start -----------------------------------------------------------------------------------
$("search-form").addEventListener("submit", search);
$("swap").addEventListener("click", () => { const f = $("from").value; $("from").value = $("to").value; $("to").value = f; });
$("hold-btn").addEventListener("click", holdSeats);
$("confirm-form").addEventListener("submit", confirmHold);
$("release-btn").addEventListener("click", releaseHold);
// ---- peak-sale waiting room: wait for an admission, then go on to seat selection -------------
async function joinQueue(saleId) {
  state.saleId = saleId; state.admission = null;
  $("queue-panel").classList.remove("hidden");
  $("queue-text").textContent = "Joining the waiting room…";
  send({ op: "auth", token: await demoToken() });
  send({ op: "queue", sale_id: saleId });
}
function showQueue(msg) {
  const wait = msg.estimated_wait_s > 90 ? Math.round(msg.estimated_wait_s / 60) + " min" : msg.estimated_wait_s + " s";
  $("queue-text").textContent = `You are number ${msg.position.toLocaleString("id-ID")} in the queue (${msg.ahead.toLocaleString("id-ID")} ahead, about ${wait}).`;
}
function admitted(msg) {
  state.admission = msg.admission_token;
  $("queue-panel").classList.add("hidden");
  say("It is your turn: choose your seats (admission until " + new Date(msg.admission_expires_at).toLocaleTimeString() + ").", true);
  updateSelection();
}

(function init() {
  const q = new URLSearchParams(location.search);
  $("date").value = q.get("date") || new Date(Date.now() + 86400000).toISOString().slice(0, 10);
  $("from").value = q.get("from") || "GMR"; $("to").value = q.get("to") || "YK";
  connect();
  if (q.get("schedule")) openSchedule(q.get("schedule"), q.get("from"), q.get("to"));
  if (q.get("sale")) state.ws.addEventListener("open", () => joinQueue(q.get("sale")), { once: true });
})();
