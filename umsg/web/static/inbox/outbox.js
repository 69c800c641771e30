// Replies written while the network is down wait here and go out, in order, once it is back.
//
// A reply is never sent twice: while the browser says it is offline nothing is tried; when a
// request fails on the way (it may or may not have reached the server), the next attempt
// first looks for the reply in the contact's timeline after the last message seen before
// the first attempt, by this agent with the same text, and counts it as sent if it is there.

import { api, ApiError } from "./api.js";

export class ReplyOutbox {
  // onChange(item, state): state is "pending", "sent" or "failed" (the server refused it).
  constructor(agentId, onChange) {
    this.agentId = agentId;
    this.onChange = onChange;
    this.items = [];
    this.flushing = null;
    // Tried again when the browser is back online, and when the live feed reconnects.
    window.addEventListener("online", () => this.flush());
  }

  // Queue a reply: {conversationId, contactId, afterId, body}; sends at once when online.
  add(item) {
    item.uncertain = false;
    item.waiting = false;
    this.items.push(item);
    if (!navigator.onLine) this.waiting();
    return this.flush();
  }

  // Show the replies that could not go out at once (sent at once, they just appear).
  waiting() {
    for (const item of this.items) {
      if (!item.waiting) { item.waiting = true; this.onChange(item, "pending"); }
    }
  }

  pending(conversationId) {
    return this.items.filter((i) => i.conversationId === conversationId);
  }

  flush() {
    if (!this.flushing) {
      this.flushing = this.drain().finally(() => { this.flushing = null; });
    }
    return this.flushing;
  }

  async drain() {
    while (this.items.length && navigator.onLine) {
      const item = this.items[0];
      try {
        if (!(item.uncertain && await this.arrived(item))) {
          item.uncertain = true; // from here on, the request may reach the server
          await api("POST", `/api/v1/conversations/${item.conversationId}/reply`, item.body);
        }
        this.items.shift();
        this.onChange(item, "sent");
      } catch (err) {
        if (!(err instanceof ApiError) || err.status >= 500) { this.waiting(); return; } // retried when back
        this.items.shift(); // refused (4xx): show it, do not retry
        this.onChange(item, "failed", err);
      }
    }
  }

  async arrived(item) {
    const page = await api("GET", `/api/v1/contacts/${item.contactId}/timeline?after_id=${item.afterId}&limit=200`);
    return page.items.some((m) => m.direction === "out" && m.conversation_id === item.conversationId
      && m.author_agent_id === this.agentId && m.text === item.body.text);
  }
}
