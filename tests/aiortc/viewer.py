#!/usr/bin/env python3
"""An rtcam viewer built on aiortc, independent of rtcam's own WebRTC stack.

It signals over MQTT as docs/protocol.md says, offers recvonly H.264 video,
recvonly Opus audio and the `control` DataChannel, receives for --seconds,
and measures from the decoded media itself:

- video: the test pattern's block code (docs/blockcode.md) of every decoded
  frame, so each frame's latency is its arrival less its capture time ts_ms;
- audio: the test tone ([audio] input = "test": 1 kHz during the first
  100 ms of every whole second of the camera's wall clock), so each beep's
  latency is its onset's arrival less the whole second it marks.

A frame "arrives" when the last RTP packet carrying it arrives (its RTP
timestamp ties the decoded frame to its packets): aiortc's own jitter
buffer (80 ms of prefetch for audio, one frame for video) and decoder
threads would otherwise be measured as the camera's latency. A sample
arrives with its packet, less the samples after it in that packet (the
packet's last sample arrived with it), as src/audio/tone.rs counts.

Prints one JSON object on stdout; exits 0 when media arrived, 1 otherwise
(2 for bad arguments), and always by itself: --timeout bounds the whole run, and a watchdog thread
ends the process if even the clean-up hangs.

Needs the packages of requirements.txt (tests/aiortc/setup makes a venv).
"""

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import socket
import statistics
import sys
import threading
import time

EXIT_OK, EXIT_NO_MEDIA = 0, 1  # and 2 for bad arguments (argparse)

try:
    import numpy as np
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.subscribeoptions import SubscribeOptions
    from aiortc import (
        RTCConfiguration,
        RTCPeerConnection,
        RTCRtpReceiver,
        RTCSessionDescription,
    )
    from aiortc.mediastreams import MediaStreamError
    from aiortc.sdp import candidate_from_sdp
    from peer_setup import h264_codecs, patch_host_addresses
except ImportError as e:  # a missing venv must say so, in the same JSON shape
    why = f"import failed: {e} (run tests/aiortc/setup)"
    print(json.dumps({"errors": [why], "error": why}))
    sys.exit(EXIT_NO_MEDIA)

log = logging.getLogger("viewer")


def now_ms() -> float:
    return time.time() * 1000.0


def median(xs):
    return round(statistics.median(xs), 1) if xs else None


# ---------------------------------------------------------------- block code

