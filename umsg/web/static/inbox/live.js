// The live event feed: one websocket, resumed from the last event id seen after any drop
// (server restart, network loss, laptop sleep), so the page never misses an event.
// It asks for batched frames: the events that were ready together come as one JSON array.

import { token } from "./api.js";

export class LiveFeed {
  constructor(onEvent, onStatus) {
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.lastId = null; // null until the first connection: start from "now"
    this.ws = null;
    this.retry = 500;
    this.stopped = false;
    this.timer = null;
    window.addEventListener("offline", () => this.ws && this.ws.close());
    window.addEventListener("online", () => this.reconnectSoon(0));
  }

  start(afterId) {
    this.stopped = false;
    if (afterId !== undefined) this.lastId = afterId;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }

  connect() {
    if (this.stopped || !token()) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const after = this.lastId === null ? "" : `after=${this.lastId}&`;
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/events?${after}batch=true&access_token=${encodeURIComponent(token())}`);
    this.ws = ws;
    ws.onopen = () => {
      this.retry = 500;
      this.onStatus("live");
      if (this.lastId === null) ws.send(JSON.stringify({ type: "ping" }));
    };
    ws.onmessage = (msg) => {
      let data;
      try { data = JSON.parse(msg.data); } catch { return; }
      if (data && data.type === "pong") {
        if (this.lastId === null) this.lastId = data.last_event_id;
        return;
      }
      for (const event of Array.isArray(data) ? data : [data]) this.take(event);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onStatus("offline");
      this.reconnectSoon(this.retry);
      this.retry = Math.min(this.retry * 2, 10000);
    };
  }

  take(event) {
    if (!event || typeof event.id !== "number") return;
    if (this.lastId !== null && event.id <= this.lastId) return; // replayed after a resume
    this.lastId = event.id;
    this.onEvent(event);
  }

  reconnectSoon(ms) {
    clearTimeout(this.timer);
    if (this.stopped || this.ws) return;
    this.timer = setTimeout(() => this.connect(), ms);
  }
}
