#!/usr/bin/python3
"""rtcam against a GStreamer webrtcbin sender (issue 15): the same frames,
the same OpenH264 settings, the same viewers, and the senders' CPU and RSS.

Roles (tests/bench/gst-compare.sh runs `compare`, inside a private network
namespace holding only `lo`):

  sender   a GStreamer "camera": frames -> openh264enc -> rtph264pay -> tee,
           one webrtcbin per viewer, answering offers with rtcam's own MQTT
           signaling (docs/protocol.md), so one viewer program serves both;
           --only source|encode: frames (and encoder) into a fakesink.
  viewers  N webrtcbin viewers in one process (offer recvonly H.264 like a
           browser, depayload, count access units; no decoding, so they
           take little CPU from the sender on a 2-core machine).
  compare  interleaves rtcam and GStreamer with 1 and 8 viewers, the
           source-only and encoder-only runs, and prints medians.

Only loopback host candidates: no STUN server is ever set.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("Nice", "0.1")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC, Nice  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

W, H, FPS, KBPS = 1280, 720, 30, 2000
RTP_CAPS = ("application/x-rtp,media=video,encoding-name=H264,payload=96,clock-rate=90000,"
            "packetization-mode=(string)1,profile-level-id=(string)42e01f")

# rtcam's OpenH264 set-up (src/media/encode/openh264.rs, defaults of
# rtcam.example.toml) in openh264enc's terms; docs/BENCHMARKS.md lists what
# matches and what cannot.
ENCODER = (f"openh264enc usage-type=camera rate-control=bitrate bitrate={KBPS * 1000} "
           "enable-frame-skip=false qp-min=16 qp-max=51 complexity=low "
           f"gop-size={2 * FPS} multi-thread=2 slice-mode=n-slices num-slices=2 "
           "deblocking=on scene-change-detection=true adaptive-quantization=true "
           "background-detection=true enable-denoise=false "
           "! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au")

# rtcam's test pattern, decoded from a 40 Mbit/s recording of it (so both
# encoders get the same pictures), looped and paced to 30 fps by the clock.
def source(frames_dir):
    return (f"multifilesrc location={frames_dir}/f%03d.yuv index=1 stop-index=150 loop=true "
            f"! rawvideoparse format=i420 width={W} height={H} framerate={FPS}/1 ! clocksync")


def cpu_seconds(pid):
    """utime + stime of a whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return kib / 1024


def mqtt_client(broker, client_id):
    host, port = broker.split(":")
    c = mqtt.Client(client_id=client_id)
    c.connect(host, int(port))
    c.loop_start()  # paho's own thread; messages are handed to GLib's loop
    return c


def on_main(fn, *args):
    GLib.idle_add(lambda: fn(*args) and False)


KEEP = []  # see new_webrtcbin


def new_webrtcbin(pipe):
    wb = Gst.ElementFactory.make("webrtcbin")
    wb.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
    # libnice skips loopback interfaces, and the namespace has nothing else:
    # give its agent 127.0.0.1, UDP only, as rtcam's `interfaces = ["lo"]`.
    # The wrappers stay referenced: PyGObject unrefs webrtcbin's ICE object
    # once too often when they are collected (a crash otherwise).
    ice = wb.get_property("ice-agent")
    agent = ice.get_property("agent")
    KEEP.extend((ice, agent))
    lo = Nice.Address.new()
    lo.set_from_string("127.0.0.1")
    agent.add_local_address(lo)
    agent.set_property("ice-tcp", False)
    agent.set_property("upnp", False)  # no UPnP port mapping (SSDP) either
    pipe.add(wb)
    return wb


def send_candidates(wb, client, topic, sent):
    def on_candidate(_wb, mline, cand):
        sent.add(cand)  # MQTT 3.1.1 brokers echo our own candidates back
        client.publish(topic, json.dumps(
            {"candidate": cand, "sdpMLineIndex": mline, "sdpMid": "video0" if mline == 0 else str(mline)}))
    wb.connect("on-ice-candidate", on_candidate)


def add_candidate(wb, payload, sent):
    c = payload.get("candidate")
    if c and c not in sent:
        wb.emit("add-ice-candidate", payload.get("sdpMLineIndex") or 0, c)


def sdp(kind, text):
    _, msg = GstSdp.SDPMessage.new_from_text(text)
    return GstWebRTC.WebRTCSessionDescription.new(kind, msg)


