// Tether UI: refresh server-rendered fragments and follow a run's events (no framework).
"use strict";

// Whether the page's data is live: a banner says when the store (503) or the server
// (no answer) cannot be reached, or the session has ended (401: logged out in another
// tab, expired, its token removed; with a link to log in), since when, and goes when
// an answer comes again.
function reachable(ok, why) {
  const bar = document.getElementById("offline");
  if (!bar) return;
  if (ok) { bar.hidden = true; return; }
  bar.querySelector(".why").textContent = why === "server"
    ? "The Tether server cannot be reached." : why === "session"
    ? "Your session has ended." : "The store is unavailable.";
  // (an ended session does not come back by itself: trying again would not help)
  bar.querySelector(".tail").textContent = why === "session"
    ? "; nothing sent from it is done until you log in again." : ", and keeps trying.";
  const login = bar.querySelector(".login");
  if (login) login.hidden = why !== "session";
  if (bar.hidden) {
    // (a time of the page, as the server draws one in a note: the switch redraws it)
    const iso = new Date().toISOString().slice(0, 19);
    const at = document.createElement("time");
    at.setAttribute("datetime", iso + "Z");
    at.dataset.clock = "";
    at.title = iso.replace("T", " ") + " UTC";
    at.textContent = iso.slice(11) + " UTC";
    bar.querySelector(".since").replaceChildren(at);
    showTimes(bar);
  }
  bar.hidden = false;
}

// Times. The server draws each absolute time in UTC ("2026-12-06 13:53:12 UTC": true
// without a script, and to a screen reader), in a <time datetime="...Z"> whose title
// keeps it; a relative time ("41 s ago") holds its absolute one in data-at, for its
// title. The page shows them in the browser's zone, named as its language names it
// ("2026-12-06 05:53:12 PST"), or as drawn, in UTC: the header's switch says which,
// remembered in localStorage (local by default), and every redraw keeps it.
const ZONE_KEY = "tether.times";

function zoneChoice() {
  try { return window.localStorage.getItem(ZONE_KEY) === "utc" ? "utc" : "local"; }
  catch (e) { return "local"; }  // (storage refused: local, and the switch still works)
}

let zoneFormat = null;  // (one for the page: a timeline redraws up to 400 times)

// The zone's short name at ``date`` (its offset changes with summer time).
function zoneName(date) {
  if (!zoneFormat) zoneFormat = new Intl.DateTimeFormat(undefined, {timeZoneName: "short"});
  const part = zoneFormat.formatToParts(date).find(p => p.type === "timeZoneName");
  return part ? part.value : "";
}

const two = n => String(n).padStart(2, "0");

// "05:53:12 PST" (or "13:53:12 UTC"): a time of day, in ``zone``.
function clockText(date, zone) {
  if (zone === "utc") {
    return two(date.getUTCHours()) + ":" + two(date.getUTCMinutes()) + ":" +
      two(date.getUTCSeconds()) + " UTC";
  }
  const name = zoneName(date);
  return two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds()) +
    (name ? " " + name : "");
}

// "2026-12-06 05:53:12 PST": a date and time in the browser's zone, as the server draws
// one in UTC (``fmt_time``).
function localText(date) {
  return String(date.getFullYear()).padStart(4, "0") + "-" + two(date.getMonth() + 1) + "-" +
    two(date.getDate()) + " " + clockText(date, "local");
}

// Show the times under ``root`` in the chosen zone. What the server drew (UTC) is kept
// in each element's dataset, to go back to.
function showTimes(root) {
  const zone = zoneChoice();
  root.querySelectorAll("time[datetime]").forEach(el => {
    const date = new Date(el.getAttribute("datetime"));
    if (isNaN(date.getTime())) return;
    if (el.dataset.utc === undefined) el.dataset.utc = el.textContent;
    el.textContent = zone === "utc" ? el.dataset.utc
      : "clock" in el.dataset ? clockText(date, zone) : localText(date);
  });
  root.querySelectorAll("[data-at]").forEach(el => {
    const date = new Date(el.dataset.at);
    if (isNaN(date.getTime())) return;
    if (el.dataset.utcTitle === undefined) el.dataset.utcTitle = el.title;
    const say = el.dataset.say || "";
    el.title = zone === "utc" ? el.dataset.utcTitle
      : say + localText(date) + " (" + el.dataset.utcTitle.slice(say.length) + ")";
  });
}

