// The supervisors' wall: queues and agents, live; change an agent's state, reassign an item.

import { api, token } from "./api.js";
import { $, duration, el, replace, when } from "./dom.js";
import { LiveFeed } from "./live.js";

const STATES = ["available", "busy", "after_work", "break", "meeting", "training", "offline"];
let session = null;
let agents = [];

async function refresh() {
  try {
    const wall = await api("GET", "/api/v1/inbox/wall");
    const items = [
      ...(await api("GET", "/api/v1/queue?status=waiting&limit=200")).items,
      ...(await api("GET", "/api/v1/queue?status=leased&limit=200")).items,
    ];
    agents = wall.agents;
    const projects = new Map(session.projects.map((p) => [p.id, p.slug]));
    replace($("#queues tbody"), wall.queues.map((q) => el("tr", { dataset: { queue: q.queue } },
      el("td", {}, projects.get(q.project_id) || String(q.project_id)), el("td", {}, q.queue),
      el("td", { class: "waiting" }, String(q.waiting)), el("td", {}, String(q.in_progress)),
      el("td", {}, q.oldest_wait_seconds === null ? "—" : duration(q.oldest_wait_seconds)),
      el("td", {}, q.next_sla_due_at ? when(q.next_sla_due_at) : "—"),
      el("td", { class: q.sla_breached ? "breached" : "" }, String(q.sla_breached)))));
    replace($("#agents tbody"), wall.agents.map((a) => {
      const pick = el("select", { "aria-label": `State of ${a.display_name}` },
        STATES.map((s) => el("option", { value: s }, s)));
      pick.value = STATES.includes(a.state) ? a.state : "offline";
      pick.addEventListener("change", () => act(() => api("PUT", `/api/v1/agents/${a.id}/state`, { state: pick.value })));
      return el("tr", { dataset: { agent: a.id } },
        el("td", {}, a.display_name), el("td", { class: `state state-${a.state}` }, a.state,
          a.state_reason ? ` (${a.state_reason})` : ""),
        el("td", {}, duration(a.state_seconds || 0)), el("td", {}, `${a.load_percent}%`),
        el("td", {}, String(a.items)), el("td", {}, String(a.offers)), el("td", {}, pick));
    }));
    const names = new Map(agents.map((a) => [`agent:${a.id}`, a.display_name]));
    replace($("#items tbody"), items.map((i) => {
      const to = el("select", { "aria-label": `Reassign item ${i.id}` }, el("option", { value: "" }, "— agent —"),
        agents.map((a) => el("option", { value: String(a.id) }, a.display_name)));
      const go = el("button", { type: "button" }, "Reassign");
      go.addEventListener("click", () => to.value && act(() => api("POST", `/api/v1/queue/${i.id}/transfer`, { agent_id: Number(to.value) })));
      return el("tr", { dataset: { item: i.id } }, el("td", {}, `#${i.id}`), el("td", {}, i.queue), el("td", {}, i.channel),
        el("td", {}, i.status), el("td", {}, names.get(i.lease_owner) || (i.lease_owner || "—")),
        el("td", {}, duration((Date.now() - Date.parse(i.enqueued_at)) / 1000)), el("td", {}, to, go));
    }));
    document.body.dataset.refreshed = String(Date.now());
  } catch (err) {
    $("#wall-error").textContent = err.message;
  }
}

async function act(fn) {
  $("#wall-error").textContent = "";
  try {
    await fn();
    await refresh();
  } catch (err) {
    $("#wall-error").textContent = err.message;
  }
}

let pending = null;
async function main() {
  if (!token()) { location.href = "/inbox/"; return; }
  session = await api("GET", "/api/v1/session");
  $("#me").textContent = session.agent ? session.agent.display_name : session.role;
  const feed = new LiveFeed(() => { clearTimeout(pending); pending = setTimeout(refresh, 200); },
    (s) => { $("#live").textContent = s; $("#live").dataset.status = s; });
  feed.start();
  await refresh();
  setInterval(refresh, 15000); // ages and clocks move even when nothing happens
}

main().catch((err) => { $("#wall-error").textContent = err.message; });