# ---------------------------------------------------------------- sender
def run_sender(a):
    Gst.init(None)
    if a.only:  # the same process with only the source, or source and encoder
        enc = f" ! {ENCODER}" if a.only == "encode" else ""
        pipe = Gst.parse_launch(f"{source(a.frames)}{enc} ! fakesink sync=true")
        print("ready", flush=True)
    else:
        pipe = Gst.parse_launch(
            f"{source(a.frames)} ! {ENCODER} ! rtph264pay pt=96 config-interval=-1 "
            f"aggregate-mode=zero-latency ! {RTP_CAPS} ! tee name=t allow-not-linked=true")
        tee = pipe.get_by_name("t")
        client = mqtt_client(a.broker, "gst-sender")
        peers = {}  # client id -> (webrtcbin, candidates we sent)

        def offer(cid, payload):
            wb = new_webrtcbin(pipe)
            # A leaky queue per viewer: a slow viewer must not stall the tee.
            q = Gst.ElementFactory.make("queue")
            q.set_property("leaky", 2)
            q.set_property("max-size-time", 200 * Gst.MSECOND)
            pipe.add(q)
            # A sink pad is a transceiver; given the stream's caps as codec
            # preferences, the offer's video m-line is matched to it (else it
            # learns them only from the first buffer, maybe after the offer).
            pad = wb.request_pad_simple("sink_%u")
            pad.get_property("transceiver").set_property("codec-preferences", Gst.Caps.from_string(RTP_CAPS))
            q.get_static_pad("src").link(pad)
            sent = set()
            peers[cid] = (wb, sent)
            send_candidates(wb, client, f"{a.prefix}/ice/{cid}", sent)
            q.sync_state_with_parent()
            wb.sync_state_with_parent()

            def answered(promise, _):
                reply = promise.get_reply()  # kept: PyGObject would free a temporary first
                ans = reply.get_value("answer")
                # Video flows into the branch only once webrtcbin has linked its
                # sink pad (it does so applying the answer): a buffer arriving
                # earlier gets not-linked and stops the queue for good.
                wb.emit("set-local-description", ans,
                        Gst.Promise.new_with_change_func(lambda *_: on_main(tee.link, q), None))
                client.publish(f"{a.prefix}/answer/{cid}", json.dumps(
                    {"type": "answer", "sdp": ans.sdp.as_text(), "session": cid}), qos=1)

            def remote_set(_promise, _):
                wb.emit("create-answer", None, Gst.Promise.new_with_change_func(answered, None))
            wb.emit("set-remote-description", sdp(GstWebRTC.WebRTCSDPType.OFFER, payload["sdp"]),
                    Gst.Promise.new_with_change_func(remote_set, None))

        def on_message(_c, _u, m):
            kind, cid = m.topic[len(a.prefix) + 1:].split("/", 1)
            payload = json.loads(m.payload)
            if kind == "offer" and cid not in peers:
                on_main(offer, cid, payload)
            elif kind == "ice" and cid in peers:
                on_main(add_candidate, peers[cid][0], payload, peers[cid][1])
        client.on_message = on_message
        # Ready once the broker has the subscription: earlier offers would be lost.
        client.on_subscribe = lambda *_: print("ready", flush=True)
        client.subscribe([(f"{a.prefix}/offer/+", 1), (f"{a.prefix}/ice/+", 1)])
    pipe.set_state(Gst.State.PLAYING)
    loop = GLib.MainLoop()
    GLib.timeout_add_seconds(a.seconds, loop.quit)  # always ends by itself
    loop.run()
    pipe.set_state(Gst.State.NULL)