// The header's switch: local time or UTC.
function zoneSwitch() {
  const box = document.getElementById("zones");
  if (!box) return;
  const mark = () => {
    const zone = zoneChoice();
    box.querySelectorAll("button[data-zone]").forEach(b => {
      b.setAttribute("aria-pressed", String(b.dataset.zone === zone));
    });
  };
  const local = box.querySelector("button[data-zone=local]");
  const named = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (local && named) local.title = "in this browser's time zone, " + named;
  box.addEventListener("click", ev => {
    const button = ev.target.closest("button[data-zone]");
    if (!button) return;
    try { window.localStorage.setItem(ZONE_KEY, button.dataset.zone); } catch (e) { return; }
    mark();
    showTimes(document);
  });
  // (another tab switched: this one follows)
  window.addEventListener("storage", ev => {
    if (ev.key === ZONE_KEY) { mark(); showTimes(document); }
  });
  mark();
  box.hidden = false;
}

// A fragment's new HTML, or null when there is none to show (the banner says why).
// Only an HTML answer is drawn: anything else (a JSON document, say) is text that
// must never become markup.
function fetchPart(url, headers) {
  return fetch(url, {credentials: "same-origin", headers: headers || {}})
    .then(r => {
      if (r.ok) {
        reachable(true);
        return (r.headers.get("Content-Type") || "").startsWith("text/html") ? r.text() : null;
      }
      if (r.status === 503) reachable(false, "store");
      if (r.status === 401) reachable(false, "session");
      return null;
    })
    .catch(() => { reachable(false, "server"); return null; });
}

// A text field's place in a fragment, the same in its redrawn copy: its form's action,
// the approval the form answers (if any) and its name.
function fieldKey(input) {
  const form = input.form;
  const which = form && form.querySelector("input[type=hidden][name=approval_id]");
  return (form ? form.getAttribute("action") : "") + "|" + (which ? which.value : "") +
    "|" + input.name;
}

// Draw a fragment's new HTML in ``el``, keeping what the user typed in its text fields
// and not sent yet (a note, a signal's data): a redraw every 3 s emptied the note of an
// approval typed, then left to read the arguments. A field whose form is gone with the
// redraw (its approval answered meanwhile) goes with it.
function redraw(el, html) {
  const typed = new Map();
  el.querySelectorAll("input[type=text]").forEach(input => {
    if (input.value !== input.defaultValue) typed.set(fieldKey(input), input.value);
  });
  // (a box ticked, the timeline's "show all entries", stays ticked: a run event
  // redraws the timeline, and folded it again under the reader)
  const ticked = new Map();
  el.querySelectorAll("input[type=checkbox][id]").forEach(box => {
    ticked.set(box.id, box.checked);
  });
  el.innerHTML = html;
  ticked.forEach((on, id) => {
    const box = document.getElementById(id);
    if (box && el.contains(box)) box.checked = on;
  });
  showTimes(el);
  if (!typed.size) return;
  el.querySelectorAll("input[type=text]").forEach(input => {
    const value = typed.get(fieldKey(input));
    if (value !== undefined) input.value = value;
  });
}

function refresh(el) {
  // A form being typed in must not be replaced under the user's fingers.
  if (el.dataset.pauseOnInput && el.contains(document.activeElement) &&
      document.activeElement.tagName === "INPUT") return Promise.resolve();
  return fetchPart(el.dataset.refresh, {"Accept": "text/html"})
    .then(html => { if (html !== null) redraw(el, html); });
}

