// Media of a message, inline: audio players with their duration, fax/PDF page viewers,
// image previews, and download links. Bytes come through blob: URLs (see api.js).

import { api, mediaUrl } from "./api.js";
import { el, replace } from "./dom.js";

const PAGED = ["image/tiff", "image/tif", "application/pdf"];
// Formats Chromium shows in <img> without running anything (SVG is offered as a file only).
const IMAGES = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"];

function baseType(part) {
  return (part.media_type || "").split(";")[0].trim().toLowerCase();
}

function sizeLabel(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1048576) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

function download(part) {
  const name = part.filename || `part-${part.id}`;
  return el("button", {
    type: "button", class: "file", title: `Download ${name}`,
    onclick: async () => {
      const a = el("a", { href: await mediaUrl(part.content_url), download: name });
      a.click();
    },
  }, "⬇ ", name, " ", el("span", { class: "muted" }, `(${sizeLabel(part.size)})`));
}

function audio(part) {
  const player = el("audio", { controls: true, preload: "metadata", class: "voicemail" });
  const length = el("span", { class: "duration muted" }, "…");
  player.addEventListener("loadedmetadata", () => {
    if (Number.isFinite(player.duration)) length.textContent = `${player.duration.toFixed(1)} s`;
  });
  mediaUrl(part.content_url).then((url) => { player.src = url; }, (err) => { length.textContent = err.message; });
  return el("div", { class: "media audio" }, el("span", { class: "label" }, "Voicemail"), player, length,
    download(part));
}

function image(part) {
  const img = el("img", { class: "preview", alt: part.filename || "image" });
  mediaUrl(part.content_url).then((url) => { img.src = url; });
  return el("div", { class: "media image" }, img, download(part));
}

function pages(part) {
  const img = el("img", { class: "page", alt: `${part.filename || "document"} page` });
  const label = el("span", { class: "pageno" }, "…");
  const prev = el("button", { type: "button", disabled: true }, "◀ Prev");
  const next = el("button", { type: "button", disabled: true }, "Next ▶");
  const box = el("div", { class: "media pages" },
    el("div", { class: "pagebar" }, el("span", { class: "label" }, "Fax / document"), prev, label, next, download(part)),
    img);
  let count = 0;
  let current = 1;
  const show = async (n) => {
    current = n;
    label.textContent = `page ${n} of ${count}`;
    prev.disabled = n <= 1;
    next.disabled = n >= count;
    img.src = await mediaUrl(`/api/v1/parts/${part.id}/pages/${n}`);
    box.dataset.page = String(n);
  };
  prev.addEventListener("click", () => show(current - 1));
  next.addEventListener("click", () => show(current + 1));
  api("GET", `/api/v1/parts/${part.id}/pages`).then((info) => {
    count = info.pages;
    return show(1);
  }).catch((err) => replace(label, err.message));
  return box;
}

export function renderPart(part) {
  const type = baseType(part);
  if (type.startsWith("audio/")) return audio(part);
  if (PAGED.includes(type)) return pages(part);
  if (IMAGES.includes(type)) return image(part);
  return el("div", { class: "media file" }, download(part));
}

// Email HTML (already sanitised by the ingest) in a sandbox: no scripts, no same-origin
// access, and a policy inside that blocks every fetch except inline styles and data: images.
export function htmlFrame(html) {
  const policy = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";
  const doc = `<!doctype html><meta http-equiv="Content-Security-Policy" content="${policy}">` +
    `<base target="_blank"><body>${html}</body>`;
  const frame = el("iframe", { class: "html", sandbox: "", referrerpolicy: "no-referrer", title: "Formatted message" });
  frame.srcdoc = doc; // a property, parsed only inside the sandboxed frame
  return frame;
}
