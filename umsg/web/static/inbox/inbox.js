// The agent's blended inbox: sign-in, presence, offers, the work list, shortcuts, live updates.

import { api, setToken, token } from "./api.js";
import { ConversationView } from "./conversation.js";
import { $, duration, el, replace } from "./dom.js";
import { LiveFeed } from "./live.js";

const SHORTCUTS = [
  ["a", "Accept the offer"], ["d", "Decline the offer"], ["j / k", "Next / previous conversation"],
  ["r", "Reply (focus the composer)"], ["n", "Toggle private note"], ["Ctrl+Enter", "Send"],
  ["t", "Transfer"], ["s", "Snooze"], ["e", "Wrap up and close"], ["1 / 0", "Go available / offline"],
  ["?", "This help"], ["Esc", "Close a dialog"],
];

const app = {
  session: null,
  canned: [],
  agents: [],
  items: [],
  offer: null,
  view: null,
  feed: null,
  beeps: 0,
  audio: null,
  work: () => app.items,
  refreshWork: () => refreshWork(),
  dialog: (title, fields, action) => dialog(title, fields, action),
};
window.umsgInbox = app; // for the browser tests: read-only inspection of the page's state

// -- sign-in -------------------------------------------------------------------------------------

async function signIn(event) {
  event.preventDefault();
  unlockAudio();
  $("#signin-error").textContent = "";
  try {
    const res = await api("POST", "/api/v1/session", { login: $("#login").value, password: $("#password").value });
    setToken(res.token, res.expires_at);
    await start();
  } catch (err) {
    $("#signin-error").textContent = err.message;
  }
}

function showSignIn() {
  setToken(null);
  app.feed?.stop();
  $("#app").hidden = true;
  $("#signin").hidden = false;
  $("#login").focus();
}

async function start() {
  app.session = await api("GET", "/api/v1/session");
  if (!app.session.agent) throw new Error("this token acts for no agent");
  const [canned, agents] = await Promise.all([api("GET", "/api/v1/canned-responses"), api("GET", "/api/v1/agents?limit=500")]);
  app.canned = canned.items;
  app.agents = agents.items;
  $("#signin").hidden = true;
  $("#app").hidden = false;
  $("#me").textContent = `${app.session.agent.display_name} (${app.session.role})`;
  $("#wall-link").hidden = app.session.role === "agent";
  app.view = new ConversationView($("#conversation"), app);
  renderStates();
  app.feed = new LiveFeed(onEvent, (s) => {
    $("#live").textContent = s;
    $("#live").dataset.status = s;
    if (s === "live") app.view?.outbox.flush(); // replies written while the server was away
  });
  app.feed.start();
  await Promise.all([refreshWork(), refreshOffer()]);
}

// -- presence ----------------------------------------------------------------------------------

function renderStates() {
  const sel = $("#state");
  replace(sel, app.session.states.map((s) => el("option", { value: s }, s.replace("_", " "))));
  showState(app.session.agent);
}

function showState(agent) {
  const sel = $("#state");
  if (![...sel.options].some((o) => o.value === agent.state)) sel.append(el("option", { value: agent.state }, agent.state));
  sel.value = agent.state;
  document.body.dataset.state = agent.state;
  const codes = app.session.reason_codes[agent.state] || [];
  const reason = $("#reason");
  reason.hidden = codes.length === 0;
  replace(reason, el("option", { value: "" }, "(no reason)"), codes.map((c) => el("option", { value: c }, c)));
  reason.value = agent.state_reason && codes.includes(agent.state_reason) ? agent.state_reason : "";
}

async function setState(state, reason) {
  unlockAudio();
  const body = { state };
  if (reason) body.reason = reason;
  try {
    const agent = await api("PUT", `/api/v1/agents/${app.session.agent.id}/state`, body);
    app.session.agent = agent;
    showState(agent);
  } catch (err) {
    flash(err.message);
  }
}

// -- offers ----------------------------------------------------------------------------------

function unlockAudio() {
  // Browsers allow sound only after a user gesture: create the context on the first click.
  if (!app.audio && window.AudioContext) app.audio = new AudioContext();
  app.audio?.resume();
}

function beep() {
  app.beeps += 1;
  document.body.dataset.beeps = String(app.beeps);
  const ctx = app.audio;
  if (!ctx) return;
  for (const [at, freq] of [[0, 880], [0.25, 1175]]) {
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.2, ctx.currentTime + at);
    gain.gain.exponentialRampToValueAtTime(0.001, ctx.currentTime + at + 0.2);
    osc.connect(gain).connect(ctx.destination);
    osc.start(ctx.currentTime + at);
    osc.stop(ctx.currentTime + at + 0.22);
  }
}

