/* umsg web chat widget: one <script src=".../channels/<instance>/widget.js" async></script> tag.
 *
 * Draws a chat bubble and panel inside a shadow root (the host page's CSS cannot break it,
 * ours cannot leak out), talks to the chat websocket next to this script, and keeps the
 * visitor token and any unacknowledged lines in localStorage: a line is resent with the
 * same client id after a reconnect or a reload until the server acknowledges it, and the
 * server stores it once. Everything a person typed is put on the page with textContent,
 * never as HTML. No dependencies, no build step.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.src) { return; }
  var base = script.src.replace(/[^/]*(\?.*)?$/, "");
  var storeKey = "umsg-chat:" + base;
  if (window["__umsgChat:" + base]) { return; }  // the tag twice on one page: one widget
  window["__umsgChat:" + base] = true;

  // -- small helpers ---------------------------------------------------------------------
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function load() {
    try { return JSON.parse(localStorage.getItem(storeKey) || "{}") || {}; } catch (e) { return {}; }
  }
  function save(state) {
    try { localStorage.setItem(storeKey, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }
  function newId() {
    var bytes = new Uint8Array(12);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    return "c" + Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function timeOf(iso) {
    var d = iso ? new Date(iso) : new Date();
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  var saved = load();
  saved.pending = saved.pending || [];  // [{client_id, text}] sent but not acknowledged

  // -- the DOM ---------------------------------------------------------------------------
  var host = el("div", { id: "umsg-chat", "data-umsg-chat": "" });
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  root.appendChild(el("link", { rel: "stylesheet", href: base + "widget.css" }));

  var bubble = el("button", { type: "button", class: "bubble", "aria-label": "Open chat",
                              "aria-expanded": "false", "aria-controls": "umsg-panel" });
  bubble.appendChild(el("span", { "aria-hidden": "true" }, "Chat"));
  var panel = el("section", { id: "umsg-panel", class: "panel", role: "dialog", "aria-modal": "false",
                              "aria-labelledby": "umsg-title", hidden: "" });
  var header = el("header", { class: "head" });
  var title = el("h2", { id: "umsg-title" }, "Chat with us");
  var closeBtn = el("button", { type: "button", class: "close", "aria-label": "Close chat" }, "\u00D7");
  header.appendChild(title);
  header.appendChild(closeBtn);
  var statusLine = el("p", { class: "status", role: "status" }, "Connecting\u2026");
  var log = el("ol", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Messages" });
  var agentTypingTimer = null;
  var typingLine = el("p", { class: "typing", "aria-live": "polite", hidden: "" }, "Agent is typing\u2026");

  var prechat = el("form", { class: "prechat", hidden: "", "aria-label": "Before we start" });
  prechat.appendChild(el("p", {}, "Tell us who you are (optional)."));
  var pcName = field(prechat, "Your name", "text", "name", "umsg-pc-name");
  var pcEmail = field(prechat, "Your email", "email", "email", "umsg-pc-email");
  var pcGo = el("button", { type: "submit" }, "Start chat");
  prechat.appendChild(pcGo);

  var offline = el("form", { class: "offline", hidden: "", "aria-label": "Leave a message" });
  var offlineWhy = el("p", { class: "why" }, "");
  offline.appendChild(offlineWhy);
  var offName = field(offline, "Your name", "text", "name", "umsg-off-name");
  var offEmail = field(offline, "Your email (we answer there)", "email", "email", "umsg-off-email");
  offEmail.required = true;
  var offText = field(offline, "Your message", "textarea", "off", "umsg-off-text");
  offText.required = true;
  offline.appendChild(el("button", { type: "submit" }, "Leave a message"));

  var composer = el("form", { class: "composer", "aria-label": "Write a message" });
  var text = el("textarea", { id: "umsg-text", rows: "2", maxlength: "4000", placeholder: "Type a message\u2026" });
  composer.appendChild(el("label", { for: "umsg-text", class: "sr" }, "Message"));
  composer.appendChild(text);
  var fileInput = el("input", { type: "file", id: "umsg-file", class: "sr" });
  var fileLabel = el("label", { for: "umsg-file", class: "attach", title: "Attach a file" });
  fileLabel.appendChild(el("span", { "aria-hidden": "true" }, "+"));
  fileLabel.appendChild(el("span", { class: "sr" }, "Attach a file"));
  composer.appendChild(fileInput);
  composer.appendChild(fileLabel);
  var sendBtn = el("button", { type: "submit", class: "send" }, "Send");
  composer.appendChild(sendBtn);

  var footer = el("div", { class: "foot" });
  var endBtn = el("button", { type: "button", class: "end" }, "End chat");
  footer.appendChild(endBtn);

  var rating = el("form", { class: "rating", hidden: "", "aria-label": "Rate this chat" });
  var fs = el("fieldset");
  fs.appendChild(el("legend", {}, "How did we do?"));
  for (var i = 1; i <= 5; i++) {
    var rid = "umsg-rate-" + i;
    var r = el("input", { type: "radio", name: "score", value: String(i), id: rid });
    fs.appendChild(r);
    fs.appendChild(el("label", { for: rid, "aria-label": i + " of 5" }, "\u2605" + i));
  }
  rating.appendChild(fs);
  var rComment = field(rating, "Comment (optional)", "textarea", "comment", "umsg-rate-comment");
  var tWrap = el("p", { class: "check" });
  var tBox = el("input", { type: "checkbox", id: "umsg-transcript" });
  tWrap.appendChild(tBox);
  tWrap.appendChild(el("label", { for: "umsg-transcript" }, "Email me a transcript"));
  rating.appendChild(tWrap);
  rating.appendChild(el("button", { type: "submit" }, "Send feedback"));

  [header, statusLine, log, typingLine, prechat, offline, composer, footer, rating].forEach(function (n) {
    panel.appendChild(n);
  });
  root.appendChild(bubble);
  root.appendChild(panel);

  function field(form, label, type, name, id) {
    var wrap = el("p", { class: "field" });
    wrap.appendChild(el("label", { for: id }, label));
    var input = type === "textarea" ? el("textarea", { id: id, name: name, rows: "3" })
                                    : el("input", { id: id, name: name, type: type, autocomplete: name });
    wrap.appendChild(input);
    form.appendChild(wrap);
    return input;
  }

  function mount() { (document.body || document.documentElement).appendChild(host); }
  if (document.body) { mount(); } else { document.addEventListener("DOMContentLoaded", mount); }

  // -- rendering -------------------------------------------------------------------------
  var shown = {};  // message id -> <li>
  var byClient = {};  // client id -> <li>
  var features = {};

  function render(m) {
    if (m.id && shown[m.id]) { return; }
    var li = (m.client_id && byClient[m.client_id]) || el("li");
    li.className = "msg " + (m.direction === "in" ? "mine" : "theirs") + (m.pending ? " pending" : "");
    li.textContent = "";
    if (m.direction !== "in") { li.appendChild(el("span", { class: "who" }, m.author || "Support")); }
    if (m.text) { li.appendChild(el("span", { class: "text" }, m.text)); }
    (m.files || []).forEach(function (f) {
      var a = el("a", { class: "file", rel: "noopener noreferrer", target: "_blank",
                        href: base + "file/" + encodeURIComponent(f.id) + "?token=" + encodeURIComponent(saved.token || "") });
      a.textContent = f.name;
      li.appendChild(a);
    });
    li.appendChild(el("time", { datetime: m.at || "" }, m.pending ? "sending\u2026" : timeOf(m.at)));
    if (m.id) { li.setAttribute("data-id", String(m.id)); shown[m.id] = li; }
    if (m.client_id) { li.setAttribute("data-client-id", m.client_id); byClient[m.client_id] = li; }
    if (!li.parentNode) { log.appendChild(li); }
    log.scrollTop = log.scrollHeight;
  }
  function notice(textValue) {
    log.appendChild(el("li", { class: "notice" }, textValue));
    log.scrollTop = log.scrollHeight;
  }

  // -- the socket ------------------------------------------------------------------------
  var ws = null, ready = false, retry = 0, timer = null;
  function wsUrl() { return base.replace(/^http/, "ws") + "ws"; }
  function send(frame) {
    if (ws && ready && ws.readyState === 1) { ws.send(JSON.stringify(frame)); return true; }
    return false;
  }
  function connect() {
    clearTimeout(timer);
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) { return; }
    ready = false;
    try { ws = new WebSocket(wsUrl()); } catch (e) { schedule(); return; }
    ws.onopen = function () {
      ws.send(JSON.stringify({ type: "hello", token: saved.token || null, page: location.href.slice(0, 2000) }));
    };
    ws.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      handle(f);
    };
    ws.onclose = function () {
      ready = false;
      statusLine.textContent = "Reconnecting\u2026";
      if (navigator.onLine !== false) { schedule(); }  // offline: the "online" event reconnects
    };
    ws.onerror = function () { /* onclose follows */ };
  }
  function schedule() {
    clearTimeout(timer);
    retry = Math.min(retry + 1, 6);
    timer = setTimeout(connect, Math.min(250 * Math.pow(2, retry), 8000));
  }
  window.addEventListener("online", function () { retry = 0; connect(); });
  // The browser knows the network is gone before a dead socket times out: stop using it now,
  // so lines typed meanwhile wait (in localStorage) instead of vanishing into a dead socket.
  window.addEventListener("offline", function () { if (ws) { ws.close(); } });

  function handle(f) {
    switch (f.type) {
      case "welcome":
        ready = true; retry = 0;
        saved.token = f.token; save(saved);
        features = f.features || {};
        // Off, or no public URL to confirm an address with: no transcript to offer.
        tWrap.hidden = !features.transcript;
        if (!features.transcript) { tBox.checked = false; }
        if (features.title) { title.textContent = features.title; }
        (f.history || []).forEach(render);
        saved.pending.forEach(function (p) {  // not acknowledged before: same client id again
          render({ client_id: p.client_id, direction: "in", text: p.text, pending: true });
          send({ type: "message", client_id: p.client_id, text: p.text });
        });
        showStatus(f.status || { online: true }, f.contact || {}, (f.history || []).length);
        break;
      case "ack":
        saved.pending = saved.pending.filter(function (p) { return p.client_id !== f.client_id; });
        save(saved);
        var li = byClient[f.client_id];
        if (li) {
          li.classList.remove("pending");
          li.setAttribute("data-id", String(f.id));
          shown[f.id] = li;
          var t = li.querySelector("time");
          if (t) { t.textContent = timeOf(); }
        }
        break;
      case "message": render(f); typingLine.hidden = true; break;
      case "typing":
        // The agent's page repeats "on" while typing; if it vanishes, the line does not stay forever.
        typingLine.hidden = !f.on;
        clearTimeout(agentTypingTimer);
        if (f.on) { agentTypingTimer = setTimeout(function () { typingLine.hidden = true; }, 10000); }
        break;
      case "agent":
        notice(f.event === "joined" ? (f.name || "An agent") + " joined the chat" : "The agent left the chat");
        break;
      case "closed":
        notice("This conversation was closed.");
        if (features.rating) { rating.hidden = false; }
        break;
      case "ok":
        if (f["for"] === "rate" || f["for"] === "end") {
          rating.hidden = true;
          // A new address first gets a confirmation link: the transcript follows once it is opened.
          notice(f.confirm ? "Thank you! We sent a link to " + f.confirm + ": open it to receive the transcript."
            : f.transcript ? "Thank you! The transcript is on its way." : "Thank you for your feedback.");
        }
        break;
      case "error":
        if (f.code === "retry") { return; }  // the line stays pending and is resent on reconnect
        if (f.client_id && byClient[f.client_id]) {
          saved.pending = saved.pending.filter(function (p) { return p.client_id !== f.client_id; });
          save(saved);
          byClient[f.client_id].classList.add("failed");
        }
        notice("Sorry: " + (f.message || "that did not work"));
        break;
    }
  }

  function showStatus(st, contact, count) {
    statusLine.textContent = st.online ? "We typically reply in a few minutes." : "";
    if (!st.online) {
      offlineWhy.textContent = st.reason === "closed"
        ? "We are closed right now. Leave a message and we will answer by email."
        : "No one is available right now. Leave a message and we will answer by email.";
      offline.hidden = false;
      composer.hidden = true;
      if (contact.email) { offEmail.value = contact.email; }
      if (contact.name) { offName.value = contact.name; }
      if (!panel.hidden) { offEmail.focus(); }
    } else {
      offline.hidden = true;
      composer.hidden = false;
      prechat.hidden = !(features.prechat && !count && !contact.email && !saved.prechatDone);
      if (!panel.hidden && root.activeElement === text) { (prechat.hidden ? text : pcName).focus(); }
    }
    fileLabel.hidden = !features.upload;
  }

  // -- actions ---------------------------------------------------------------------------
  function sendLine(value) {
    var clean = value.replace(/\s+$/, "");
    if (!clean.trim()) { return; }
    var cid = newId();
    saved.pending.push({ client_id: cid, text: clean });
    save(saved);
    render({ client_id: cid, direction: "in", text: clean, pending: true });
    send({ type: "message", client_id: cid, text: clean });
  }
  composer.addEventListener("submit", function (e) {
    e.preventDefault();
    sendLine(text.value);
    text.value = "";
    typingOff();
    text.focus();
  });
  text.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); composer.requestSubmit(); }
  });
  var typingTimer = null, typingSent = false;
  function typingOff() {
    clearTimeout(typingTimer);
    if (typingSent) { typingSent = false; send({ type: "typing", on: false }); }
  }
  text.addEventListener("input", function () {
    if (!typingSent) { typingSent = send({ type: "typing", on: true }); }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(typingOff, 4000);
  });

  prechat.addEventListener("submit", function (e) {
    e.preventDefault();
    var frame = { type: "prechat" };
    if (pcName.value.trim()) { frame.name = pcName.value.trim(); }
    if (pcEmail.value.trim()) { frame.email = pcEmail.value.trim(); }
    send(frame);
    saved.prechatDone = true; save(saved);
    prechat.hidden = true;
    text.focus();
  });
  offline.addEventListener("submit", function (e) {
    e.preventDefault();
    var cid = newId();
    var frame = { type: "leave_message", client_id: cid, email: offEmail.value.trim(), text: offText.value };
    if (offName.value.trim()) { frame.name = offName.value.trim(); }
    render({ client_id: cid, direction: "in", text: offText.value, pending: true });
    if (send(frame)) {
      offText.value = "";
      notice("Thanks! We will answer by email at " + frame.email + ".");
    }
  });
  fileInput.addEventListener("change", function () {
    var file = fileInput.files && fileInput.files[0];
    fileInput.value = "";
    if (!file) { return; }
    var up = features.upload || {};
    if (up.max_bytes && file.size > up.max_bytes) { notice("Sorry: that file is too large."); return; }
    var cid = newId();
    render({ client_id: cid, direction: "in", text: "", files: [{ id: "", name: file.name }], pending: true });
    var url = base + "upload?client_id=" + cid + "&name=" + encodeURIComponent(file.name);
    fetch(url, { method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream",
                                                        "X-Umsg-Visitor": saved.token || "" } })
      .then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
      .then(function (res) {
        if (!res.ok) { byClient[cid].classList.add("failed"); notice("Sorry: " + res.body.message); return; }
        if (res.body.message) { render(res.body.message); }
      })
      .catch(function () { byClient[cid].classList.add("failed"); notice("Sorry: the upload failed."); });
  });
  endBtn.addEventListener("click", function () {
    if (features.rating || features.transcript) { rating.hidden = false; } else { send({ type: "end" }); }
  });
  rating.addEventListener("submit", function (e) {
    e.preventDefault();
    var picked = rating.querySelector("input[name=score]:checked");
    if (picked) {
      var frame = { type: "rate", score: Number(picked.value) };
      if (rComment.value.trim()) { frame.comment = rComment.value.trim(); }
      send(frame);
    }
    send({ type: "end", transcript: !!tBox.checked });
  });

  function open(show) {
    panel.hidden = !show;
    bubble.setAttribute("aria-expanded", show ? "true" : "false");
    bubble.setAttribute("aria-label", show ? "Close chat" : "Open chat");
    if (show) { connect(); (prechat.hidden ? text : pcName).focus(); } else { bubble.focus(); }
    saved.open = show; save(saved);
  }
  bubble.addEventListener("click", function () { open(panel.hidden); });
  closeBtn.addEventListener("click", function () { open(false); });
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") { open(false); } });
  if (saved.open || saved.pending.length) { open(true); }
})();
