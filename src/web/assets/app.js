// rtcam web viewer: MQTT signaling over WebSocket (MQTT.js), one WebRTC
// peer connection receiving H.264, a "control" DataChannel. Reconnects by
// itself, so a page left open for days keeps showing video: MQTT.js retries
// the broker; a failed or stalled link first gets an ICE restart (the same
// session over new candidates), and if that brings no video back, or the
// camera ended the session, a new session with a new offer, backing off from
// 1 s to 30 s while the camera stays away; the "Video link" row says which
// state it is in. A page whose client id the camera holds for an offer whose
// answer was lost takes a new client id (renewClientId).
"use strict";

const $ = (id) => document.getElementById(id);
// No new frame for this long after video ran: the session is restarted.
const STALL_MS = 4000;
const S = {
  cfg: null,
  client: null,
  pc: null,
  dc: null,
  cid: newClientId(),
  sent: new Set(),          // our own candidates, to ignore their echo on P/ice/{cid}
  pending: [],              // remote candidates that came before the answer
  remoteSet: false,
  restartTimer: null,
  connectTimer: null,
  lastBytes: null,
  stats: {},
  nextId: 1,
  calls: new Map(),         // control request id -> callback
  info: null,
  session: null,            // the live session's secret (from the answer)
  iceTried: false,          // an ICE restart was tried since video last grew
  iceRestarts: 0,           // ICE restarts sent, for the console and tests
  backoff: 1000,            // the next restart's delay, ms (reset once connected)
  lastFrames: 0,            // frames decoded at the last look, and when they last grew:
  lastFrameAt: 0,           // video that stops while "connected" is a dead camera
  link: "",                 // the video link's state, as the page shows it
  attempt: 0,               // bumped by teardown: a session start awaiting sees it was superseded
  // A camera with [auth] mode = "token" needs one: open the page as /?token=….
  token: new URLSearchParams(location.search).get("token"),
};

function newClientId() {
  return "web-" + Math.random().toString(16).slice(2, 10);
}

function topic(kind) {
  return `${S.cfg.topic_prefix}/${kind}/${S.cid}`;
}

// The video link's state: "connecting", "connected", "stalled",
// "restarting ICE", "reconnecting in N s", "camera offline".
function linkState(text) {
  S.link = text;
  $("s-link").textContent = text || "–";
}

function say(text) {
  $("message").textContent = text || "";
}

function badge(text, cls) {
  const b = $("status");
  b.textContent = text;
  b.className = "badge " + (cls || "");
}

function publish(t, obj) {
  if (S.client && S.client.connected) {
    S.client.publish(t, JSON.stringify(obj), { qos: 1 });
  }
}

// /config.json: the broker URL and the ICE servers (with TURN credentials
// that expire at ice_expires, Unix seconds); null when it cannot be had.
async function loadConfig() {
  try {
    const r = await fetch("/config.json", { cache: "no-store" });
    const body = await r.json();
    if (!r.ok) {
      say("cannot load /config.json: " + (body.message || r.status));
      return null;
    }
    return body;
  } catch (e) {
    say("cannot load /config.json: " + e);
    return null;
  }
}

async function main() {
  S.cfg = await loadConfig();
  if (!S.cfg) return;
  $("device").textContent = S.cfg.device || "rtcam";
  if (!S.cfg.mqtt_ws_url) {
    say("No MQTT WebSocket URL: set http.mqtt_ws_url in the agent's config.");
    return;
  }
  window.rtcamLatency.attach($("video"));
  connectMqtt();
  setInterval(updateStats, 1000);
}

