// The conversation view: the contact's whole history across channels in one timeline,
// the composer (reply on any channel/identity, attachments, canned responses, notes)
// and the actions (transfer, snooze, wrap-up and close).

import { api, fileToBase64 } from "./api.js";
import { $, el, replace, when } from "./dom.js";
import { htmlFrame, renderPart } from "./media.js";
import { ReplyOutbox } from "./outbox.js";
import { TypingSignal } from "./typing.js";

// Without configured channel instances (session.channels empty) the type names stand for them.
const TYPE_CHANNEL_OF = { email: "email", phone: "sms", fax: "fax", chat: "webchat" };

export class ConversationView {
  constructor(root, app) {
    this.root = root;
    this.app = app; // {session, canned, agents, work(), refreshWork(), dialog()}
    this.conv = null;
    this.contact = null;
    this.lastId = 0;
    this.seen = new Set();
    this.outbox = new ReplyOutbox(app.session.agent.id, (item, state, err) => this.replyState(item, state, err));
  }

  async open(conversationId) {
    this.typing?.stop(true);
    this.conv = await api("GET", `/api/v1/conversations/${conversationId}`);
    this.typing = new TypingSignal(this.conv.id);
    this.lastId = 0;
    this.seen = new Set();
    this.timeline = el("ol", { class: "timeline", id: "timeline" });
    this.header = el("header", { class: "convhead" });
    this.customerTyping = el("p", { class: "customer-typing muted", id: "customer-typing", "aria-live": "polite",
      hidden: true }, "Customer is typing…");
    replace(this.root, this.header, this.timeline, this.customerTyping, this.composer(), this.actions());
    await this.loadMore();
  }

  isShowing(conversationId) {
    return this.conv !== null && this.conv.id === conversationId;
  }

  // Fetch every timeline entry after the last one shown (the whole history on open).
  async loadMore() {
    if (!this.conv) return;
    const contactId = this.conv.contact_id;
    for (;;) {
      const page = await api("GET", `/api/v1/contacts/${contactId}/timeline?after_id=${this.lastId}&limit=200`);
      if (!this.conv || this.conv.contact_id !== contactId) return;
      this.contact = page.contact;
      for (const m of page.items) {
        this.lastId = Math.max(this.lastId, m.id);
        if (this.seen.has(m.id)) continue;
        this.seen.add(m.id);
        this.timeline.append(this.entry(m));
      }
      if (page.next_after_id === null) break;
    }
    this.renderHeader();
    this.timeline.lastElementChild?.scrollIntoView({ block: "end" });
  }

  renderHeader() {
    const c = this.contact;
    const ids = (c?.identities || []).map((i) => el("span", { class: "identity" }, `${i.kind}: ${i.value}`));
    replace(this.header,
      el("h2", { class: "contact-name" }, c?.display_name || "Unknown contact"),
      el("div", { class: "ids" }, ids),
      el("div", { class: "muted" }, `#${this.conv.id} · ${this.conv.channel} · ${this.conv.status}`,
        this.conv.subject ? ` · ${this.conv.subject}` : ""));
    this.fillRecipients();
  }

  entry(m) {
    const here = m.conversation_id === this.conv.id;
    const who = m.direction === "in" ? (m.from || "customer")
      : m.direction === "note" ? `Note by ${m.author_name || m.from}` : `${m.author_name || "agent"} → ${(m.to || []).join(", ")}`;
    const body = el("div", { class: "body" });
    if (m.text) body.append(el("div", { class: "text" }, m.text));
    if (m.html) {
      const toggle = el("button", { type: "button", class: "link" }, "Show formatted");
      toggle.addEventListener("click", () => {
        toggle.replaceWith(htmlFrame(m.html));
      }, { once: true });
      body.append(toggle);
    }
    // A source with a conversion (WAV → MP3, TIFF → PDF) is shown once, as its conversion.
    const converted = new Set((m.parts || []).map((p) => p.derived_from_id).filter(Boolean));
    for (const part of m.parts || []) {
      if (part.role !== "raw" && part.role !== "body" && !converted.has(part.id)) body.append(renderPart(part));
    }
    return el("li", {
      class: `msg ${m.direction}${here ? "" : " other-conversation"}`,
      dataset: { id: m.id, conversation: m.conversation_id, direction: m.direction },
    },
    el("div", { class: "meta" },
      el("span", { class: `badge ch-${m.channel}` }, m.channel),
      el("span", { class: "who" }, who),
      here ? null : el("span", { class: "muted" }, ` (conversation #${m.conversation_id})`),
      el("time", { datetime: m.created_at }, when(m.created_at)),
      m.direction === "out" ? el("span", { class: "status" }, m.status) : null),
    this.senderWarning(m),
    m.subject ? el("div", { class: "subject" }, m.subject) : null,
    body);
  }