def crc16_ccitt_false(data: bytes) -> int:
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def block_size(width: int, height: int) -> int:
    return min(max(min(width, height) // 30 // 8 * 8, 8), 32)


COLS, ROWS, MIN_CONTRAST = 12, 9, 60


def decode_block_code(y):
    """(seq, ts_ms) from a luma plane (2-D uint8 array, rows × stride), or None."""
    height, width = y.shape
    b = block_size(width, height)
    if COLS * b > width or ROWS * b > height:
        return None
    q = b // 4
    n = b - 2 * q
    # Mean luma of each block's central half: edges blur under H.264.
    area = y[: ROWS * b, : COLS * b].astype(np.uint32)
    cells = area.reshape(ROWS, b, COLS, b)[:, q : q + n, :, q : q + n]
    means = cells.sum(axis=(1, 3)) // (n * n)
    sync = means[0]
    white_min, black_max = int(sync[0::2].min()), int(sync[1::2].max())
    if white_min < black_max + MIN_CONTRAST:
        return None
    threshold = (white_min + black_max) // 2
    bits = (means[1:].reshape(-1) > threshold).astype(np.uint8)
    payload = np.packbits(bits).tobytes()  # MSB first, as drawn
    if crc16_ccitt_false(payload[:10]) != int.from_bytes(payload[10:12], "big"):
        return None
    return int.from_bytes(payload[0:4], "big"), int.from_bytes(payload[4:10], "big")


# ------------------------------------------------- RTP arrival, per frame

class Arrivals:
    """Wall time (ms) at which each received frame's last RTP packet arrived,
    by the pts aiortc gives the decoded frame.

    aiortc calls RTCRtpReceiver._handle_rtp_packet on the event loop as each
    datagram is read, before its jitter buffer and decoder; the frame's pts
    is its RTP timestamp less the stream's first (TimestampMapper.map, called
    as the jitter buffer lets the frame go, when all its packets are in)."""

    LIMIT = 20000

    def __init__(self):
        self.last_packet = {"audio": {}, "video": {}}  # RTP timestamp -> ms
        self.by_pts = {"audio": collections.OrderedDict(), "video": collections.OrderedDict()}
        # RTCP sender reports: (sender's wall clock ms, RTP timestamp) each.
        self.sender_reports = {"audio": [], "video": []}
        # The RTP timestamp aiortc's pts count from.
        self.origin = {}

    def install(self):
        from aiortc.rtcrtpreceiver import TimestampMapper

        from aiortc.rtp import RtcpSrPacket

        handle_rtp, map_ts = RTCRtpReceiver._handle_rtp_packet, TimestampMapper.map
        handle_rtcp = RTCRtpReceiver._handle_rtcp_packet
        arrivals = self

        async def rtcp(receiver, packet, *args, **kwargs):
            kind = getattr(receiver.track, "kind", None)
            if isinstance(packet, RtcpSrPacket) and kind in arrivals.sender_reports:
                info = packet.sender_info
                arrivals.sender_reports[kind].append((ntp_to_unix_ms(info.ntp_timestamp), info.rtp_timestamp))
            return await handle_rtcp(receiver, packet, *args, **kwargs)

        async def handle(receiver, packet, *args, **kwargs):
            kind = getattr(receiver.track, "kind", None)
            if kind in arrivals.last_packet:
                arrivals.last_packet[kind][packet.timestamp] = now_ms()
                # Its mapper learns whose frames it maps (a private name, pinned aiortc).
                mapper = getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None)
                if mapper is not None:
                    mapper.viewer_kind = kind
            return await handle_rtp(receiver, packet, *args, **kwargs)

        def mapped(mapper, timestamp):
            pts = map_ts(mapper, timestamp)
            kind = getattr(mapper, "viewer_kind", None)
            if kind in arrivals.last_packet:
                arrivals.origin.setdefault(kind, timestamp - pts)
                at = arrivals.last_packet[kind].pop(timestamp, None)
                # Older frames' stamps are of no more use: lost or late.
                if len(arrivals.last_packet[kind]) > 1000:
                    arrivals.last_packet[kind].clear()
                d = arrivals.by_pts[kind]
                d[pts] = at
                if len(d) > arrivals.LIMIT:
                    d.popitem(last=False)
            return pts

        RTCRtpReceiver._handle_rtp_packet = handle
        RTCRtpReceiver._handle_rtcp_packet = rtcp
        TimestampMapper.map = mapped

    def of(self, kind, pts):
        return None if pts is None else self.by_pts[kind].get(int(pts))

    def sender_time(self, kind, pts, rate):
        """The sender's wall clock (ms) for a pts, as its nearest RTCP sender
        report maps RTP time (how a player lines up sound and picture)."""
        if kind not in self.origin or not self.sender_reports[kind]:
            return None
        ts = (int(pts) + self.origin[kind]) & 0xFFFFFFFF

        def after(sr_ts):
            # Signed distance on the 32-bit RTP clock.
            return ((ts - sr_ts + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)

        wall, sr_ts = min(self.sender_reports[kind], key=lambda r: abs(after(r[1])))
        return wall + after(sr_ts) * 1000.0 / rate


def ntp_to_unix_ms(ntp):
    """A 64-bit NTP timestamp (RFC 3550) in ms since 1970."""
    return ((ntp >> 32) - 2208988800) * 1000.0 + (ntp & 0xFFFFFFFF) * 1000.0 / (1 << 32)


# ------------------------------------------------------------- tone analysis

TONE_PEAK = 0.25 * 32767  # -12 dBFS, what the test microphone sends
LOUD = TONE_PEAK / 4  # a sample this loud is part of a beep (as tone.rs)
QUIET_BEFORE_MS = 300  # an onset follows this much received silence
END_QUIET_MS = 5  # a beep ends after this long without a loud sample
MIN_BEEP_MS = 50  # shorter: a click, not a beep


def mono_s16(frame):
    """The first channel of a decoded audio frame as float samples (int16 scale)."""
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        a = a[0]
    else:
        a = a.reshape(-1, channels)[:, 0]
    if a.dtype.kind == "f":
        return a.astype(np.float64) * 32767.0
    return a.astype(np.float64) * (32767.0 / np.iinfo(a.dtype).max)


def dominant_hz(segments, rate):
    """Peak of the summed Hann-windowed spectra, parabolically interpolated."""
    n_fft = 1 << 16
    power = None
    for seg in segments:
        if len(seg) < 64:
            continue
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n_fft)) ** 2
        power = spec if power is None else power + spec
    if power is None:
        return None
    power[0] = 0  # DC
    k = int(np.argmax(power))
    if 0 < k < len(power) - 1:
        a, b, c = np.log(power[k - 1 : k + 2] + 1e-30)
        den = a - 2 * b + c
        k = k + (0.5 * (a - c) / den if den != 0 else 0.0)
    return k * rate / n_fft