function connectMqtt() {
  const P = S.cfg.topic_prefix;
  // Events of a client this page has replaced (renewClientId) are ignored.
  const client = mqtt.connect(S.cfg.mqtt_ws_url, {
    protocolVersion: S.cfg.mqtt_protocol || 4,
    clientId: S.cid,
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: 5000,
    // The embedded broker checks the token (it is the only one to see it).
    username: S.cfg.mqtt_username || (S.token ? S.cid : undefined),
    password: S.token || undefined,
  });
  S.client = client;
  client.on("connect", () => {
    if (client !== S.client) return;
    badge("broker connected", "");
    client.subscribe([
      `${P}/status`, `${P}/info`,
      topic("answer"), topic("ice"), topic("error"), topic("bye"),
    ], { qos: 1 });
    // The recorder's retained state and its events (recordings.js).
    client.subscribe([`${P}/record`, `${P}/record/event`], { qos: 0 });
  });
  client.on("offline", () => { if (client === S.client) badge("broker unreachable", "offline"); });
  client.on("error", (e) => {
    if (client !== S.client) return;
    // The camera's own broker wants a token as MQTT password when the
    // camera does ([auth] mode = "token"): retrying without one is useless.
    if (/Bad username or password|Not authorized/i.test(e.message)) {
      client.end(true);
      badge("broker refused", "offline");
      say(S.token
        ? "unauthorized: the broker refused this page's token"
        : "unauthorized: this camera requires a token: open the page as /?token=…");
      return;
    }
    say("MQTT: " + e.message);
  });
  client.on("message", (t, payload) => { if (client === S.client) onMessage(t, payload); });
}

// The camera holds this page's client id for a session whose answer never
// reached the page (the broker link dropped between offer and answer, or
// the attempt was torn down first). Without that session's secret the
// page cannot replace it, so it goes on under a new client id (a new
// broker connection, since the broker ties a client's topics to it) and
// the camera ends the orphan at its negotiation timeout.
function renewClientId() {
  const old = S.client;
  teardown();
  S.session = null;
  S.cid = newClientId();
  if (old) old.end(true);
  connectMqtt();
}

function onMessage(t, payload) {
  const P = S.cfg.topic_prefix;
  const text = payload.toString();
  if (t === `${P}/status`) {
    const online = text === "online";
    badge(online ? "camera online" : "camera offline", online ? "online" : "offline");
    if (!online) {
      linkState("camera offline");
    } else if (!S.pc || S.pc.connectionState !== "connected") {
      // Back (a restarted camera): a new session now, not after a backoff.
      clearTimeout(S.restartTimer);
      S.backoff = 1000;
      startSession();
    }
    return;
  }
  if (t === `${P}/record` || t === `${P}/record/event`) {
    if (!text) return;   // a cleared retained state
    let msg;
    try { msg = JSON.parse(text); } catch (e) { say(`${t}: not JSON: ${e}`); return; }
    if (window.rtcamRecordings) {
      if (t === `${P}/record`) window.rtcamRecordings.onState(msg);
      else window.rtcamRecordings.onEvent(msg);
    }
    return;
  }
  if (t === `${P}/info`) {
    try { renderInfo(JSON.parse(text)); } catch (e) { /* not JSON: ignore */ }
    return;
  }
  let msg;
  try { msg = JSON.parse(text); } catch (e) { return; }
  if (t === topic("answer")) {
    // A late or repeated answer (nothing is waiting for one) is ignored.
    if (!S.pc || msg.type !== "answer" || S.pc.signalingState !== "have-local-offer") return;
    S.session = msg.session || null;
    S.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp }).then(() => {
      S.remoteSet = true;
      for (const c of S.pending.splice(0)) S.pc.addIceCandidate(c).catch(() => {});
    }).catch((e) => { say("bad answer: " + e); scheduleRestart(3000); });
  } else if (t === topic("ice")) {
    if (!S.pc || !msg.candidate || S.sent.has(msg.candidate)) return;
    if (S.remoteSet) S.pc.addIceCandidate(msg).catch(() => {});
    else S.pending.push(msg);
  } else if (t === topic("error")) {
    say(`${msg.code}: ${msg.message}`);
    if (msg.code === "client_id_in_use") {
      renewClientId();
      return;
    }
    scheduleRestart(msg.code === "max_viewers" || msg.code === "busy" ? 10000 : 3000);
  } else if (t === topic("bye")) {
    say("the camera ended the session (" + (msg.reason || "bye") + ")");
    scheduleRestart(3000);
  }
}

