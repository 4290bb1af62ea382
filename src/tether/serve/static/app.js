// Tether UI: refresh server-rendered fragments and follow a run's events (no framework).
"use strict";

function refresh(el) {
  // A form being typed in must not be replaced under the user's fingers.
  if (el.dataset.pauseOnInput && el.contains(document.activeElement) &&
      document.activeElement.tagName === "INPUT") return Promise.resolve();
  return fetch(el.dataset.refresh, {credentials: "same-origin", headers: {"Accept": "text/html"}})
    .then(r => r.ok ? r.text() : null)
    .then(html => { if (html !== null) el.innerHTML = html; })
    .catch(() => {});
}

function poll(el) {
  const every = parseInt(el.dataset.every || "0", 10);
  if (!every) return;
  setInterval(() => { if (!document.hidden) refresh(el); }, every);
}

function followRun(root) {
  const parts = Array.from(root.querySelectorAll("[data-part]"));
  const box = document.getElementById("stream");
  const text = document.getElementById("stream-text");
  const actions = document.getElementById("actions");
  const retry = document.getElementById("retry");
  let pending = null;
  let position = null;
  const update = () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      parts.forEach(el => {
        fetch(root.dataset.refresh + "?part=" + el.dataset.part, {credentials: "same-origin"})
          .then(r => r.ok ? r.text() : null)
          .then(html => { if (html !== null) el.innerHTML = html; })
          .catch(() => {});
      });
    }, 150);
  };
  if (root.dataset.final) return;
  let url = root.dataset.events;
  if (root.dataset.after) url += "?after=" + encodeURIComponent(root.dataset.after);
  const source = new EventSource(url, {withCredentials: true});
  ["op", "status", "live"].forEach(kind => source.addEventListener(kind, update));
  source.addEventListener("status", ev => {
    const data = JSON.parse(ev.data);
    root.dataset.status = data.status;
    if (["completed", "failed", "cancelled"].includes(data.status) && actions) actions.hidden = true;
    if (retry) retry.hidden = !retry.dataset.when.split(" ").includes(data.status);
  });
  source.addEventListener("chunk", ev => {
    const data = JSON.parse(ev.data);
    if (data.type === "llm.error" && data.position === position) {
      text.textContent = "";  // the attempt failed midway; a retry streams anew
      return;
    }
    if (data.type !== "llm.chunk" || typeof data.text !== "string") return;
    if (position !== data.position) { position = data.position; text.textContent = ""; }
    box.hidden = false;
    text.textContent += data.text;  // text, never HTML
  });
  source.addEventListener("op", ev => {
    // The streamed call finished: its answer is in the timeline (and the result) now.
    const data = JSON.parse(ev.data);
    if (data.position === position && data.status !== "pending") box.hidden = true;
  });
  source.addEventListener("end", () => { source.close(); box.hidden = true; update(); });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh][data-every]").forEach(poll);
  const run = document.getElementById("run");
  if (run) followRun(run);
});