# --------------------------------------------------------------- viewers
class Viewer:
    def __init__(self, pipe, a, n):
        self.cid, self.frames, self.bytes = f"gstv-{n}-{os.getpid()}", 0, 0
        self.a, self.pipe, self.sent = a, pipe, set()
        self.client = mqtt_client(a.broker, self.cid)
        self.wb = wb = new_webrtcbin(pipe)
        wb.emit("add-transceiver", GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY,
                Gst.Caps.from_string(RTP_CAPS))
        wb.connect("pad-added", self.on_pad)
        wb.connect("on-negotiation-needed", lambda _wb: on_main(self.offer))
        send_candidates(wb, self.client, f"{a.prefix}/ice/{self.cid}", self.sent)
        self.client.on_message = self.on_message
        self.client.subscribe([(f"{a.prefix}/{t}/{self.cid}", 1) for t in ("answer", "ice", "error", "bye")])
        wb.sync_state_with_parent()

    def offer(self):
        def created(promise, _):
            reply = promise.get_reply()  # kept: PyGObject would free a temporary first
            off = reply.get_value("offer")
            self.wb.emit("set-local-description", off, None)
            self.client.publish(f"{self.a.prefix}/offer/{self.cid}",
                                json.dumps({"type": "offer", "sdp": off.sdp.as_text()}), qos=1)
        self.wb.emit("create-offer", None, Gst.Promise.new_with_change_func(created, None))

    def on_message(self, _c, _u, m):
        kind, p = m.topic.split("/")[-2], json.loads(m.payload or b"null")
        if kind == "answer":
            on_main(self.answered, p["sdp"])
        elif kind == "ice" and p:
            on_main(add_candidate, self.wb, p, self.sent)
        else:
            print(f"{self.cid}: {kind} {p}", file=sys.stderr, flush=True)

    def answered(self, text):
        self.wb.emit("set-remote-description", sdp(GstWebRTC.WebRTCSDPType.ANSWER, text), None)
        # Receiver reports every second, as browsers send them (rtpbin's
        # default is 5 s, which rtcam's congestion control takes for a
        # silent viewer and halves the bitrate).
        session = self.wb.get_by_name("rtpbin").emit("get-internal-session", 0)
        session.set_property("rtcp-min-interval", Gst.SECOND)

    def on_pad(self, _wb, pad):
        # Depayload to access units and count them; no decoding.
        sink = Gst.parse_bin_from_description(
            "rtph264depay ! video/x-h264,stream-format=byte-stream,alignment=au ! fakesink name=s", True)
        self.pipe.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        sink.get_by_name("s").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, self.count)

    def count(self, _pad, info):
        self.frames += 1
        self.bytes += info.get_buffer().get_size()
        return Gst.PadProbeReturn.OK


def run_viewers(a):
    """Prints `start` once every viewer has had video for --settle seconds,
    `end FRAMES... KBPS...` --window seconds later, and exits."""
    Gst.init(None)
    pipe = Gst.Pipeline.new()
    pipe.set_state(Gst.State.PLAYING)
    viewers = [Viewer(pipe, a, n) for n in range(a.n)]
    loop, t0 = GLib.MainLoop(), time.monotonic()
    state = {"start": None}

    def tick():
        now = time.monotonic()
        if state["start"] is None:
            if all(v.frames > 0 for v in viewers):
                state["start"] = now + a.settle
                state["marks"] = None
            elif now - t0 > a.timeout:
                print("fail " + " ".join(str(v.frames) for v in viewers), flush=True)
                loop.quit()
        elif state["marks"] is None and now >= state["start"]:
            state["marks"] = [(v.frames, v.bytes) for v in viewers]
            state["t"] = now
            print("start", flush=True)
        elif state["marks"] is not None and now - state["t"] >= a.window:
            frames = [v.frames - f for v, (f, _) in zip(viewers, state["marks"])]
            kbps = [(v.bytes - b) * 8 / 1000 / (now - state["t"]) for v, (_, b) in zip(viewers, state["marks"])]
            print("end " + json.dumps({"frames": frames, "kbps": kbps, "seconds": now - state["t"]}), flush=True)
            loop.quit()
        return True
    GLib.timeout_add(10, tick)
    loop.run()
    pipe.set_state(Gst.State.NULL)


# --------------------------------------------------------------- compare
def here():
    return os.path.abspath(__file__)


def wait_line(proc, want, timeout):
    """The next stdout line of `proc` starting with `want` (bounded wait)."""
    box = []

    def read():
        for line in proc.stdout:
            if line.startswith((want, "fail")):
                return box.append(line)
    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    line = box[0] if box else ""
    if not line.startswith(want):
        raise RuntimeError(f"expected {want!r}, got {line.strip()!r}")
    return line


def measure(sender_pid, a, broker, prefix, n):
    """Runs n viewers against a sender and returns its CPU (% of a core) and
    RSS over the window, with what the viewers received."""
    viewers = subprocess.Popen(
        [sys.executable, here(), "viewers", "--broker", broker, "--prefix", prefix, "--n", str(n),
         "--settle", str(a.settle), "--window", str(a.window)],
        stdout=subprocess.PIPE, text=True)
    try:
        wait_line(viewers, "start", 40)
        c0, t0 = cpu_seconds(sender_pid), time.monotonic()
        end = wait_line(viewers, "end", a.window + 10)
        c1, t1 = cpu_seconds(sender_pid), time.monotonic()
        rx = json.loads(end[4:])
        return {"cpu": (c1 - c0) / (t1 - t0) * 100, "rss": rss_mb(sender_pid),
                "min_fps": min(rx["frames"]) / rx["seconds"], "kbps": statistics.median(rx["kbps"])}
    finally:
        viewers.kill()
        viewers.wait()