def analyse_audio(chunks, rate, errors):
    """Beeps in the received audio.

    chunks: (RTP timestamp since the first, mono samples, arrival ms of its packet).
    Returns the report's audio fields."""
    out = {"tone_hz": None, "tone_onsets": [], "audio_latencies_ms": [],
           "tone_ms_median": None, "audio_latency_ms_median": None, "onsets": []}
    if not chunks:
        return out
    chunks = sorted(chunks, key=lambda c: c[0])
    first = chunks[0][0]
    total = chunks[-1][0] + len(chunks[-1][1]) - first
    if total > rate * 3600:
        errors.append("audio: RTP timestamps jump by more than an hour; not analysed")
        return out
    # One timeline on the RTP clock; lost packets stay marked as not received.
    x = np.zeros(total)
    have = np.zeros(total, dtype=bool)
    # Per sample: the arrival of its packet's last sample and its distance to it.
    arrived_end = np.full(total, np.nan)
    for ts, samples, arrival in chunks:
        s = ts - first
        e = s + len(samples)
        x[s:e] = samples
        have[s:e] = True
        if arrival is not None:
            arrived_end[s:e] = arrival - (e - 1 - np.arange(s, e)) * 1000.0 / rate
    loud = np.abs(x) >= LOUD
    quiet_need = rate * QUIET_BEFORE_MS // 1000
    end_gap = rate * END_QUIET_MS // 1000
    # Samples received and quiet: an onset needs QUIET_BEFORE_MS of them before it.
    quiet_ok = have & ~loud
    loud_idx = np.flatnonzero(loud)
    segments, onsets, lengths = [], [], []
    i = 0
    while i < len(loud_idx):
        p = int(loud_idx[i])
        # The beep runs until END_QUIET_MS pass without a loud sample.
        j = i
        while j + 1 < len(loud_idx) and loud_idx[j + 1] - loud_idx[j] <= end_gap:
            j += 1
        end = int(loud_idx[j]) + 1
        i = j + 1
        beep_ms = (end - p) * 1000.0 / rate
        if beep_ms < MIN_BEEP_MS:
            continue
        # The middle of the beep, away from Opus's attack and release.
        trim = rate * 5 // 1000
        if end - p > 4 * trim:
            segments.append(x[p + trim : end - trim])
        lengths.append(beep_ms)
        if p < quiet_need or not quiet_ok[p - quiet_need : p].all():
            continue  # joined mid-beep, or a loss hides where it began
        at = arrived_end[p]
        if math.isnan(at):
            continue
        second = math.floor(at / 1000.0) * 1000
        onsets.append((at, second, first + p))
    out["tone_hz"] = None if not segments else round(dominant_hz(segments, rate), 1)
    out["tone_ms_median"] = median(lengths)
    out["tone_onsets"] = [round(a, 1) for a, _, _ in onsets]
    out["audio_latencies_ms"] = [round(a - s, 1) for a, s, _ in onsets]
    out["audio_latency_ms_median"] = median([a - s for a, s, _ in onsets])
    out["onsets"] = [(s, pts) for _, s, pts in onsets]
    return out


# ---------------------------------------------------------------- signaling

def proof(token, client_id, sdp):
    """The offer's `auth` (docs/protocol.md §1.1): proves the token, never sends it."""
    fp = next((l.split(":", 1)[1] for l in sdp.splitlines() if l.startswith("a=fingerprint:")), "")
    fp = fp.strip().lower()
    ts = int(time.time() * 1000)
    msg = f"rtcam-offer-v1\n{client_id}\n{fp}\n{ts}".encode()
    mac = hmac.new(hashlib.sha256(token.encode()).digest(), msg, hashlib.sha256).digest()
    if token.startswith(("rtcam1.", "rtcam2.")) and token.rfind(".") > 0:
        token_id = token[: token.rfind(".")]
    else:
        token_id = "s." + hashlib.sha256(token.encode()).hexdigest()[:16]
    return {"token_id": token_id, "ts": ts,
            "proof": base64.urlsafe_b64encode(mac).rstrip(b"=").decode()}