  // The sender's display name shows another address (or the mail names several authors): the
  // message is filed under the real address, and the agent is told not to trust the name.
  senderWarning(m) {
    const w = m.direction === "in" ? m.sender_warning : null;
    if (!w) return null;
    const claimed = (w.claimed || []).join(", ");
    const shown = (w.reasons || []).includes("display_name_address")
      ? `The sender's name “${w.display_name}” shows ${claimed}, but this message came from ${w.address}.`
      : `This message names several senders (${claimed}); it is filed under ${w.address}.`;
    return el("div", { class: "sender-warning", role: "alert", dataset: { warning: (w.reasons || []).join(" ") } },
      el("strong", {}, "⚠ Possible impersonation. "), shown, " Do not trust the name; check before acting.");
  }

  composer() {
    this.channel = el("select", { id: "reply-channel", "aria-label": "Reply channel" });
    this.to = el("select", { id: "reply-to", "aria-label": "Recipient" });
    this.text = el("textarea", { id: "reply-text", rows: 4, placeholder: "Reply… (Ctrl+Enter sends)" });
    this.files = el("input", { id: "reply-files", type: "file", multiple: true });
    this.noteMode = el("input", { id: "note-mode", type: "checkbox" });
    const canned = el("select", { id: "canned", "aria-label": "Canned response" },
      el("option", { value: "" }, "Canned response…"),
      this.app.canned.map((c) => el("option", { value: String(c.id) }, c.title)));
    canned.addEventListener("change", () => {
      const c = this.app.canned.find((x) => String(x.id) === canned.value);
      if (c) this.insert(this.fill(c.body));
      canned.value = "";
    });
    this.channel.addEventListener("change", () => this.fillRecipients(false));
    this.text.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); this.send(); }
    });
    this.text.addEventListener("input", () => {
      if (this.isLiveChat() && !this.noteMode.checked && this.text.value.trim()) this.typing.poke();
    });
    this.sendButton = el("button", { type: "button", id: "send", class: "primary", onclick: () => this.send() }, "Send");
    this.error = el("p", { class: "error", role: "alert" });
    return el("section", { class: "composer" },
      el("div", { class: "row" }, el("label", {}, "Via ", this.channel), el("label", {}, "To ", this.to),
        canned, el("label", { class: "note-toggle" }, this.noteMode, " Private note (n)")),
      this.text,
      el("div", { class: "row" }, this.files, this.sendButton), this.error);
  }

  // The identity kind a channel instance sends to (null: whoever wrote).
  kindOf(channel) {
    const configured = this.app.session.channels || [];
    if (configured.length) return configured.find((c) => c.name === channel)?.identity_kind ?? null;
    return Object.keys(TYPE_CHANNEL_OF).find((k) => TYPE_CHANNEL_OF[k] === channel) ?? null;
  }

  // The channel instances that send to identities of `kind`.
  channelsFor(kind) {
    const configured = this.app.session.channels || [];
    if (configured.length) return configured.filter((c) => c.identity_kind === kind).map((c) => c.name);
    return TYPE_CHANNEL_OF[kind] ? [TYPE_CHANNEL_OF[kind]] : [];
  }

  // Typing is shown only by a live chat window, answered on its own channel.
  isLiveChat() {
    return this.kindOf(this.conv.channel) === "chat" && this.channel.value === this.conv.channel;
  }

  // The customer is typing (or stopped): a line under the timeline, like the widget's.
  showCustomerTyping(on) {
    if (this.customerTyping) this.customerTyping.hidden = !on;
  }

  fillRecipients(resetChannel = true) {
    const ids = this.contact?.identities || [];
    const channels = new Set([this.conv.channel, ...ids.flatMap((i) => this.channelsFor(i.kind))]);
    if (resetChannel || !this.channel.value) {
      replace(this.channel, [...channels].map((c) => el("option", { value: c }, c)));
      this.channel.value = this.conv.channel;
    }
    const ch = this.channel.value;
    const kind = this.kindOf(ch);
    const fitting = ids.filter((i) => i.kind === kind && !i.opted_out);
    replace(this.to, el("option", { value: "" }, ch === this.conv.channel ? "(as the conversation)" : "(default)"),
      fitting.map((i) => el("option", { value: i.value }, i.value)));
  }

  fill(template) {
    const ids = this.contact?.identities || [];
    const first = (kind) => ids.find((i) => i.kind === kind)?.value || "";
    const values = {
      "contact.name": this.contact?.display_name || "",
      "contact.email": first("email"),
      "contact.phone": first("phone"),
      "agent.name": this.app.session.agent?.display_name || "",
      "conversation.id": String(this.conv.id),
      "conversation.subject": this.conv.subject || "",
    };
    return template.replace(/\{\{\s*([a-z_.]+)\s*\}\}/g, (all, key) => (key in values ? values[key] : all));
  }

  insert(text) {
    const t = this.text;
    const at = t.selectionStart ?? t.value.length;
    t.value = t.value.slice(0, at) + text + t.value.slice(t.selectionEnd ?? at);
    t.focus();
  }

  async send() {
    const text = this.text.value;
    const files = [...this.files.files];
    this.error.textContent = "";
    this.sendButton.disabled = true;
    try {
      if (this.noteMode.checked) {
        await api("POST", `/api/v1/conversations/${this.conv.id}/notes`, { text });
        this.text.value = "";
        this.noteMode.checked = false;
      } else {
        const attachments = await Promise.all(files.map(async (f) => ({
          media_type: f.type || "application/octet-stream", filename: f.name, data_base64: await fileToBase64(f),
        })));
        const body = { text, channel: this.channel.value, attachments };
        if (this.to.value) body.to = this.to.value;
        this.typing.stop(false);
        this.text.value = "";
        this.files.value = "";
        await this.outbox.add({ conversationId: this.conv.id, contactId: this.conv.contact_id, afterId: this.lastId, body });
      }
      if (navigator.onLine) await this.loadMore(); // offline, the live feed catches up on its return
    } catch (err) {
      this.error.textContent = err.message;
    } finally {
      this.sendButton.disabled = false;
    }
  }

  // A reply waiting for the network shows as "sending…" until it is stored.
  replyState(item, state, err) {
    item.li?.remove();
    item.li = null;
    const here = this.conv?.id === item.conversationId;
    if (state === "pending" && here) {
      item.li = el("li", { class: "msg out pending", dataset: { direction: "out" } },
        el("div", { class: "meta" }, el("span", { class: "who" }, "You"), el("span", { class: "status" }, "sending…")),
        el("div", { class: "body" }, el("div", { class: "text" }, item.body.text)));
      this.timeline.append(item.li);
    } else if (state === "sent" && here) {
      this.loadMore();
    } else if (state === "failed" && here) {
      this.error.textContent = err.message;
      if (!this.text.value) this.text.value = item.body.text; // nothing typed is lost
    }
  }

  actions() {
    return el("section", { class: "actions" },
      el("button", { type: "button", id: "transfer", onclick: () => this.transfer() }, "Transfer (t)"),
      el("button", { type: "button", id: "snooze", onclick: () => this.snooze() }, "Snooze (s)"),
      el("button", { type: "button", id: "close", onclick: () => this.close() }, "Wrap up & close (e)"));
  }

  item() {
    return this.app.work().find((w) => w.id === this.conv.id)?.item || null;
  }

  transfer() {
    const item = this.item();
    const agent = el("select", { id: "transfer-agent" }, el("option", { value: "" }, "— an agent —"),
      this.app.agents.filter((a) => a.id !== this.app.session.agent?.id)
        .map((a) => el("option", { value: String(a.id) }, `${a.display_name} (${a.state})`)));
    const queue = el("input", { id: "transfer-queue", placeholder: "or a queue name" });
    this.app.dialog("Transfer", [agent, queue], async () => {
      if (!item) throw new Error("this conversation has no queue item to transfer");
      const body = agent.value ? { agent_id: Number(agent.value) } : { queue: queue.value.trim() };
      await api("POST", `/api/v1/queue/${item.id}/transfer`, body);
      await this.app.refreshWork();
    });
  }

  snooze() {
    const choice = el("select", { id: "snooze-for" },
      [[15, "15 minutes"], [60, "1 hour"], [240, "4 hours"], [1440, "1 day"]]
        .map(([m, label]) => el("option", { value: String(m) }, label)));
    this.app.dialog("Snooze", [choice], async () => {
      const until = new Date(Date.now() + Number(choice.value) * 60000).toISOString();
      this.conv = await api("PATCH", `/api/v1/conversations/${this.conv.id}`, { status: "snoozed", snoozed_until: until });
      this.renderHeader();
      await this.app.refreshWork();
    });
  }

  close() {
    const codes = this.app.session.wrapup_codes.filter((w) => w.project_id === this.conv.project_id);
    const code = el("select", { id: "wrapup-code" },
      codes.length ? null : el("option", { value: "" }, "(no codes defined)"),
      codes.map((w) => el("option", { value: w.code }, `${w.label} (${w.code})`)));
    const note = el("input", { id: "wrapup-note", placeholder: "Note (optional)" });
    this.app.dialog("Wrap up & close", [code, note], async () => {
      const body = {};
      if (code.value) body.wrapup_code = code.value;
      if (note.value.trim()) body.note = note.value.trim();
      this.conv = await api("POST", `/api/v1/conversations/${this.conv.id}/close`, body);
      this.renderHeader();
      await this.loadMore();
      await this.app.refreshWork();
    });
  }

  focusComposer(note = false) {
    if (!this.conv) return;
    if (note) this.noteMode.checked = !this.noteMode.checked;
    $("#reply-text", this.root)?.focus();
  }
}
