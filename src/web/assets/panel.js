// rtcam control panel: builds controls from the camera's P/info (pins) and
// drives them over the "control" DataChannel; gpio.changed events keep every
// open panel in sync. Loaded after app.js, which calls the hooks below.
"use strict";

(function () {
  const box = document.getElementById("controls");
  let pins = [];            // from P/info
  let built = "";           // signature of the pins the controls were built for
  let status = null;        // last video.status

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function show(reply) {
    const msg = document.getElementById("message");
    if (reply && !reply.ok && reply.error) msg.textContent = `${reply.error.code}: ${reply.error.message}`;
  }

  // Sliders send while dragging, at most every 80 ms, and once on release.
  function throttled(fn) {
    let last = 0;
    let timer = null;
    return (v, final) => {
      clearTimeout(timer);
      const now = Date.now();
      if (final || now - last > 80) {
        last = now;
        fn(v);
      } else {
        timer = setTimeout(() => { last = Date.now(); fn(v); }, 80);
      }
    };
  }

  function row(label, control) {
    const r = el("div", { class: "control" });
    r.appendChild(el("label", {}, label));
    r.appendChild(control);
    return r;
  }

  function slider(id, min, max, step, value, send) {
    const s = el("input", { type: "range", id, min, max, step, value });
    const out = el("span", { id: id + "-value" }, String(value));
    const wrap = el("span");
    wrap.appendChild(s);
    wrap.appendChild(out);
    const t = throttled(send);
    s.addEventListener("input", () => { out.textContent = s.value; t(Number(s.value), false); });
    s.addEventListener("change", () => t(Number(s.value), true));
    return wrap;
  }

  function build() {
    const sig = JSON.stringify(pins.map((p) => [p.name, p.mode, p.min, p.max]));
    if (sig === built) return;
    built = sig;
    box.innerHTML = "";
    if (pins.length) box.appendChild(el("h2", {}, "Controls"));
    for (const p of pins) {
      if (p.mode === "output") {
        const c = el("input", { type: "checkbox", id: "pin-" + p.name });
        c.checked = !!p.value;
        c.addEventListener("change", async () => {
          const r = await window.rtcam.call("gpio.set", { pin: p.name, value: c.checked });
          show(r);
          if (!r.ok) c.checked = !c.checked;
        });
        box.appendChild(row(p.name, c));
      } else if (p.mode === "input") {
        const led = el("span", { class: "led" + (p.value ? " on" : ""), id: "led-" + p.name, title: p.name });
        box.appendChild(row(p.name, led));
      } else if (p.mode === "pwm") {
        box.appendChild(row(p.name, slider("pin-" + p.name, p.min ?? 0, p.max ?? 1, 0.01, p.value ?? 0,
          async (v) => show(await window.rtcam.call("pwm.set", { pin: p.name, duty: v })))));
      } else if (p.mode === "servo") {
        box.appendChild(row(p.name, slider("pin-" + p.name, p.min ?? 0, p.max ?? 180, 1, p.value ?? 0,
          async (v) => show(await window.rtcam.call("servo.set", { pin: p.name, angle: v })))));
      }
    }
    box.appendChild(el("h2", {}, "Video"));
    const lo = status ? status.min_bitrate_kbps : 100;
    const hi = status ? status.max_bitrate_kbps : 8000;
    // null in passthrough (the camera sets its own bitrate).
    const cur = status && status.bitrate_kbps !== null ? status.bitrate_kbps : 2000;
    box.appendChild(row("Bitrate (kbit/s)", slider("bitrate", lo, hi, 50, cur,
      async (v) => show(await window.rtcam.call("video.bitrate", { kbps: v })))));
    const kf = el("button", { id: "keyframe", type: "button" }, "Keyframe");
    kf.addEventListener("click", async () => show(await window.rtcam.call("video.keyframe")));
    box.appendChild(row("", kf));
  }

  function apply(name, value) {
    const c = document.getElementById("pin-" + name);
    if (c && c.type === "checkbox") c.checked = !!value;
    else if (c && c.type === "range") {
      c.value = value;
      const out = document.getElementById("pin-" + name + "-value");
      if (out) out.textContent = String(value);
    }
    const led = document.getElementById("led-" + name);
    if (led) led.className = "led" + (value ? " on" : "");
  }

  window.rtcamPanel = {
    onInfo(info) {
      pins = info.pins || [];
      build();
      for (const p of pins) apply(p.name, p.value);
    },
    async onOpen() {
      const r = await window.rtcam.call("video.status");
      if (r.ok) {
        status = r.result;
        built = "";
        build();
        for (const p of pins) apply(p.name, p.value);
      }
    },
    onEvent(ev) {
      if (ev.event === "gpio.changed") apply(ev.pin, ev.value);
    },
  };
})();
