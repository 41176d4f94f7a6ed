// rtcam snapshots and recordings. The Snapshot button fetches
// /snapshot.jpg and shows it with a link to download it. The Recordings view
// lists the recorder's segments (GET /recordings) per day, each day with a
// 24 h timeline in this browser's local time; a segment plays in the page,
// downloads, and (control role) is deleted. HTTP requests carry the page's
// token: as "Authorization: Bearer" where the page fetches, as
// ?access_token= where an element loads the URL itself (<video src>, links).
// Loaded after app.js, which forwards the recorder's MQTT state (P/record)
// and events (P/record/event) to the hooks below.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  // The list is read again this often while the view is open.
  const REFRESH_MS = 30000;
  const R = {
    open: false,
    timer: null,
    list: [],             // the last /recordings answer, oldest first
    off: false,           // the camera answered recording_off
    listError: "",        // why the list could not be read, if it could not
    loading: null,        // the list request under way
    dayOpen: new Map(),   // day start (ms) -> whether its table is unfolded, as the user left it
    playing: null,        // the name of the segment in the player
    events: [],           // marks on the timelines: {start_ms, end_ms, label}
    forbidden: false,     // a delete was refused: this page's token may not delete
    armed: null,          // {name, until}: a Delete clicked once, waiting for its second click
    snapUrl: null,        // the shown snapshot's object URL
    segment: undefined,   // the recorder's open segment, from P/record
  };

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The live view's message line, and the recordings view's.
  function say(text) { $("message").textContent = text || ""; }
  function recSay(text) { $("rec-message").textContent = text || ""; }

  function token() { return window.rtcam ? window.rtcam.token : null; }

  function authHeaders() {
    const t = token();
    return t ? { Authorization: "Bearer " + t } : {};
  }

  // What the page's token lets it do with recordings: "control", "view",
  // or null when only the camera knows (a static token from its config; a
  // refused delete then tells). Without a token the camera either needs
  // none (every viewer is control) or refuses the list itself.
  function role() {
    const t = token();
    if (!t) return "control";
    const m = /^rtcam2\.(view|control)\./.exec(t);
    return m ? m[1] : null;
  }

  function mayDelete() { return !R.forbidden && role() !== "view"; }

  // A refused request's text: the camera's {"error","message"}, or the status.
  async function failure(r) {
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON: the status says it */ }
    if (body && body.error) {
      let text = `${body.error}: ${body.message || r.status}`;
      if (body.error === "missing_token") text += " (open the page as /?token=…)";
      return { code: body.error, text };
    }
    return { code: String(r.status), text: `HTTP ${r.status} ${r.statusText}`.trim() };
  }

  function recordingUrl(name, withToken) {
    const path = "/recordings/" + name.split("/").map(encodeURIComponent).join("/");
    const t = token();
    return withToken && t ? `${path}?access_token=${encodeURIComponent(t)}` : path;
  }

  // ---- times and sizes, in the browser's local time ----

  const pad = (n) => String(n).padStart(2, "0");

  // For file names: 2026-11-30_17-45-03.
  function stamp(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}_` +
      `${pad(d.getHours())}-${pad(d.getMinutes())}-${pad(d.getSeconds())}`;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function dayTitle(dayStart) {
    return new Date(dayStart).toLocaleDateString([], { weekday: "short", year: "numeric", month: "short", day: "numeric" });
  }

  function dayStartOf(ms) {
    const d = new Date(ms);
    d.setHours(0, 0, 0, 0);
    return d.getTime();
  }

  // The next local midnight (days of 23 or 25 h at clock changes).
  function nextDay(dayStart) {
    const d = new Date(dayStart);
    d.setDate(d.getDate() + 1);
    d.setHours(0, 0, 0, 0);
    return d.getTime();
  }

  function duration(ms) {
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function size(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
    if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
    return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GiB`;
  }

  function deviceName() {
    return ($("device").textContent || "rtcam").trim().replace(/[^A-Za-z0-9._-]+/g, "_") || "rtcam";
  }

  const pct = (part, whole) => `${(100 * part / whole).toFixed(4)}%`;

  // ---- snapshot ----

  async function snapshot() {
    const button = $("snapshot");
    button.disabled = true;
    try {
      const r = await fetch("/snapshot.jpg", { headers: authHeaders(), cache: "no-store" });
      if (!r.ok) {
        say("snapshot: " + (await failure(r)).text);
        return;
      }
      const blob = await r.blob();
      const at = Date.now();
      if (R.snapUrl) URL.revokeObjectURL(R.snapUrl);
      R.snapUrl = URL.createObjectURL(blob);
      $("snap-img").src = R.snapUrl;
      const download = $("snap-download");
      download.href = R.snapUrl;
      download.download = `${deviceName()}-${stamp(at)}.jpg`;
      $("snap-open").href = R.snapUrl;
      $("snap-time").textContent = `Snapshot of ${clock(at)}`;
      $("snap").hidden = false;
    } catch (e) {
      say("snapshot: " + e);
    } finally {
      button.disabled = false;
    }
  }

  function closeSnapshot() {
    $("snap").hidden = true;
    $("snap-img").removeAttribute("src");
    if (R.snapUrl) URL.revokeObjectURL(R.snapUrl);
    R.snapUrl = null;
  }

  // ---- the recordings view ----

  function toggle() {
    R.open = !R.open;
    $("recordings").hidden = !R.open;
    $("rec-toggle").setAttribute("aria-expanded", String(R.open));
    clearInterval(R.timer);
    R.timer = null;
    if (R.open) {
      load();
      R.timer = setInterval(load, REFRESH_MS);
    }
  }

  // Reads the list (one request at a time) and draws it.
  function load() {
    if (R.loading) return R.loading;
    R.loading = (async () => {
      try {
        const r = await fetch("/recordings", { headers: authHeaders(), cache: "no-store" });
        if (!r.ok) {
          const f = await failure(r);
          R.off = r.status === 404 && f.code === "recording_off";
          R.listError = R.off ? "" : "cannot list the recordings: " + f.text;
          if (R.off) R.list = [];
        } else {
          const body = await r.json();
          if (!Array.isArray(body.recordings)) throw new Error("the answer has no \"recordings\" list");
          R.list = body.recordings;
          // Motion events the camera logged, marked on the timelines.
          if (Array.isArray(body.motion)) {
            R.events = body.motion.filter((e) => e && Number.isFinite(e.start_ms));
          }
          R.off = false;
          R.listError = "";
        }
      } catch (e) {
        R.listError = "cannot list the recordings: " + e;
      } finally {
        R.loading = null;
      }
      render();
    })();
    return R.loading;
  }

  function info(text, isError) {
    const p = $("rec-info");
    p.textContent = text;
    p.className = isError ? "message" : "";
  }

  function render() {
    const days = $("rec-days");
    days.textContent = "";
    if (R.off) {
      info("Recording is off on this camera. To record, set mode = \"continuous\" " +
        "(or \"events\") in the [record] section of its config file and restart rtcam.", false);
      return;
    }
    if (R.listError) {
      // The last list drawn stays below the error, marked as such.
      info(R.listError, true);
    } else if (!R.list.length) {
      info("No recordings yet.", false);
      return;
    } else {
      const bytes = R.list.reduce((a, r) => a + r.bytes, 0);
      info(`${R.list.length} segment${R.list.length === 1 ? "" : "s"}, ${size(bytes)}. ` +
        "Times are this browser's local time; click a segment to play it.", false);
    }
    // Per local day: the segments that start in it (its table), and the
    // pieces drawn on its timeline (a segment over midnight is on both).
    const groups = new Map();
    const group = (day) => {
      if (!groups.has(day)) groups.set(day, { recs: [], pieces: [] });
      return groups.get(day);
    };
    for (const rec of R.list) {
      const start = rec.start_ms;
      const end = start + Math.max(0, rec.duration_ms);
      let day = dayStartOf(start);
      group(day).recs.push(rec);
      for (let n = 0; n < 400; n++) {
        const next = nextDay(day);
        group(day).pieces.push({ rec, from: Math.max(start, day), to: Math.min(end, next) });
        if (end <= next) break;
        day = next;
      }
    }
    const order = [...groups.keys()].sort((a, b) => b - a);
    order.forEach((day, i) => days.appendChild(dayBox(day, groups.get(day), i === 0)));
  }

  function dayBox(day, g, newest) {
    const next = nextDay(day);
    const span = next - day;
    const box = el("div", { class: "day", "data-day": String(day) });
    const ms = g.recs.reduce((a, r) => a + r.duration_ms, 0);
    const bytes = g.recs.reduce((a, r) => a + r.bytes, 0);
    box.appendChild(el("h3", {}, `${dayTitle(day)} · ${g.recs.length} segment${g.recs.length === 1 ? "" : "s"}` +
      ` · ${duration(ms)} · ${size(bytes)}`));
    const bar = el("div", { class: "timeline", title: "click a segment to play it" });
    for (let h = 0; h < 24; h += 3) {
      const t = new Date(day);
      t.setHours(h, 0, 0, 0);
      const tick = el("span", { class: "tick" }, pad(h));
      tick.style.left = pct(t.getTime() - day, span);
      bar.appendChild(tick);
    }
    for (const p of g.pieces) {
      const rec = p.rec;
      const end = rec.start_ms + rec.duration_ms;
      const label = `${clock(rec.start_ms)} – ${clock(end)} (${duration(rec.duration_ms)})` +
        (rec.open ? " · recording now" : "");
      const seg = el("span", {
        class: "seg" + (rec.open ? " open" : "") + (rec.name === R.playing ? " playing" : ""),
        "data-name": rec.name,
        title: label,
      });
      seg.style.left = pct(p.from - day, span);
      seg.style.width = pct(p.to - p.from, span);
      bar.appendChild(seg);
    }
    for (const ev of R.events) {
      const from = ev.start_ms;
      const to = ev.end_ms === undefined || ev.end_ms === null ? from : ev.end_ms;
      if (to < day || from >= next) continue;
      const mark = el("span", { class: "mark", title: `${ev.label || "event"} ${clock(from)}` });
      mark.style.left = pct(Math.max(from, day) - day, span);
      mark.style.width = pct(Math.min(to, next) - Math.max(from, day), span);
      bar.appendChild(mark);
    }
    const now = Date.now();
    if (now >= day && now < next) {
      const line = el("span", { class: "now", title: "now" });
      line.style.left = pct(now - day, span);
      bar.appendChild(line);
    }
    // Segments a few seconds long are thinner than a pixel on a 24 h bar:
    // a click plays the segment under it or the nearest one within 8 px.
    bar.addEventListener("click", (e) => {
      const rect = bar.getBoundingClientRect();
      const t = day + (e.clientX - rect.left) / rect.width * span;
      const slack = 8 / rect.width * span;
      let best = null;
      let bestGap = Infinity;
      for (const p of g.pieces) {
        const gap = t < p.from ? p.from - t : t > p.to ? t - p.to : 0;
        if (gap < bestGap) { best = p.rec; bestGap = gap; }
      }
      if (best && bestGap <= slack) play(best);
    });
    box.appendChild(bar);

    const details = el("details");
    details.appendChild(el("summary", {}, "Segments"));
    details.open = R.dayOpen.has(day) ? R.dayOpen.get(day) : newest;
    const fill = () => {
      if (details.querySelector("table")) return;
      details.appendChild(table(g.recs));
    };
    if (details.open) fill();
    details.addEventListener("toggle", () => {
      R.dayOpen.set(day, details.open);
      if (details.open) fill();
    });
    box.appendChild(details);
    return box;
  }

  // A day's segments, newest first.
  function table(recs) {
    const t = el("table", { class: "rec-list" });
    const head = el("tr");
    for (const h of ["Start", "Length", "Frames", "Size", ""]) head.appendChild(el("th", {}, h));
    t.appendChild(head);
    for (const rec of recs.slice().reverse()) {
      const tr = el("tr", { "data-name": rec.name, class: rec.name === R.playing ? "playing" : "" });
      tr.appendChild(el("td", {}, clock(rec.start_ms)));
      const len = el("td", {}, duration(rec.duration_ms));
      if (rec.open) len.appendChild(el("span", { class: "live" }, " ● recording"));
      tr.appendChild(len);
      tr.appendChild(el("td", {}, String(rec.frames)));
      tr.appendChild(el("td", {}, size(rec.bytes)));
      const actions = el("td");
      const playButton = el("button", { type: "button", class: "play" }, "Play");
      playButton.addEventListener("click", () => play(rec));
      actions.appendChild(playButton);
      actions.appendChild(document.createTextNode(" "));
      actions.appendChild(el("a", {
        class: "download",
        href: recordingUrl(rec.name, true),
        download: `${deviceName()}-${stamp(rec.start_ms)}.mp4`,
      }, "Download"));
      // The open segment cannot be deleted (in_use) until it is closed.
      if (mayDelete() && !rec.open) {
        actions.appendChild(document.createTextNode(" "));
        const del = el("button", { type: "button", class: "delete" }, armed(rec.name) ? SURE : "Delete");
        del.addEventListener("click", () => remove(rec, del));
        actions.appendChild(del);
      }
      tr.appendChild(actions);
      t.appendChild(tr);
    }
    return t;
  }

  function markPlaying() {
    for (const e of document.querySelectorAll("#rec-days [data-name]")) {
      e.classList.toggle("playing", e.getAttribute("data-name") === R.playing);
    }
  }

  function play(rec) {
    recSay("");
    R.playing = rec.name;
    const v = $("rec-video");
    $("rec-player").hidden = false;
    $("rec-playing").textContent = `${dayTitle(dayStartOf(rec.start_ms))}, ${clock(rec.start_ms)}` +
      ` · ${duration(rec.duration_ms)}` + (rec.open ? " · still recording: plays what is written so far" : "");
    v.src = recordingUrl(rec.name, true);
    v.play().catch((e) => {
      // A newer choice replaced this one (AbortError), or the source failed
      // (the "error" event below says why).
      if (e.name === "NotAllowedError") recSay("press play to start " + rec.name + " (" + e.message + ")");
    });
    markPlaying();
  }

  function stopPlaying() {
    R.playing = null;
    const v = $("rec-video");
    v.removeAttribute("src");
    v.load();
    $("rec-player").hidden = true;
    markPlaying();
  }

  // The player failed: the camera's own reason if it refused the file
  // (token, gone), else the browser's.
  async function playerError() {
    const v = $("rec-video");
    const name = R.playing;
    if (!name || !v.error) return;
    let why = `the browser cannot play it (media error ${v.error.code}${v.error.message ? ": " + v.error.message : ""})`;
    try {
      const r = await fetch(recordingUrl(name, false), {
        headers: Object.assign({ Range: "bytes=0-0" }, authHeaders()),
        cache: "no-store",
      });
      if (!r.ok) why = (await failure(r)).text;
    } catch (e) {
      why += `; and it cannot be fetched: ${e}`;
    }
    if (R.playing === name) recSay(`cannot play ${name}: ${why}`);
  }

  // Delete takes two clicks (the second within 4 s), no modal dialog; the
  // first one survives the list being redrawn.
  const SURE = "Delete: sure?";
  const armed = (name) => R.armed && R.armed.name === name && Date.now() < R.armed.until;

  async function remove(rec, button) {
    if (!armed(rec.name)) {
      R.armed = { name: rec.name, until: Date.now() + 4000 };
      button.textContent = SURE;
      setTimeout(() => {
        if (armed(rec.name)) return;
        for (const b of document.querySelectorAll("#rec-days button.delete")) {
          if (b.textContent === SURE && !armed(b.closest("tr").getAttribute("data-name"))) b.textContent = "Delete";
        }
      }, 4100);
      return;
    }
    R.armed = null;
    button.disabled = true;
    recSay("");
    try {
      const r = await fetch(recordingUrl(rec.name, false), { method: "DELETE", headers: authHeaders() });
      if (r.ok) {
        if (R.playing === rec.name) stopPlaying();
        await load();
        return;
      }
      const f = await failure(r);
      if (f.code === "forbidden") {
        // A view token: no more delete buttons.
        R.forbidden = true;
        render();
      }
      recSay(`cannot delete ${rec.name}: ${f.text}`);
    } catch (e) {
      recSay(`cannot delete ${rec.name}: ${e}`);
    } finally {
      button.disabled = false;
    }
  }

  // The recorder's retained state on P/record: a badge, and a new list
  // when its open segment changes (the previous one was closed).
  function onState(st) {
    const b = $("rec-state");
    b.hidden = false;
    b.className = "badge" + (st.state === "recording" ? " recording" : st.state === "error" ? " offline" : "");
    b.textContent = st.state === "recording" ? "● REC" : st.state === "error" ? "recorder error" : "recorder idle";
    b.title = st.state === "error" ? (st.error || "error") : `${st.mode || ""} ${st.segment || ""}`.trim();
    if (st.state === "error" && st.error) say("recorder: " + st.error);
    const segment = st.segment || null;
    if (R.segment !== undefined && segment !== R.segment && R.open) load();
    R.segment = segment;
  }

  function onEvent(ev) {
    if (R.open && (ev.event === "record.started" || ev.event === "record.stopped")) load();
  }

  $("snapshot").addEventListener("click", snapshot);
  $("snap-close").addEventListener("click", closeSnapshot);
  $("snap-img").addEventListener("error", () => {
    if ($("snap-img").getAttribute("src")) say("snapshot: the camera's answer is not a picture the browser can show");
  });
  $("rec-toggle").addEventListener("click", toggle);
  $("rec-refresh").addEventListener("click", () => load());
  $("rec-video").addEventListener("error", playerError);

  window.rtcamRecordings = {
    onState,
    onEvent,
    // Marks [{start_ms, end_ms?, label?}] on the timelines (Unix ms); the
    // list /recordings gives ("motion") is marked at each load.
    markEvents(list) {
      R.events = (list || []).filter((e) => e && Number.isFinite(e.start_ms));
      render();
    },
    refresh: load,
    get recordings() { return R.list; },
    get playing() { return R.playing; },
  };
})();