def start(cmd, ready, stdout=subprocess.PIPE):
    log = tempfile.TemporaryFile("w+")  # shown if it does not start
    p = subprocess.Popen(cmd, stdout=stdout, stderr=log, text=True)
    deadline = time.monotonic() + 20
    while not ready(p):
        if time.monotonic() > deadline or p.poll() is not None:
            p.kill()
            log.seek(0)
            raise RuntimeError(f"{' '.join(cmd)} did not start: {log.read()[-2000:]}")
        time.sleep(0.1)
    return p


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def agent_ready(http):
    def ready(_p):
        try:
            with urllib.request.urlopen(f"http://{http}/stats.json", timeout=1) as r:
                return json.load(r).get("mqtt_connected") is True
        except OSError:
            return False
    return ready


def run_compare(a):
    tmp = a.tmp
    # rtcam: as users run it, with its embedded broker; the settings of
    # `rtcam bench viewers` (encoder threads 0 = one per core, here 2).
    with open(f"{tmp}/agent.toml", "w") as f:
        f.write(f"[video]\nsource = \"test\"\nwidth = {W}\nheight = {H}\nfps = {FPS}\nbitrate_kbps = {KBPS}\n"
                '[webrtc]\ninterfaces = ["lo"]\nloopback = true\nmdns = "disabled"\nmax_viewers = 16\n'
                '[mqtt]\ntopic_prefix = "rtcam-bench"\nclient_id = "rtcam-bench-agent"\n'
                '[http]\nlisten = "127.0.0.1:18080"\n'
                '[broker]\nlisten = "127.0.0.1:11883"\nv5_listen = "127.0.0.1:11884"\nws_listen = "127.0.0.1:19001"\n')
    # GStreamer's signaling goes through Mosquitto (a separate process).
    with open(f"{tmp}/mosquitto.conf", "w") as f:
        f.write("listener 11885 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen(["mosquitto", "-c", f"{tmp}/mosquitto.conf"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = {}
    gst_cmd = [sys.executable, here(), "sender", "--broker", "127.0.0.1:11885", "--prefix", "gst",
               "--frames", a.frames, "--seconds", str(int(a.window) + 60)]
    try:
        time.sleep(0.5)
        for r in range(a.rounds):
            for n in (1, 8):
                p = start([a.rtcam, "--config", f"{tmp}/agent.toml", "run"], agent_ready("127.0.0.1:18080"),
                          subprocess.DEVNULL)
                try:
                    rows.setdefault(("rtcam", n), []).append(
                        measure(p.pid, a, "127.0.0.1:11883", "rtcam-bench", n))
                finally:
                    stop(p)
                p = start(gst_cmd, lambda p: p.stdout.readline().startswith("ready"))
                try:
                    rows.setdefault(("gst", n), []).append(measure(p.pid, a, "127.0.0.1:11885", "gst", n))
                finally:
                    stop(p)
                print(f"round {r + 1}, {n} viewer(s): rtcam {rows[('rtcam', n)][-1]}, "
                      f"gst {rows[('gst', n)][-1]}", file=sys.stderr, flush=True)
            # Source costs. GStreamer: the same process with only frames ->
            # fakesink; and frames -> encoder -> fakesink, to tell the
            # encoder's share from the WebRTC part's.
            for only in ("source", "encode"):
                p = start(gst_cmd + ["--only", only], lambda p: p.stdout.readline().startswith("ready"))
                try:
                    time.sleep(a.settle)
                    c0, t0 = cpu_seconds(p.pid), time.monotonic()
                    time.sleep(a.window)
                    rows.setdefault(("gst", only), []).append(
                        {"cpu": (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0) * 100, "rss": rss_mb(p.pid)})
                finally:
                    stop(p)
            # rtcam: `rtcam bench ratio` runs test pattern -> encoder -> hub and
            # the encoder alone on pre-rendered frames, both in real time; the
            # difference per frame is what drawing the pattern (and the hub) costs.
            # It prints "encoder alone X ms CPU/frame, pipeline (1 subscriber) Y ms CPU/frame".
            out = subprocess.run([a.rtcam, "bench", "ratio", "--threads", "0", "--seconds", str(a.window),
                                  "--rounds", "1"], capture_output=True, text=True, timeout=4 * a.window + 60).stdout
            ms = [float(x) for x in re.findall(r"([0-9.]+) ms CPU/frame", out)]
            rows.setdefault(("rtcam", "source"), []).append({"cpu": (ms[1] - ms[0]) * FPS / 10, "raw": out.strip()})
            rows.setdefault(("rtcam", "encoder"), []).append({"cpu": ms[0] * FPS / 10})
    finally:
        broker.terminate()
        broker.wait()
    report(rows)


def report(rows):
    med = lambda k, f: statistics.median(x[f] for x in rows[k])  # noqa: E731
    span = lambda k, f: f"{min(x[f] for x in rows[k]):.1f}–{max(x[f] for x in rows[k]):.1f}"  # noqa: E731
    print(json.dumps({f"{s}/{n}": v for (s, n), v in rows.items()}, indent=1))
    src = {s: med((s, "source"), "cpu") for s in ("rtcam", "gst")}
    print(f"source cost, % of a core (median, range): rtcam {src['rtcam']:.2f} ({span(('rtcam', 'source'), 'cpu')}), "
          f"gst {src['gst']:.2f} ({span(('gst', 'source'), 'cpu')})")
    for n in (1, 8):
        r, g = med(("rtcam", n), "cpu") - src["rtcam"], med(("gst", n), "cpu") - src["gst"]
        print(f"{n} viewer(s): rtcam {med(('rtcam', n), 'cpu'):.1f} % ({span(('rtcam', n), 'cpu')}) - source = {r:.1f} %; "
              f"gst {med(('gst', n), 'cpu'):.1f} % ({span(('gst', n), 'cpu')}) - source = {g:.1f} %; "
              f"ratio rtcam/gst {r / g:.2f}; RSS rtcam {med(('rtcam', n), 'rss'):.1f} MB, gst {med(('gst', n), 'rss'):.1f} MB; "
              f"slowest viewer fps rtcam {min(x['min_fps'] for x in rows[('rtcam', n)]):.1f}, "
              f"gst {min(x['min_fps'] for x in rows[('gst', n)]):.1f}; "
              f"kbit/s rtcam {med(('rtcam', n), 'kbps'):.0f}, gst {med(('gst', n), 'kbps'):.0f}")
    # The encoder's share: rtcam's encoder alone in real time (bench ratio);
    # GStreamer's source+encoder process minus its source-only process.
    enc = {"rtcam": med(("rtcam", "encoder"), "cpu"), "gst": med(("gst", "encode"), "cpu") - src["gst"]}
    print(f"encoder alone, % of a core: rtcam {enc['rtcam']:.1f}, gst {enc['gst']:.1f} (ratio {enc['rtcam'] / enc['gst']:.2f})")
    for n in (1, 8):
        r, g = (med((x, n), "cpu") - src[x] - enc[x] for x in ("rtcam", "gst"))
        print(f"{n} viewer(s), beyond source and encoder (RTP, SRTP, ICE, RTCP, signaling): rtcam {r:.1f} %, gst {g:.1f} %")
    for s in ("rtcam", "gst"):
        print(f"{s}: per extra viewer (8 vs 1) {(med((s, 8), 'cpu') - med((s, 1), 'cpu')) / 7:.2f} % of a core, "
              f"{(med((s, 8), 'rss') - med((s, 1), 'rss')) / 7:.2f} MB RSS")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("sender")
    s.add_argument("--broker", default="127.0.0.1:11885")
    s.add_argument("--prefix", default="gst")
    s.add_argument("--frames", required=True, help="directory of f001.yuv … f150.yuv (I420)")
    s.add_argument("--seconds", type=int, default=90, help="exit after this long")
    s.add_argument("--only", choices=["source", "encode"], help="no WebRTC: frames (and encoder) into a fakesink")
    v = sub.add_parser("viewers")
    v.add_argument("--broker", required=True)
    v.add_argument("--prefix", required=True)
    v.add_argument("--n", type=int, default=1)
    v.add_argument("--settle", type=float, default=3)
    v.add_argument("--window", type=float, default=20)
    v.add_argument("--timeout", type=float, default=30, help="give up if a viewer has no video by then")
    c = sub.add_parser("compare")
    c.add_argument("--rtcam", required=True)
    c.add_argument("--frames", required=True)
    c.add_argument("--tmp", required=True)
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--settle", type=float, default=3)
    c.add_argument("--window", type=int, default=20)
    a = p.parse_args()
    {"sender": run_sender, "viewers": run_viewers, "compare": run_compare}[a.role](a)


if __name__ == "__main__":
    main()
