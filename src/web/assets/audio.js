// rtcam sound: the camera's microphone plays through the video element
// (muted until the viewer turns the sound on: browsers only autoplay muted
// media), a level meter reads it, and push-to-talk sends this browser's
// microphone to the camera's speaker while the button is held, after
// taking the talkback floor with the audio.talk command (one talker at a
// time). Loaded after app.js, which calls the hooks below.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const A = {
    info: null,          // P/info's audio, or null
    transceiver: null,   // the session's audio transceiver (sendrecv)
    mic: null,           // this browser's microphone, once allowed
    talking: false,
    pressed: false,
    ctx: null,
    analyser: null,
    level: 0,            // the camera's sound, RMS 0-1
    lastError: "",
  };

  function say(text) {
    A.lastError = text || "";
    $("audio-message").textContent = text || "";
  }

  function showControls() {
    const a = A.info;
    $("audio-bar").hidden = !a;
    if (!a) return;
    $("sound").hidden = !a.microphone;
    $("audio-level").hidden = !a.microphone;
    $("talk").hidden = !a.talkback;
    if (a.talkback && !window.isSecureContext) {
      // Browsers hand out the microphone only to secure pages.
      $("talk").disabled = true;
      say("Push-to-talk needs a secure page: open it over https:// (the camera's [http] tls) or as http://localhost.");
    }
  }

  function updateSoundButton() {
    const muted = $("video").muted;
    $("sound").textContent = muted ? "Sound off" : "Sound on";
    $("sound").setAttribute("aria-pressed", String(!muted));
  }

  // The camera's track: measured by a WebAudio analyser (it plays through
  // the video element, which Chromium needs for remote audio to flow).
  function onTrack(track) {
    if (track.kind !== "audio") return;
    try {
      if (!A.ctx) A.ctx = new AudioContext();
      const src = A.ctx.createMediaStreamSource(new MediaStream([track]));
      A.analyser = A.ctx.createAnalyser();
      A.analyser.fftSize = 2048;
      src.connect(A.analyser);
    } catch (e) {
      say("no level meter: " + e);
    }
  }

  function meter() {
    if (A.analyser) {
      const buf = new Float32Array(A.analyser.fftSize);
      A.analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (const v of buf) sum += v * v;
      A.level = Math.sqrt(sum / buf.length);
      // Shown on a log-like scale so quiet speech still moves it.
      $("audio-level").value = Math.min(1, Math.sqrt(A.level * 4));
    }
  }

  async function press() {
    if (A.pressed || !A.transceiver) return;
    A.pressed = true;
    say("");
    const r = await window.rtcam.call("audio.talk", { on: true });
    if (!r.ok) {
      A.pressed = false;
      say(`${r.error.code}: ${r.error.message}`);
      return;
    }
    try {
      if (!A.mic) A.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
      if (!A.pressed) { release(); return; }   // let go while asking
      await A.transceiver.sender.replaceTrack(A.mic.getAudioTracks()[0]);
      A.talking = true;
      $("talk").classList.add("on");
      $("talk").textContent = "Talking…";
    } catch (e) {
      say("microphone: " + e.message);
      release();
    }
  }

  async function release() {
    if (!A.pressed && !A.talking) return;
    A.pressed = false;
    A.talking = false;
    $("talk").classList.remove("on");
    $("talk").textContent = "Hold to talk";
    if (A.transceiver) {
      try { await A.transceiver.sender.replaceTrack(null); } catch (e) { /* session gone */ }
    }
    await window.rtcam.call("audio.talk", { on: false });
  }

  function init() {
    $("sound").addEventListener("click", () => {
      $("video").muted = !$("video").muted;
      if (A.ctx && A.ctx.state === "suspended") A.ctx.resume();
      updateSoundButton();
    });
    const t = $("talk");
    t.addEventListener("pointerdown", (e) => { e.preventDefault(); press(); });
    for (const ev of ["pointerup", "pointerleave", "pointercancel"]) t.addEventListener(ev, release);
    // Space bar too, for keyboards.
    t.addEventListener("keydown", (e) => { if (e.key === " " && !e.repeat) { e.preventDefault(); press(); } });
    t.addEventListener("keyup", (e) => { if (e.key === " ") release(); });
    updateSoundButton();
    setInterval(meter, 100);
  }

  window.rtcamAudio = {
    onInfo(info) { A.info = info.audio || null; showControls(); },
    // A new session: its transceiver; the old one's talk ended with it.
    onSession(transceiver) { A.transceiver = transceiver; A.talking = false; A.pressed = false; $("talk").classList.remove("on"); },
    onTrack,
    onEvent(msg) {
      if (msg.event === "audio.floor" && !A.talking) {
        $("talk").title = msg.busy ? "another viewer is talking" : "";
      }
    },
    press,
    release,
    get talking() { return A.talking; },
    get level() { return A.level; },
    get lastError() { return A.lastError; },
  };
  init();
})();