function teardown() {
  S.attempt++;
  clearTimeout(S.connectTimer);
  if (S.dc) { try { S.dc.close(); } catch (e) { /* already closed */ } }
  if (S.pc) { try { S.pc.close(); } catch (e) { /* already closed */ } }
  S.pc = null;
  S.dc = null;
  S.remoteSet = false;
  S.pending = [];
  S.sent.clear();
  S.calls.clear();
  S.lastBytes = null;
  S.stats = {};
  S.lastFrames = 0;
  S.lastFrameAt = 0;
  S.iceTried = false;
}

// A new session after at least `ms`, and after the backoff, which doubles
// each time up to 30 s while the camera stays away.
function scheduleRestart(ms) {
  clearTimeout(S.restartTimer);
  teardown();
  const delay = Math.max(ms, S.backoff);
  S.backoff = Math.min(S.backoff * 2, 30000);
  linkState(`reconnecting in ${Math.round(delay / 1000)} s`);
  S.restartTimer = setTimeout(() => { if (S.client && S.client.connected) startSession(); else scheduleRestart(ms); }, delay);
}

async function startSession() {
  teardown();
  const attempt = S.attempt;
  say("");
  // Minted TURN credentials expire: a session started near or after their
  // expiry gets fresh ones.
  if (S.cfg.ice_expires && Date.now() / 1000 > S.cfg.ice_expires - 60) {
    const fresh = await loadConfig();
    // Torn down meanwhile (another start, an error): one offer per session.
    if (attempt !== S.attempt) return;
    if (fresh) {
      S.cfg.ice_servers = fresh.ice_servers;
      S.cfg.ice_expires = fresh.ice_expires;
    }
  }
  const pc = new RTCPeerConnection({ iceServers: S.cfg.ice_servers || [] });
  S.pc = pc;
  linkState("connecting");
  pc.addTransceiver("video", { direction: "recvonly" });
  // The camera's microphone, and this browser's for push-to-talk (no track
  // until the button is held; a camera without sound rejects the section).
  const audio = pc.addTransceiver("audio", { direction: "sendrecv" });
  if (window.rtcamAudio) window.rtcamAudio.onSession(audio);
  S.dc = pc.createDataChannel("control");
  S.dc.onmessage = onControlMessage;
  S.dc.onopen = () => { if (window.rtcamPanel) window.rtcamPanel.onOpen(); };
  pc.ontrack = (e) => {
    // Video and sound come in one stream, so the browser keeps them in sync.
    const v = $("video");
    const stream = e.streams[0] || new MediaStream([e.track]);
    if (v.srcObject !== stream) v.srcObject = stream;
    if (window.rtcamAudio) window.rtcamAudio.onTrack(e.track);
  };
  pc.onicecandidate = (e) => {
    const c = e.candidate ? e.candidate.toJSON() : { candidate: "" };
    if (c.candidate) S.sent.add(c.candidate);
    publish(topic("ice"), c);
  };
  pc.onconnectionstatechange = () => {
    const st = pc.connectionState;
    if (pc !== S.pc) return;
    if (st === "connected") { clearTimeout(S.connectTimer); say(""); S.backoff = 1000; linkState("connected"); }
    if (st === "failed") restartIce();
    if (st === "disconnected") {
      linkState("stalled");
      // (Unless the stall rule already restarted ICE: that restart gets its 10 s.)
      setTimeout(() => { if (pc === S.pc && pc.connectionState !== "connected" && !S.iceTried) restartIce(); }, 5000);
    }
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  if (pc !== S.pc) return;
  const msg = { type: "offer", sdp: offer.sdp };
  // The token itself never goes on the broker: a proof of it does.
  if (S.token) msg.auth = proof(S.token, offer.sdp);
  // Replacing our own live session (after a restart) needs its secret.
  if (S.session) msg.session = S.session;
  publish(topic("offer"), msg);
  window.rtcamLatency.offerSent();
  S.connectTimer = setTimeout(() => { if (pc === S.pc && pc.connectionState !== "connected") scheduleRestart(0); }, 20000);
}

// A stalled or dropped link's first remedy: an ICE restart of the same
// session (docs/protocol.md, "ICE restart"), which keeps its DataChannel and
// the camera's state; a second stall without video in between, or no
// connection 10 s after it, makes a new session.
async function restartIce() {
  const pc = S.pc;
  if (!pc || !S.session || S.iceTried || pc.signalingState !== "stable") {
    scheduleRestart(0);
    return;
  }
  S.iceTried = true;
  // The stall clock starts over for the restarted link.
  S.lastFrameAt = Date.now();
  linkState("restarting ICE");
  try {
    const offer = await pc.createOffer({ iceRestart: true });
    if (pc !== S.pc) return;
    await pc.setLocalDescription(offer);
    const msg = { type: "offer", sdp: offer.sdp, session: S.session, restart: true };
    if (S.token) msg.auth = proof(S.token, offer.sdp);
    publish(topic("offer"), msg);
    S.iceRestarts++;
  } catch (e) {
    scheduleRestart(0);
    return;
  }
  clearTimeout(S.connectTimer);
  S.connectTimer = setTimeout(() => { if (pc === S.pc && pc.connectionState !== "connected") scheduleRestart(0); }, 10000);
}

// The offer's proof of holding `token` (docs/protocol.md, "Tokens"):
// HMAC-SHA256 keyed by SHA-256(token) over the client id, the offer's DTLS
// fingerprint and the time, so a replayed offer is worthless.
function proof(token, sdp) {
  const line = sdp.split(/\r?\n/).find((l) => l.startsWith("a=fingerprint:")) || "";
  const fingerprint = line.slice("a=fingerprint:".length).trim().toLowerCase();
  const ts = Date.now();
  const message = `rtcam-offer-v1\n${S.cid}\n${fingerprint}\n${ts}`;
  const mac = sha256.hmac.array(sha256.array(token), message);
  return { token_id: tokenId(token), ts, proof: base64url(mac) };
}

// A token's public id: a signed token's claims, or s. and 16 hex digits of
// a static token's SHA-256.
function tokenId(token) {
  if (/^rtcam[12]\./.test(token) && token.lastIndexOf(".") > 0) {
    return token.slice(0, token.lastIndexOf("."));
  }
  return "s." + sha256(token).slice(0, 16);
}

function base64url(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function renderInfo(info) {
  S.info = info;
  $("device").textContent = info.device || "rtcam";
  const v = info.video || {};
  $("info").innerHTML = "";
  const rows = [
    ["Codec", `${v.codec || "?"} ${v.profile_level_id || ""}`],
    ["Configured", `${v.width}x${v.height} @ ${v.fps} fps`],
    ["Max viewers", info.max_viewers],
    ["Agent", `${info.agent} ${info.version}`],
  ];
  for (const [k, val] of rows) {
    const tr = document.createElement("tr");
    tr.innerHTML = "<th></th><td></td>";
    tr.firstChild.textContent = k;
    tr.lastChild.textContent = val;
    $("info").appendChild(tr);
  }
  if (window.rtcamPanel) window.rtcamPanel.onInfo(info);
  if (window.rtcamAudio) window.rtcamAudio.onInfo(info);
}

// Control requests: {"id","cmd",...} -> promise of the reply.
function call(cmd, params) {
  return new Promise((resolve) => {
    if (!S.dc || S.dc.readyState !== "open") {
      resolve({ ok: false, error: { code: "not_connected", message: "control channel not open" } });
      return;
    }
    const id = S.nextId++;
    S.calls.set(id, resolve);
    S.dc.send(JSON.stringify(Object.assign({ id, cmd }, params || {})));
  });
}

function onControlMessage(e) {
  let msg;
  try { msg = JSON.parse(e.data); } catch (err) { return; }
  if (msg.event) {
    if (msg.event === "bye") { say("the camera ended the session (" + msg.reason + ")"); scheduleRestart(3000); }
    if (window.rtcamPanel) window.rtcamPanel.onEvent(msg);
    if (window.rtcamAudio) window.rtcamAudio.onEvent(msg);
    return;
  }
  const cb = S.calls.get(msg.id);
  if (cb) { S.calls.delete(msg.id); cb(msg); }
  if (!msg.ok && msg.error) say(`${msg.error.code}: ${msg.error.message}`);
}

async function updateStats() {
  const pc = S.pc;
  if (!pc) return;
  const report = await pc.getStats();
  // A new session began while the stats were read: the old connection's
  // frames would make the new one look stalled.
  if (pc !== S.pc) return;
  let inbound = null;
  let pair = null;
  report.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") inbound = r;
    if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") pair = r;
  });
  if (!inbound) return;
  const now = inbound.timestamp;
  let kbps = null;
  if (S.lastBytes) {
    kbps = (8 * (inbound.bytesReceived - S.lastBytes.bytes)) / (now - S.lastBytes.t);
  }
  S.lastBytes = { bytes: inbound.bytesReceived, t: now };
  S.stats = {
    framesDecoded: inbound.framesDecoded || 0,
    width: inbound.frameWidth || 0,
    height: inbound.frameHeight || 0,
    fps: inbound.framesPerSecond || 0,
    kbps,
    packetsLost: inbound.packetsLost || 0,
    rttMs: pair && pair.currentRoundTripTime !== undefined ? pair.currentRoundTripTime * 1000 : null,
  };
  const s = S.stats;
  // A camera that died without a word (power cut, crash) leaves the
  // connection "connected" until ICE gives up, many seconds later; video
  // that stops growing for STALL_MS after it ran restarts ICE, then the session.
  if (s.framesDecoded > S.lastFrames) {
    S.lastFrames = s.framesDecoded;
    S.lastFrameAt = Date.now();
    S.iceTried = false;
    if (S.link !== "connected" && S.pc.connectionState === "connected") linkState("connected");
  } else if (S.lastFrameAt && Date.now() - S.lastFrameAt > STALL_MS) {
    say("no video for " + Math.round(STALL_MS / 1000) + " s");
    linkState("stalled");
    restartIce();
    return;
  }
  $("s-res").textContent = s.width ? `${s.width}x${s.height}` : "–";
  $("s-fps").textContent = s.fps ? s.fps.toFixed(0) : "–";
  $("s-bitrate").textContent = kbps === null ? "–" : `${kbps.toFixed(0)} kbit/s`;
  $("s-rtt").textContent = s.rttMs === null ? "–" : `${s.rttMs.toFixed(1)} ms`;
  $("s-lost").textContent = s.packetsLost;
  $("s-frames").textContent = s.framesDecoded;
  const lat = window.rtcamLatency.summary(2000);
  $("s-latency").textContent = lat.count ? `${lat.p50.toFixed(0)} ms` : "–";
}

window.addEventListener("pagehide", () => publish(topic("bye"), { session: S.session }));

// For tests and the console.
window.rtcam = {
  get pc() { return S.pc; },
  get stats() { return S.stats; },
  get link() { return S.link; },
  get clientId() { return S.cid; },
  get session() { return S.session; },
  get iceRestarts() { return S.iceRestarts; },
  // The page's token (from its URL), for the HTTP requests of recordings.js.
  get token() { return S.token; },
  latency: window.rtcamLatency,
  call,
};

main();