async function refreshOffer() {
  const offers = await api("GET", `/api/v1/offers?status=offered&agent_id=${app.session.agent.id}`);
  const live = offers.items.find((o) => new Date(o.expires_at) > new Date());
  if (live && live.id !== app.offer?.id) await showOffer(live);
  if (!live && app.offer) hideOffer();
}

async function showOffer(offer) {
  app.offer = offer;
  const box = $("#offer");
  box.dataset.offer = String(offer.id);
  replace($("#offer-what"), ` conversation #${offer.conversation_id}`);
  box.hidden = false;
  beep();
  try {
    const conv = await api("GET", `/api/v1/conversations/${offer.conversation_id}`);
    const contact = await api("GET", `/api/v1/contacts/${conv.contact_id}`);
    if (app.offer?.id === offer.id) {
      replace($("#offer-what"), ` ${conv.channel} from `, el("b", {}, contact.display_name || "unknown"),
        conv.subject ? ` — ${conv.subject}` : "");
    }
  } catch { /* the offer shows without details */ }
}

function hideOffer() {
  app.offer = null;
  $("#offer").hidden = true;
  delete $("#offer").dataset.offer;
}

async function answerOffer(accept) {
  const offer = app.offer;
  if (!offer) return;
  hideOffer();
  try {
    if (accept) {
      await api("POST", `/api/v1/offers/${offer.id}/accept`);
      await refreshWork();
      await openConversation(offer.conversation_id);
    } else {
      await api("POST", `/api/v1/offers/${offer.id}/decline`, { reason: "declined in inbox" });
    }
  } catch (err) {
    flash(err.message);
  }
}

// -- the work list -------------------------------------------------------------------------------

async function refreshWork() {
  const res = await api("GET", "/api/v1/inbox/work");
  app.items = res.items;
  const list = $("#work");
  const current = app.view?.conv?.id;
  replace(list, app.items.map((c) => el("li", {
    class: `work${c.id === current ? " current" : ""}${c.status === "snoozed" ? " snoozed" : ""}`,
    dataset: { conversation: c.id }, tabindex: 0,
    onclick: () => openConversation(c.id),
  },
  el("span", { class: `badge ch-${c.channel}` }, c.channel),
  el("span", { class: "name" }, c.contact.display_name || `contact #${c.contact.id}`),
  el("span", { class: "subject muted" }, c.subject || ""),
  el("span", { class: "clocks" },
    el("span", { class: "waiting", dataset: { since: c.waiting_since || "" } }),
    el("span", { class: "sla", dataset: { due: c.sla_due_at || "" } })))));
  $("#work-empty").hidden = app.items.length > 0;
  tick();
}

function tick() {
  const now = Date.now();
  for (const w of document.querySelectorAll("#work .waiting")) {
    w.textContent = w.dataset.since ? `waiting ${duration((now - Date.parse(w.dataset.since)) / 1000)}` : "answered";
  }
  for (const s of document.querySelectorAll("#work .sla")) {
    if (!s.dataset.due) { s.textContent = ""; continue; }
    const left = (Date.parse(s.dataset.due) - now) / 1000;
    s.textContent = left >= 0 ? `SLA ${duration(left)}` : `SLA −${duration(left)}`;
    s.classList.toggle("breached", left < 0);
    s.classList.toggle("soon", left >= 0 && left < 300);
  }
  if (app.offer) {
    const left = Math.max(0, (Date.parse(app.offer.expires_at) - now) / 1000);
    $("#offer-countdown").textContent = `${Math.ceil(left)} s left`;
    if (left <= 0) refreshOffer();
  }
}

async function openConversation(id) {
  await app.view.open(id);
  for (const li of document.querySelectorAll("#work li")) li.classList.toggle("current", Number(li.dataset.conversation) === id);
}

function step(delta) {
  if (!app.items.length) return;
  const at = app.items.findIndex((c) => c.id === app.view?.conv?.id);
  const next = app.items[(at + delta + app.items.length) % app.items.length];
  openConversation(next.id);
}

// -- live events ---------------------------------------------------------------------------------

let pending = null;
function soon(fn) {
  // Bursts of events (a transfer writes several) refresh once.
  clearTimeout(pending);
  pending = setTimeout(fn, 150);
}