class Signaling:
    """paho-mqtt in its own thread, handing messages to the asyncio loop."""

    def __init__(self, args, loop):
        self.args, self.loop = args, loop
        self.prefix = args.prefix
        self.cid = args.client_id
        self.queue = asyncio.Queue()
        self.connected = loop.create_future()
        self.subscribed = loop.create_future()
        self.errors = []
        v5 = args.mqtt_protocol == "5"
        self.v5 = v5
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cid,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            **({} if v5 else {"clean_session": True}),
        )
        if args.token:
            # The embedded broker checks the token itself (the password).
            self.client.username_pw_set(self.cid, args.token)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail

    def topic(self, name):
        return f"{self.prefix}/{name}/{self.cid}"

    def _resolve(self, fut, value):
        self.loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(value))

    def _on_connect(self, client, userdata, flags, reason, properties):
        self._resolve(self.connected, None if not reason.is_failure else str(reason))
        if reason.is_failure:
            return
        own = [self.topic(t) for t in ("answer", "ice", "error", "bye")]
        shared = [f"{self.prefix}/status", f"{self.prefix}/info"]
        if self.v5:
            # No-Local: our own trickled candidates do not come back.
            subs = [(t, SubscribeOptions(qos=1, noLocal=True)) for t in own + shared]
        else:
            subs = [(t, 1) for t in own + shared]
        client.subscribe(subs)

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        bad = [str(r) for r in reasons if r.is_failure]
        self._resolve(self.subscribed, bad)

    def _on_message(self, client, userdata, msg):
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (msg.topic, bytes(msg.payload)))

    def _on_publish(self, client, userdata, mid, reason, properties):
        if reason.is_failure:  # MQTT 5 says "not authorized" here
            self.errors.append(f"publish refused by the broker: {reason}")

    def _on_connect_fail(self, client, userdata):
        # paho retries by itself; a refused TCP connect will not get better.
        self._resolve(self.connected, "cannot reach the broker")

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            self._resolve(self.connected, f"disconnected: {reason}")

    async def connect(self, timeout):
        host, port = self.args.broker
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()
        try:
            err = await asyncio.wait_for(self.connected, timeout)
        except asyncio.TimeoutError:
            err = f"no CONNACK within {timeout:g} s"
        if err:
            raise RuntimeError(f"MQTT connect to {host}:{port} failed: {err}")
        try:
            bad = await asyncio.wait_for(self.subscribed, timeout)
        except asyncio.TimeoutError:
            bad = [f"no SUBACK within {timeout:g} s"]
        if bad:
            raise RuntimeError(f"MQTT subscriptions refused: {bad}")

    def publish(self, name, obj):
        return self.client.publish(self.topic(name), json.dumps(obj), qos=1)

    async def publish_and_wait(self, name, obj, timeout=2.0):
        info = self.publish(name, obj)
        await asyncio.get_running_loop().run_in_executor(None, info.wait_for_publish, timeout)

    def close(self):
        try:
            self.client.disconnect()
            self.client.loop_stop()
        except Exception:  # already gone: nothing to clean
            pass


# ---------------------------------------------------------------- the run