// A duration as the server draws it (``fmt_duration``).
function fmtDuration(s) {
  if (s < 1e-3) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(1) + " ms";
  if (s < 120) return s.toFixed(2) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// How long ago, as the server draws it (``fmt_ago``, by tether._clock.age's rule:
// the CLI's too).
function fmtAgo(s) {
  if (s < 120) return s.toFixed(0) + " s ago";
  if (s < 7200) return (s / 60).toFixed(0) + " min ago";
  if (s < 172800) return (s / 3600).toFixed(1) + " h ago";
  const days = s / 86400;
  return days.toFixed(days < 10 ? 1 : 0) + " d ago";
}

// A "running for" (of a run, of an operation in flight), a wait's "so far" and the
// head's "started ... ago" go on between redraws: from their value when drawn (the
// server's clock: no skew with the browser's), plus the time since, by this page's
// monotonic clock. (A "started 4 s ago" left as drawn beside a "running for" that
// counted on read "started 4 s ago · running for 1.1 min" a minute later.)
function tick() {
  const now = performance.now();
  const since = el => {
    if (!el.dataset.drawnAt) { el.dataset.drawnAt = String(now); return NaN; }
    return (now - parseFloat(el.dataset.drawnAt)) / 1000;
  };
  document.querySelectorAll("[data-ticking]").forEach(el => {
    const s = parseFloat(el.dataset.ticking) + since(el);
    if (isFinite(s)) el.textContent = fmtDuration(s);
  });
  document.querySelectorAll("[data-ago]").forEach(el => {
    const s = parseFloat(el.dataset.ago) + since(el);
    if (isFinite(s)) el.textContent = fmtAgo(Math.max(s, 0));
  });
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
  let attempt = null;  // the attempt whose answer the box shows
  const note = document.querySelector("main > .flash");
  const drawn = document.getElementById("run-status");
  const drawnStatus = drawn ? drawn.textContent.trim() : null;
  // The signal form below is filled with the signal the run awaits; once the run moves
  // on (the head redrawn), it follows: the new awaited name, or empty. A name the user
  // typed (or a field being typed in) is left alone.
  const awaited = () => {
    const field = actions && actions.querySelector("form.signal input[name=name]");
    if (!field || document.activeElement === field || field.value !== field.dataset.filled) return;
    const asked = root.querySelector("#waits input[type=hidden][name=name]");
    const name = asked ? asked.value : "";
    field.value = name;
    field.dataset.filled = name;
  };
  // The Retry button's note says how many recorded operations a retry keeps: as of the
  // head last drawn (it said the count when the page was opened, before the run failed).
  const keeps = () => {
    const now = root.querySelector("#retry-keeps");
    const shown = retry && retry.querySelector("[data-keeps]");
    if (now && shown) shown.textContent = now.textContent;
  };
  // The Cancel run button is a note once a cancel is requested (the head says so): the
  // page offered a second cancel of a run whose first was pending. The note says since
  // when, as the head does: a copy of the head's age (it ticks; its title the time).
  const cancelAsked = () => {
    const form = actions && actions.querySelector("form.cancel");
    const said = actions && actions.querySelector(".cancel-asked");
    if (!form || !said) return;
    const head = root.querySelector("[data-cancel-asked]");
    form.hidden = !!head;
    said.hidden = !head;
    const when = said.querySelector("[data-asked-when]");
    const at = head && root.querySelector("[data-cancel-asked] + [data-ago]");
    if (when) when.replaceChildren(...(at ? [at.cloneNode(true)] : []));
  };
  // No event tells of an operation's start (its attempt is written, no event with it):
  // while the body says no operation is known to be in flight (data-unknown), it is
  // drawn again after 0.25 s, then ever less often (up to every 5 s), until it shows
  // one (a running row), or the run stops running.
  let again = null;
  let againAfter = 250;
  const lookAgain = () => {
    const body = parts.find(el => el.dataset.part === "body");
    if (again || !body) return;
    if (!body.querySelector("[data-unknown]")) { againAfter = 250; return; }
    again = setTimeout(() => { again = null; update(); }, againAfter);
    againAfter = Math.min(againAfter * 2, 5000);
  };
  const update = () => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      parts.forEach(el => {
        // (the page's own query, the timeline's size, is kept: ?timeline=N&part=body)
        const sep = root.dataset.refresh.includes("?") ? "&" : "?";
        fetchPart(root.dataset.refresh + sep + "part=" + el.dataset.part)
          .then(html => {
            if (html === null) return;
            redraw(el, html);
            tick();  // (stamps what was drawn)
            if (el.dataset.part === "head") { awaited(); keeps(); cancelAsked(); }
            if (el.dataset.part === "body") lookAgain();
          });
      });
    }, 150);
  };
  if (root.dataset.final) return;
  lookAgain();
  let last = root.dataset.after || null;  // the last event seen: a new stream goes on from it
  // What the page does with a stream's events.
  const follow = source => {
    ["op", "status", "live", "cancel", "chunk"].forEach(kind => source.addEventListener(kind, ev => {
      if (ev.lastEventId) last = ev.lastEventId;
    }));
    // (a cancel of a run it does not end keeps its status: its own event redraws the
    // head, whose "cancel requested" swaps the Cancel button for its note)
    ["op", "status", "live", "cancel"].forEach(kind => source.addEventListener(kind, update));
    source.addEventListener("status", ev => {
      const data = JSON.parse(ev.data);
      root.dataset.status = data.status;
      // The note of the form just sent ("Asked run ... to cancel at 07:12:03 UTC") says
      // what was asked; once the run's status moves on from the one the page was drawn
      // with, it adds where the run is now, as the head does (it read "queued again"
      // under a head saying completed).
      if (note && data.status !== drawnStatus) {
        let now = note.querySelector("[data-now]");
        if (!now) { now = document.createElement("span"); now.dataset.now = ""; note.append(now); }
        now.textContent = " It is now " + data.status + ".";
      }
      // (data-ended: the ended statuses, tether._types.ENDED_VALUES, from the page)
      if (root.dataset.ended.split(" ").includes(data.status) && actions) actions.hidden = true;
      if (retry) retry.hidden = !retry.dataset.when.split(" ").includes(data.status);
    });
    source.addEventListener("chunk", ev => {
      const data = JSON.parse(ev.data);
      if (data.type === "llm.error" && data.position === position) {
        text.textContent = "";  // the attempt failed midway; a retry streams anew
        return;
      }
      if (data.type !== "llm.chunk" || typeof data.text !== "string") return;
      // A new call, or the same call asked again: a worker that took the run over after
      // its worker died (killed, no llm.error sent) streams the answer anew, as the
      // next attempt; the dead attempt's words go.
      if (position !== data.position || attempt !== data.attempt) {
        position = data.position;
        attempt = data.attempt;
        text.textContent = "";
      }
      box.hidden = false;
      text.textContent += data.text;  // text, never HTML
    });
    source.addEventListener("op", ev => {
      // The streamed call finished: its answer is in the timeline (and the result) now.
      const data = JSON.parse(ev.data);
      if (data.position === position && data.status !== "pending") box.hidden = true;
    });
    source.addEventListener("end", () => { source.close(); box.hidden = true; update(); });
  };
  const connect = () => {
    let url = root.dataset.events;
    if (last) url += "?after=" + encodeURIComponent(last);
    const source = new EventSource(url, {withCredentials: true});
    follow(source);
    source.addEventListener("open", () => reachable(true));
    source.addEventListener("error", () => {
      // The stream broke or could not start. An EventSource does not say why: the
      // parts' refresh finds out, for the banner (the store down, the server gone). The
      // browser reconnects a stream that broke by itself, but gives up for good on an
      // answer that is not a stream (a 503 while the store is down): start it anew.
      update();
      if (source.readyState !== EventSource.CLOSED) return;
      // A 400 is a cursor the server refuses, and would refuse for ever: no longer one
      // of the run's events (an erase deleted its streamed chunks; the run was purged
      // and started again). The stream starts anew from the run's first event then.
      const tried = last;
      fetch(url, {method: "HEAD", credentials: "same-origin"})
        .then(r => {
          if (r.status === 400 && tried !== null && last === tried) {
            last = null;
            position = null;
            attempt = null;
            text.textContent = "";
          }
        })
        .catch(() => {})
        .finally(() => setTimeout(connect, 5000));
    });
  };
  connect();
}

// A form that ends something asks first (its data-confirm says what will happen).
document.addEventListener("submit", ev => {
  const msg = ev.target.dataset ? ev.target.dataset.confirm : undefined;
  if (msg && !window.confirm(msg)) ev.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => {
  showTimes(document);
  zoneSwitch();
  document.querySelectorAll("[data-refresh][data-every]").forEach(poll);
  const run = document.getElementById("run");
  if (run) {
    tick();
    setInterval(tick, 1000);
    followRun(run);
  }
});