function onEvent(ev) {
  const p = ev.payload || {};
  const mine = p.agent_id === app.session.agent.id;
  switch (ev.kind) {
    case "router.offered":
      if (mine) refreshOffer();
      break;
    case "router.accepted": case "router.declined": case "router.timed_out":
      if (mine) { refreshOffer(); soon(refreshWork); }
      break;
    case "agent.state":
      if (mine) { app.session.agent.state = p.state; app.session.agent.state_reason = p.reason; showState(app.session.agent); }
      break;
    case "conversation.typing":
      // Not a change of the work list: no refresh, just the line in the open conversation.
      if (p.who === "customer" && app.view?.isShowing(p.conversation_id)) app.view.showCustomerTyping(p.on !== false);
      break;
    case "message.created":
      if (p.direction === "in" && app.view?.isShowing(p.conversation_id)) app.view.showCustomerTyping(false);
      if (app.view?.conv) app.view.loadMore();
      soon(refreshWork);
      break;
    default:
      if (ev.kind.startsWith("queue.") || ev.kind.startsWith("conversation.")) soon(refreshWork);
  }
}

// -- dialogs, help, shortcuts --------------------------------------------------------------------

function dialog(title, fields, action) {
  const box = $("#dialog");
  const error = el("p", { class: "error", role: "alert" });
  const ok = el("button", { type: "submit", class: "primary" }, "OK");
  const form = el("form", {}, el("h2", {}, title), fields.map((f) => el("div", { class: "field" }, f)), error,
    el("div", { class: "buttons" }, ok, el("button", { type: "button", onclick: () => { box.hidden = true; } }, "Cancel")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    ok.disabled = true;
    try {
      await action();
      box.hidden = true;
    } catch (err) {
      error.textContent = err.message;
    } finally {
      ok.disabled = false;
    }
  });
  replace($("#dialog-body"), form);
  box.hidden = false;
  fields[0]?.focus();
}

function flash(message) {
  const note = el("div", { class: "flash", role: "status" }, message);
  document.body.append(note);
  setTimeout(() => note.remove(), 5000);
}

function toggleHelp(show) {
  $("#help").hidden = !show;
}

function onKey(e) {
  if (e.key === "Escape") { toggleHelp(false); $("#dialog").hidden = true; return; }
  const typing = e.target.closest?.("input, textarea, select, [contenteditable]");
  if (typing || e.ctrlKey || e.metaKey || e.altKey || !app.session || !$("#dialog").hidden) return;
  const actions = {
    "?": () => toggleHelp($("#help").hidden),
    a: () => answerOffer(true),
    d: () => answerOffer(false),
    j: () => step(1),
    k: () => step(-1),
    r: () => app.view.focusComposer(false),
    n: () => app.view.focusComposer(true),
    t: () => app.view.conv && app.view.transfer(),
    s: () => app.view.conv && app.view.snooze(),
    e: () => app.view.conv && app.view.close(),
    1: () => setState("available"),
    0: () => setState("offline"),
  };
  const act = actions[e.key];
  if (act) { e.preventDefault(); act(); }
}

function setup() {
  replace($("#help-list"), SHORTCUTS.map(([k, what]) => [el("dt", {}, el("kbd", {}, k)), el("dd", {}, what)]));
  $("#signin-form").addEventListener("submit", signIn);
  $("#state").addEventListener("change", () => setState($("#state").value, null));
  $("#reason").addEventListener("change", () => setState($("#state").value, $("#reason").value));
  $("#offer-accept").addEventListener("click", () => answerOffer(true));
  $("#offer-decline").addEventListener("click", () => answerOffer(false));
  $("#help-button").addEventListener("click", () => toggleHelp(true));
  $("#help-close").addEventListener("click", () => toggleHelp(false));
  $("#signout").addEventListener("click", async () => {
    try { await api("DELETE", "/api/v1/session"); } catch { /* signed out either way */ }
    showSignIn();
  });
  document.addEventListener("keydown", onKey);
  document.addEventListener("pointerdown", unlockAudio, { once: true });
  window.addEventListener("umsg-signed-out", showSignIn);
  setInterval(tick, 1000);
  // Keep the leases of held items alive while the page is open.
  setInterval(() => {
    if (app.session && app.items.some((c) => c.item?.status === "leased")) {
      api("POST", `/api/v1/agents/${app.session.agent.id}/heartbeat`).catch(() => {});
    }
  }, 60000);
  if (token()) start().catch(showSignIn);
  else showSignIn();
}

setup();