class Recorder:
    """Consumes the received tracks and keeps what the report needs."""

    def __init__(self, arrivals):
        self.arrivals = arrivals
        self.video = []  # (arrival ms, decoded ms, ts_ms, seq) per frame with a code
        self.video_pts = []  # (pts, ts_ms) per frame with a code
        self.video_frames = 0
        self.video_size = None
        self.audio_frames = 0
        self.audio_rate = None
        self.audio_channels = None
        self.audio_identical_channels = True
        self.audio_chunks = []  # (RTP ts since the first, mono samples, arrival ms)
        self.audio_no_arrival = 0
        self.video_no_arrival = 0
        self.first_media = None
        self.tasks = []

    def add(self, track):
        if track.kind == "video":
            self.tasks.append(asyncio.ensure_future(self._video(track)))
        elif track.kind == "audio":
            self.tasks.append(asyncio.ensure_future(self._audio(track)))

    async def _video(self, track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            decoded = now_ms()
            self.first_media = self.first_media or decoded
            self.video_frames += 1
            self.video_size = (frame.width, frame.height)
            if frame.format.name not in ("yuv420p", "yuvj420p", "nv12", "yuv422p", "yuv444p"):
                frame = frame.reformat(format="yuv420p")
            plane = frame.planes[0]
            buf = np.frombuffer(plane, np.uint8)
            y = buf[: buf.size // plane.line_size * plane.line_size].reshape(-1, plane.line_size)
            y = y[: frame.height, : frame.width]
            code = decode_block_code(y)
            if code is None:
                continue
            arrival = self.arrivals.of("video", frame.pts)
            if arrival is None:
                self.video_no_arrival += 1
                arrival = decoded
            self.video.append((arrival, decoded, code[1], code[0]))
            if frame.pts is not None:
                self.video_pts.append((int(frame.pts), code[1]))

    async def _audio(self, track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            decoded = now_ms()
            self.first_media = self.first_media or decoded
            self.audio_frames += 1
            self.audio_rate = frame.sample_rate
            self.audio_channels = len(frame.layout.channels)
            a = frame.to_ndarray()
            if self.audio_channels > 1 and not frame.format.is_planar:
                ch = a.reshape(-1, self.audio_channels)
                if self.audio_identical_channels and not (ch == ch[:, :1]).all():
                    self.audio_identical_channels = False
            arrival = self.arrivals.of("audio", frame.pts)
            if arrival is None:
                self.audio_no_arrival += 1
                arrival = decoded
            if frame.pts is None:
                continue
            # pts: the RTP timestamp since the first, unwrapped (aiortc's).
            self.audio_chunks.append((int(frame.pts), mono_s16(frame), arrival))

    async def stop(self, errors):
        for t in self.tasks:
            t.cancel()
        for r in await asyncio.gather(*self.tasks, return_exceptions=True):
            if isinstance(r, Exception) and not isinstance(r, asyncio.CancelledError):
                errors.append(f"receiving media failed: {type(r).__name__}: {r}")
        self.tasks = []


def sections(sdp):
    """The session part and the m-sections of an SDP, as lists of lines."""
    parts = [[]]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            parts.append([])
        if line:
            parts[-1].append(line)
    return parts


def accept_rejected(answer, offer):
    """aiortc refuses any answer with a rejected (port 0) m-section: it wants
    ICE, DTLS and rtcp-mux attributes in every one. Turn each into an
    inactive section bundled with the first accepted one (our codecs, its
    transport), so the rest of the session goes on without that track.
    Returns (sdp, kinds rejected)."""
    ans, off = sections(answer), sections(offer)
    live = next((m for m in ans[1:] if m[0].split()[1] != "0"), None)
    if live is None:
        return answer, []
    carried = [l for l in live if l.startswith(("a=ice-ufrag:", "a=ice-pwd:", "a=setup:", "a=fingerprint:"))]
    rejected, mids = [], []
    for i, m in enumerate(ans[1:], start=1):
        words = m[0].split()
        if words[1] != "0" or i >= len(off):
            continue
        kind = words[0][2:]
        rejected.append(kind)
        ours = off[i]
        pts = ours[0].split()[3:]
        mid = next((l for l in m if l.startswith("a=mid:")), None) or next(l for l in ours if l.startswith("a=mid:"))
        mids.append(mid.split(":", 1)[1])
        codec_lines = [l for l in ours if l.startswith(("a=rtpmap:", "a=fmtp:"))]
        ans[i] = [" ".join([words[0], "9"] + words[2:3] + pts), "c=IN IP4 0.0.0.0", mid,
                  "a=inactive", "a=rtcp-mux"] + codec_lines + carried
    for j, l in enumerate(ans[0]):
        if l.startswith("a=group:BUNDLE") and mids:
            ans[0][j] = l + "".join(f" {m}" for m in mids if f" {m}" not in l)
    return "\r\n".join(l for part in ans for l in part) + "\r\n", rejected


def make_offer_pc(args):
    from aiortc.rtcconfiguration import RTCBundlePolicy
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    video = pc.addTransceiver("video", direction="recvonly")
    rtx = [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.mimeType.lower() == "video/rtx"]
    video.setCodecPreferences(h264_codecs() + rtx)
    if not args.no_audio:
        audio = pc.addTransceiver("audio", direction="recvonly")
        opus = [c for c in RTCRtpReceiver.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        audio.setCodecPreferences(opus)
    return pc


async def run(args, report, rec):
    loop = asyncio.get_running_loop()
    errors = report["errors"]
    deadline = loop.time() + args.timeout
    left = lambda: max(0.1, deadline - loop.time())  # noqa: E731

    patch_host_addresses(args.ice_address)
    sig = Signaling(args, loop)
    pc = None
    session = None
    try:
        await sig.connect(min(10.0, left()))
        # The camera's retained status: offers are heard only while it is online.
        online = False
        info = None
        status_until = loop.time() + min(10.0, left())
        while not online and loop.time() < status_until:
            try:
                topic, payload = await asyncio.wait_for(sig.queue.get(), status_until - loop.time())
            except asyncio.TimeoutError:
                break
            if topic == f"{sig.prefix}/status":
                online = payload == b"online"
            elif topic == f"{sig.prefix}/info":
                info = payload
        if not online:
            errors.append("the camera's P/status is not 'online' (offering anyway)")
        if info:
            try:
                report["camera_info"] = json.loads(info)
            except ValueError:
                errors.append("P/info is not JSON")

        pc = make_offer_pc(args)
        connected = loop.create_future()
        ended = loop.create_future()  # the camera ended the session, or ICE failed

        def end(why):
            if not ended.done():
                ended.set_result(why)

        @pc.on("track")
        def on_track(track):
            report.setdefault("tracks", []).append(track.kind)
            rec.add(track)

        @pc.on("connectionstatechange")
        def on_state():
            st = pc.connectionState
            report["connection_state"] = st
            if st == "connected" and not connected.done():
                connected.set_result(loop.time())
            if st in ("failed", "closed"):
                end(f"peer connection {st}")

        dc = pc.createDataChannel("control")
        report["control_pong"] = False

        @dc.on("open")
        def on_open():
            dc.send(json.dumps({"id": 1, "cmd": "ping"}))

        @dc.on("message")
        def on_dc(msg):
            try:
                m = json.loads(msg)
            except (TypeError, ValueError):
                errors.append(f"control: not JSON: {msg!r:.80}")
                return
            if m.get("id") == 1:
                report["control_pong"] = bool(m.get("ok") and m.get("result", {}).get("pong"))
            elif m.get("event") == "bye":
                end(f"camera said bye on the DataChannel: {m.get('reason')}")

        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # gathers every candidate: none trickled
        sdp = pc.localDescription.sdp
        msg = {"type": "offer", "sdp": sdp}
        if args.token:
            msg["auth"] = proof(args.token, sig.cid, sdp)
        report["offer_sent_ms"] = round(now_ms())
        sig.publish("offer", msg)

        remote_set = False
        pending = []

        async def add_candidate(m):
            c = m.get("candidate")
            if not c:  # "" or null: the camera's end of candidates
                await pc.addIceCandidate(None)
                return
            cand = candidate_from_sdp(c.split(":", 1)[1] if c.startswith("candidate:") else c)
            cand.sdpMid = m.get("sdpMid")
            cand.sdpMLineIndex = m.get("sdpMLineIndex")
            if cand.sdpMid is None and cand.sdpMLineIndex is None:
                cand.sdpMLineIndex = 0
            await pc.addIceCandidate(cand)

        async def signaling_loop():
            nonlocal remote_set, session
            while True:
                topic, payload = await sig.queue.get()
                if topic in (f"{sig.prefix}/status", f"{sig.prefix}/info"):
                    if topic.endswith("/status") and payload == b"offline":
                        end("the camera went offline")
                    continue
                try:
                    m = json.loads(payload)
                except ValueError:
                    errors.append(f"{topic}: not JSON")
                    continue
                kind = topic[len(sig.prefix) + 1 :].split("/")[0]
                if kind == "answer":
                    if remote_set or m.get("type") != "answer":
                        continue  # a repeated answer: nothing waits for it
                    session = m.get("session")
                    if not session:
                        errors.append("the answer carries no session secret")
                    report["answer_ms"] = round(now_ms())
                    report["answer_media"] = [l for l in m["sdp"].splitlines() if l.startswith(("m=", "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv"))]
                    log.debug("answer:\n%s", m["sdp"])
                    answer, rejected = accept_rejected(m["sdp"], pc.localDescription.sdp)
                    if rejected:
                        report["rejected_media"] = rejected
                        errors.append(f"the camera rejected the {'/'.join(rejected)} m-line (port 0): no such track")
                    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
                    remote_set = True
                    for p in pending:
                        await add_candidate(p)
                    pending.clear()
                elif kind == "ice":
                    report["camera_candidates"] = report.get("camera_candidates", 0) + (1 if m.get("candidate") else 0)
                    if remote_set:
                        try:
                            await add_candidate(m)
                        except Exception as e:  # one bad candidate is not the end
                            errors.append(f"candidate {m.get('candidate')!r}: {e}")
                    else:
                        pending.append(m)
                elif kind == "error":
                    errors.append(f"camera error {m.get('code')}: {m.get('message')}")
                    if not connected.done():
                        end(f"offer refused: {m.get('code')}")
                elif kind == "bye":
                    end(f"camera said bye: {m.get('reason')}")

        sig_task = asyncio.ensure_future(signaling_loop())
        try:
            done, _ = await asyncio.wait({connected, ended, sig_task}, timeout=min(args.connect_timeout, left()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if sig_task in done:
                sig_task.result()  # raises what broke it
            if not connected.done():
                why = ended.result() if ended.done() else f"not connected within {args.connect_timeout:g} s"
                raise RuntimeError(why)
            report["connected_after_offer_ms"] = round(now_ms() - report["offer_sent_ms"])
            # Media for --seconds from the connection, unless the camera ends it.
            done, _ = await asyncio.wait({ended, sig_task}, timeout=min(args.seconds, left()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if sig_task in done:
                sig_task.result()
            if ended.done():
                errors.append(ended.result())
        finally:
            sig_task.cancel()
        report["received_ms"] = round(now_ms() - report["offer_sent_ms"])
    except asyncio.TimeoutError:
        errors.append("timed out")
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        await rec.stop(errors)  # before the close, which ends the tracks
        if session:
            try:
                await asyncio.wait_for(sig.publish_and_wait("bye", {"session": session}), 3)
            except Exception as e:
                errors.append(f"bye not sent: {e}")
        if pc is not None:
            try:
                await asyncio.wait_for(pc.close(), 5)
            except Exception as e:
                errors.append(f"closing the peer connection: {e}")
        sig.close()
        errors.extend(sig.errors)


def summarise(rec, report):
    errors = report["errors"]
    v = rec.video
    report["video_frames"] = rec.video_frames
    if rec.first_media and "offer_sent_ms" in report:
        report["first_media_after_offer_ms"] = round(rec.first_media - report["offer_sent_ms"])
    report["video_decoded_with_code"] = len(v)
    report["video_size"] = list(rec.video_size) if rec.video_size else None
    lat = [a - ts for a, _, ts, _ in v]
    report["video_latency_ms_median"] = median(lat)
    report["video_latency_ms_max"] = round(max(lat), 1) if lat else None
    report["video_latency_decoded_ms_median"] = median([d - ts for _, d, ts, _ in v])
    seqs = [s for *_, s in v]
    report["video_seq_missing"] = (max(seqs) - min(seqs) + 1 - len(set(seqs))) if seqs else None
    if rec.video_frames and not v:
        errors.append("video decoded but no frame carried a block code (not the test pattern?)")

    report["audio_frames"] = rec.audio_frames
    report["audio_sample_rate"] = rec.audio_rate
    # aiortc decodes every Opus stream to stereo: a mono one has two equal channels.
    report["audio_channels"] = rec.audio_channels
    report["audio_channels_identical"] = rec.audio_identical_channels if rec.audio_frames else None
    if rec.video_no_arrival:
        errors.append(f"{rec.video_no_arrival} video frames without an RTP arrival time (decode time used)")
    if rec.audio_no_arrival:
        errors.append(f"{rec.audio_no_arrival} audio frames without an RTP arrival time (decode time used)")
    report.update(analyse_audio(rec.audio_chunks, rec.audio_rate or 48000, errors))
    if rec.audio_frames and not report["tone_onsets"]:
        errors.append("audio arrived but no tone onset was found")
    a, vm = report["audio_latency_ms_median"], report["video_latency_ms_median"]
    report["av_offset_ms"] = round(a - vm, 1) if a is not None and vm is not None else None
    # Lip sync as a player does it: the sender reports map each stream's RTP
    # time to the camera's clock; that less the capture time (the block
    # code's, the beep's whole second) should be the same for both.
    arr = rec.arrivals
    onsets = report.pop("onsets")
    report["sender_reports"] = {k: len(v) for k, v in arr.sender_reports.items()}
    sv = [t - ts for pts, ts in rec.video_pts if (t := arr.sender_time("video", pts, 90000)) is not None]
    sa = [t - sec for sec, pts in onsets
          if (t := arr.sender_time("audio", pts, rec.audio_rate or 48000)) is not None]
    report["sr_video_minus_capture_ms"] = median(sv)
    report["sr_audio_minus_capture_ms"] = median(sa)
    report["sr_av_sync_ms"] = (round(median(sa) - median(sv), 1) if sa and sv else None)


def parse_broker(text):
    text = text.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT (or mqtt://HOST:PORT)")
    return host.strip("[]"), int(port)


def main():
    ap = argparse.ArgumentParser(description="aiortc viewer of an rtcam camera: measures video and audio latency")
    ap.add_argument("--broker", type=parse_broker, default=("127.0.0.1", 1883),
                    help="MQTT broker HOST:PORT (the embedded broker's v5 or 3.1.1 listener)")
    ap.add_argument("--mqtt-protocol", choices=("5", "3.1.1"), default="5")
    ap.add_argument("--prefix", help="topic prefix P (mqtt.topic_prefix); default rtcam/<device>")
    ap.add_argument("--device", default=socket.gethostname(), help="device for the default prefix")
    ap.add_argument("--client-id", default="aiortc-" + secrets.token_hex(4))
    ap.add_argument("--token", default=os.environ.get("RTCAM_VIEWER_TOKEN"),
                    help="viewer token (also RTCAM_VIEWER_TOKEN): MQTT password and offer proof")
    ap.add_argument("--seconds", type=float, default=6.0, help="how long to receive once connected")
    ap.add_argument("--connect-timeout", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, help="hard bound on the whole run (default: seconds + connect-timeout + 15)")
    ap.add_argument("--ice-address", action="append", help="host candidate address (default 127.0.0.1)")
    ap.add_argument("--no-audio", action="store_true", help="offer no audio m-line")
    ap.add_argument("--frames", action="store_true", help="also list every video frame in the report")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    args.prefix = (args.prefix or f"rtcam/{args.device}").rstrip("/")
    args.ice_address = args.ice_address or ["127.0.0.1"]
    if not (1 <= len(args.client_id) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in args.client_id)):
        ap.error("--client-id: 1-64 of A-Z a-z 0-9 _ -")
    if args.seconds <= 0 or args.seconds > 3600:
        ap.error("--seconds: 0-3600")
    args.timeout = args.timeout or args.seconds + args.connect_timeout + 15
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    # Every key of the report is there even when the run fails early.
    report = {"video_frames": 0, "video_decoded_with_code": 0, "video_latency_ms_median": None,
              "audio_frames": 0, "audio_sample_rate": None, "audio_channels": None,
              "tone_hz": None, "tone_onsets": [], "audio_latency_ms_median": None,
              "av_offset_ms": None, "errors": [], "client_id": args.client_id, "prefix": args.prefix}
    out_lock = threading.Lock()

    def emit(code):
        with out_lock:
            sys.stdout.write(json.dumps(report) + "\n")
            sys.stdout.flush()
            os._exit(code)  # no lingering thread (paho, aiortc decoders) may keep us

    def watchdog():
        # The asyncio bound failed to end the run (a hung clean-up): end it here.
        time.sleep(args.timeout + 10)
        report["errors"].append(f"watchdog: still running {args.timeout + 10:g} s after the start")
        report["error"] = "hard timeout"
        emit(EXIT_NO_MEDIA)

    threading.Thread(target=watchdog, daemon=True).start()

    arrivals = Arrivals()
    arrivals.install()
    rec = Recorder(arrivals)

    async def bounded():
        try:
            await asyncio.wait_for(run(args, report, rec), args.timeout + 5)
        except asyncio.TimeoutError:
            report["errors"].append(f"timed out after {args.timeout:g} s")
        await rec.stop(report["errors"])

    asyncio.run(bounded())
    try:
        summarise(rec, report)
        if args.frames:
            report["frames"] = [{"arrival_ms": round(a, 1), "decoded_ms": round(d, 1), "ts_ms": ts, "seq": s}
                                for a, d, ts, s in rec.video]
    except Exception as e:  # a broken analysis still reports what arrived
        report["errors"].append(f"analysis failed: {type(e).__name__}: {e}")
    got_media = report.get("video_frames", 0) > 0 or report.get("audio_frames", 0) > 0
    if not got_media:
        report["error"] = report["errors"][0] if report["errors"] else "no media received"
    emit(EXIT_OK if got_media else EXIT_NO_MEDIA)


if __name__ == "__main__":
    main()
