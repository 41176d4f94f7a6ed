"""Home Assistant's Generic Camera against rtcam's RTSP server, end to end.

Run by tests/ha/try, inside a network namespace that has only loopback,
with target/ha-venv's Python (it needs aiohttp, which Home Assistant
brings). It starts rtcam (test pattern, RTSP on 127.0.0.1) and Home
Assistant, then drives Home Assistant only through its public HTTP and
WebSocket API, as its frontend does:

1. onboarding: the owner user (/api/onboarding/users), its auth code
   exchanged for a token (/auth/token);
2. the `generic` config flow (/api/config/config_entries/flow) with
   rtcam's RTSP URL as the stream source and no still image URL: HA opens
   the stream with PyAV and waits for its first HLS part before it accepts
   it; the preview still of the confirm step; then the entry is created;
3. `camera/stream` (HLS) over the WebSocket API for the new entity, the
   playlists, init.mp4 and whole segments, which ffprobe (or PyAV) decodes
   and counts; and a still from /api/camera_proxy/<entity>.

Prints one JSON line (also written to RUN_DIR/report.json) and exits 0
only if at least one video frame of HA's HLS stream was decoded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HA_PORT = 8123
HA = f"http://127.0.0.1:{HA_PORT}"
CLIENT_ID = f"{HA}/"
RTSP_PORT = 8554
RTCAM_HTTP_PORT = 8080

report: dict = {
    "ok": False,
    "ha_version": None,
    "rtcam_version": None,
    "rtsp_url": None,
    "flow": None,
    "entity_id": None,
    "codec": None,
    "profile": None,
    "width": None,
    "height": None,
    "frames": 0,
    "errors": [],
}


def log(msg: str) -> None:
    print(f"ha try: {msg}", file=sys.stderr, flush=True)


def err(msg: str) -> None:
    log(f"error: {msg}")
    report["errors"].append(msg)


class Step(Exception):
    """A step failed; its message goes into the report."""


class Procs:
    """Child processes, each in its own process group, ended at exit."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], logfile: Path, env=None) -> subprocess.Popen:
        out = open(logfile, "wb")
        p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out.close()
        self.procs.append((name, p))
        log(f"started {name} (pid {p.pid}), log {logfile}")
        return p

    def stop_all(self) -> None:
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} ignored SIGTERM for 20 s: killing it")
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def wait_for(what: str, timeout: float, check, proc: subprocess.Popen | None = None, logfile=None):
    """Polls `check` (async, returns a truthy value when ready) until timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = ""
            if logfile is not None:
                tail = Path(logfile).read_text(errors="replace")[-1500:]
            raise Step(f"{what}: the process exited with {proc.returncode}; its log ends: {tail}")
        try:
            v = await check()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - keep polling, remember why
            last = e
        await asyncio.sleep(0.5)
    raise Step(f"{what}: not ready within {timeout:.0f} s (last: {last!r})")


def write_rtcam_config(run: Path, args) -> Path:
    rtsp_auth = ""
    if args.rtsp_user:
        rtsp_auth = f'username = "{args.rtsp_user}"\npassword = "{args.rtsp_password}"\n'
    text = f"""# Written by tests/ha/drive.py
[video]
source = "test"
width = {args.width}
height = {args.height}
fps = {args.fps}
bitrate_kbps = 1000
keyframe_interval_ms = 2000

[device]
name = "ha-try"

[mqtt]
topic_prefix = "rtcam/ha-try"
client_id = "rtcam-ha-try"

[broker]
listen = "127.0.0.1:1883"
v5_listen = "127.0.0.1:1884"
ws_listen = "127.0.0.1:9001"

[webrtc]
interfaces = ["lo"]
loopback = true
mdns = "disabled"

[http]
listen = "127.0.0.1:{RTCAM_HTTP_PORT}"

[rtsp]
listen = "127.0.0.1:{RTSP_PORT}"
path = "cam"
{rtsp_auth}"""
    path = run / "rtcam.toml"
    path.write_text(text)
    return path


HA_CONFIG = f"""# Written by tests/ha/drive.py: the least Home Assistant needs for the
# Generic Camera, its HLS stream and the frontend's API (no default_config:
# it loads integrations whose requirements are not installed).
homeassistant:
  name: rtcam-try
  time_zone: UTC
  unit_system: metric
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: {HA_PORT}
logger:
  default: warning
  logs:
    homeassistant.components.stream: info
    homeassistant.components.generic: debug
api:
config:
onboarding:
camera:
stream:
websocket_api:
"""


async def http_json(session: aiohttp.ClientSession, method: str, path: str, timeout: float, **kw):
    async with session.request(method, HA + path, timeout=aiohttp.ClientTimeout(total=timeout), **kw) as r:
        body = await r.text()
        if r.status >= 400:
            raise Step(f"{method} {path}: HTTP {r.status}: {body[:500]}")
        return json.loads(body) if body else None


async def onboard(session: aiohttp.ClientSession) -> str:
    async def ready():
        async with session.get(HA + "/api/onboarding", timeout=aiohttp.ClientTimeout(total=5)) as r:
            if r.status != 200:
                raise Step(f"GET /api/onboarding: HTTP {r.status}")
            return await r.json()

    steps = await wait_for("Home Assistant's onboarding API", 240, ready, *HA_PROC)
    log(f"HA is up; onboarding steps: {steps}")
    user = await http_json(
        session, "POST", "/api/onboarding/users", 30,
        json={
            "client_id": CLIENT_ID,
            "name": "rtcam test",
            "username": "rtcam",
            "password": "rtcam-test-password",
            "language": "en",
        },
    )
    token = await http_json(
        session, "POST", "/auth/token", 30,
        data={"grant_type": "authorization_code", "code": user["auth_code"], "client_id": CLIENT_ID},
    )
    return token["access_token"]


async def config_flow(session: aiohttp.ClientSession, auth: dict, args, rtsp_url: str) -> str:
    flow = await http_json(
        session, "POST", "/api/config/config_entries/flow", 60, headers=auth,
        json={"handler": "generic", "show_advanced_options": False},
    )
    if flow.get("type") != "form" or flow.get("step_id") != "user":
        raise Step(f"generic flow did not start with the user form: {flow}")
    fields = [f["name"] for f in flow.get("data_schema", [])]
    log(f"generic flow {flow['flow_id']}: form fields {fields}")
    user_input = {
        "stream_source": rtsp_url,
        "rtsp_transport": args.transport,
        "authentication": "basic",
        "framerate": 2,
        "verify_ssl": False,
    }
    if args.still:
        # rtcam's own still (README: GET /snapshot.jpg); HA fetches it in the flow.
        user_input["still_image_url"] = f"http://127.0.0.1:{RTCAM_HTTP_PORT}/snapshot.jpg"
        report["still_image_url"] = user_input["still_image_url"]
    if args.rtsp_user:
        user_input["username"] = args.rtsp_user
        user_input["password"] = args.rtsp_password
    t0 = time.monotonic()
    step = await http_json(
        session, "POST", f"/api/config/config_entries/flow/{flow['flow_id']}", 90,
        headers=auth, json=user_input,
    )
    report["flow_stream_check_s"] = round(time.monotonic() - t0, 1)
    if step.get("type") == "form" and step.get("errors"):
        report["flow"] = {"type": "form", "step_id": step.get("step_id"), "errors": step["errors"]}
        raise Step(f"HA refused the stream: {step['errors']}")
    if step.get("step_id") != "user_confirm_still":
        raise Step(f"unexpected flow step: {step}")
    # The confirm step shows a preview still, as the frontend does.
    preview = (step.get("description_placeholders") or {}).get("preview_url")
    if preview:
        try:
            async with session.get(HA + preview, timeout=aiohttp.ClientTimeout(total=30)) as r:
                data = await r.read()
                report["flow_preview"] = {
                    "status": r.status,
                    "content_type": r.headers.get("Content-Type"),
                    "bytes": len(data),
                    "size": image_size(data) if r.status == 200 else None,
                }
        except Exception as e:  # noqa: BLE001
            report["flow_preview"] = {"error": repr(e)}
        if not args.still and report["flow_preview"].get("status") == 500:
            # HA's own bug, whatever the camera: the preview entity of a
            # stream-only camera has no entity id (NoEntitySpecifiedError in
            # its log); the frontend shows a broken image, confirming works.
            # home-assistant/core#122563 (2024.8) reworked this preview.
            report["flow_preview"]["note"] = "HA 2024.3 cannot preview a camera without a still image URL"
    done = await http_json(
        session, "POST", f"/api/config/config_entries/flow/{flow['flow_id']}", 60,
        headers=auth, json={"confirmed_ok": True},
    )
    if done.get("type") != "create_entry":
        raise Step(f"the flow did not create an entry: {done}")
    result = done.get("result") or {}
    entry_id = result.get("entry_id") if isinstance(result, dict) else result
    report["flow"] = {"type": "create_entry", "title": done.get("title"), "entry_id": entry_id}
    log(f"config entry {entry_id} created ({done.get('title')})")
    return entry_id


class WS:
    def __init__(self, session: aiohttp.ClientSession, token: str) -> None:
        self.session, self.token, self.n = session, token, 0

    async def __aenter__(self):
        self.ws = await self.session.ws_connect(HA + "/api/websocket", timeout=30)
        msg = await self.ws.receive_json(timeout=30)
        if msg.get("type") != "auth_required":
            raise Step(f"websocket: {msg}")
        await self.ws.send_json({"type": "auth", "access_token": self.token})
        msg = await self.ws.receive_json(timeout=30)
        if msg.get("type") != "auth_ok":
            raise Step(f"websocket auth: {msg}")
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def call(self, timeout: float, **msg):
        self.n += 1
        await self.ws.send_json({"id": self.n, **msg})
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Step(f"websocket {msg.get('type')}: no answer within {timeout:.0f} s")
            reply = await self.ws.receive_json(timeout=left)
            if reply.get("id") != self.n:
                continue
            if not reply.get("success"):
                raise Step(f"websocket {msg.get('type')}: {reply.get('error')}")
            return reply.get("result")


async def find_entity(session, auth, ws: WS, entry_id: str) -> str:
    async def registered():
        entities = await ws.call(30, type="config/entity_registry/list")
        ids = [e["entity_id"] for e in entities if e.get("config_entry_id") == entry_id]
        return ids[0] if ids else None

    entity_id = await wait_for("the camera entity", 60, registered)

    async def has_state():
        s = await http_json(session, "GET", f"/api/states/{entity_id}", 10, headers=auth)
        return s if s.get("state") not in (None, "unavailable", "unknown") else None

    state = await wait_for(f"a state for {entity_id}", 60, has_state)
    report["entity_state"] = state.get("state")
    report["entity_attributes"] = {
        k: state["attributes"].get(k) for k in ("friendly_name", "frontend_stream_type", "supported_features")
    }
    log(f"entity {entity_id} is {state.get('state')}")
    return entity_id


async def fetch(session, url: str, timeout: float, **kw) -> tuple[int, bytes, str]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), **kw) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", "")


async def hls(session, ws: WS, entity_id: str, run: Path, args) -> Path:
    res = await ws.call(60, type="camera/stream", entity_id=entity_id, format="hls")
    master_url = HA + res["url"]
    base = master_url.rsplit("/", 1)[0]
    report["hls_master"] = re.sub(r"/api/hls/[0-9a-f]+/", "/api/hls/TOKEN/", res["url"])

    async def master():
        status, body, _ = await fetch(session, master_url, 60)
        return body.decode() if status == 200 else None

    master_text = await wait_for("the HLS master playlist", 90, master)
    (run / "master_playlist.m3u8").write_text(master_text)
    variant = next(l for l in master_text.splitlines() if l and not l.startswith("#"))
    playlist_url = f"{base}/{variant.lstrip('./')}"

    async def playlist():
        status, body, _ = await fetch(session, playlist_url, 60)
        if status != 200:
            return None
        text = body.decode()
        segs = [l for l in text.splitlines() if l and not l.startswith("#")]
        return (text, segs) if len(segs) >= args.segments else None

    text, segs = await wait_for(f"{args.segments} whole segments in the HLS playlist", 120, playlist)
    (run / "playlist.m3u8").write_text(text)
    m = re.search(r'#EXT-X-MAP:URI="([^"]+)"', text)
    init_name = m.group(1) if m else "init.mp4"
    durations = [float(x) for x in re.findall(r"#EXTINF:([0-9.]+)", text)]
    report["hls"] = {
        "segments_listed": len(segs),
        "segment_durations_s": durations,
        "low_latency_parts": text.count("#EXT-X-PART:"),
        "target_duration": (re.search(r"#EXT-X-TARGETDURATION:(\d+)", text) or [None, None])[1],
    }
    status, init, _ = await fetch(session, f"{base}/{init_name}", 30)
    if status != 200:
        raise Step(f"{init_name}: HTTP {status}")
    chunks = [init]
    fetched = []
    for seg in segs[-args.segments:]:
        status, data, _ = await fetch(session, f"{base}/{seg.lstrip('./')}", 60)
        if status != 200:
            raise Step(f"{seg}: HTTP {status}")
        chunks.append(data)
        fetched.append({"name": seg, "bytes": len(data)})
    report["hls"]["init_bytes"] = len(init)
    report["hls"]["fetched"] = fetched
    out = run / "hls.mp4"
    out.write_bytes(b"".join(chunks))
    log(f"fetched {init_name} and {len(fetched)} segments: {out} ({out.stat().st_size} bytes)")
    return out


def decode(path: Path) -> None:
    """Counts the decoded video frames of `path` with ffprobe, else PyAV."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe:
        p = subprocess.run(
            [ffprobe, "-v", "error", "-count_frames", "-select_streams", "v:0",
             "-show_entries", "stream=codec_name,profile,width,height,nb_read_frames,avg_frame_rate",
             "-of", "json", str(path)],
            capture_output=True, text=True, timeout=120,
        )
        if p.returncode != 0:
            raise Step(f"ffprobe failed ({p.returncode}): {p.stderr[-500:]}")
        streams = json.loads(p.stdout).get("streams") or []
        if not streams:
            raise Step("ffprobe found no video stream")
        s = streams[0]
        report.update(
            decoder="ffprobe " + subprocess.run([ffprobe, "-version"], capture_output=True, text=True).stdout.split()[2],
            codec=s.get("codec_name"), profile=s.get("profile"), width=s.get("width"), height=s.get("height"),
            frames=int(s.get("nb_read_frames") or 0), avg_frame_rate=s.get("avg_frame_rate"),
        )
        if p.stderr.strip():
            report["decode_warnings"] = p.stderr.strip().splitlines()[:10]
        return
    import av  # PyAV, from ha-av: the same FFmpeg libraries HA uses

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(v))
        report.update(
            decoder=f"PyAV {av.__version__}", codec=v.codec_context.name, profile=v.codec_context.profile,
            width=v.codec_context.width, height=v.codec_context.height, frames=frames,
        )


def image_size(data: bytes):
    try:
        import io

        import PIL.Image

        with PIL.Image.open(io.BytesIO(data)) as im:
            return [im.format, im.width, im.height]
    except Exception:  # noqa: BLE001
        return None


async def still(session, auth, entity_id: str, run: Path) -> None:
    try:
        status, data, ctype = await fetch(session, f"{HA}/api/camera_proxy/{entity_id}", 60, headers=auth)
    except Exception as e:  # noqa: BLE001
        report["camera_proxy"] = {"error": repr(e)}
        return
    report["camera_proxy"] = {"status": status, "content_type": ctype, "bytes": len(data)}
    if status == 200:
        (run / "camera_proxy.jpg").write_bytes(data)
        report["camera_proxy"]["size"] = image_size(data)


HA_PROC: tuple = ()


async def main_async(args, procs: Procs) -> None:
    global HA_PROC
    run = Path(args.run_dir).resolve()
    run.mkdir(parents=True, exist_ok=True)
    if port_open(HA_PORT) or port_open(RTSP_PORT):
        raise Step("ports 8123 or 8554 are taken: run this in a fresh network namespace (tests/ha/try does)")

    rtcam = str(Path(args.rtcam).resolve())
    report["rtcam_version"] = subprocess.run(
        [rtcam, "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    cfg = write_rtcam_config(run, args)
    rtcam_log = run / "rtcam.log"
    # RTCAM_* variables are config overrides for rtcam (it refuses unknown
    # ones): RTCAM_BIN is tests/ha/try's own.
    env = {k: v for k, v in os.environ.items() if k != "RTCAM_BIN"}
    # rtcam's RTSP server logs each client and its login at debug level.
    env.setdefault("RTCAM_LOG", "info,rtcam::rtsp=debug")
    rp = procs.start("rtcam", [rtcam, "--config", str(cfg), "run"], rtcam_log, env)

    async def rtsp_up():
        return port_open(RTSP_PORT)

    await wait_for("rtcam's RTSP port", 60, rtsp_up, rp, rtcam_log)
    host = "127.0.0.1"
    report["rtsp_url"] = f"rtsp://{host}:{RTSP_PORT}/cam"
    report["rtsp_transport"] = args.transport
    report["rtsp_login"] = bool(args.rtsp_user)
    report["video"] = f"test {args.width}x{args.height}@{args.fps}"

    ha_dir = run / "ha-config"
    ha_dir.mkdir()
    (ha_dir / "configuration.yaml").write_text(HA_CONFIG)
    ha_log = run / "hass.log"
    env = dict(os.environ)
    # HA pip-installs missing requirements: here there is no index to reach,
    # so a missing one fails at once (and shows in its log) instead of retrying.
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS="", PIP_RETRIES="0")
    hass = str(Path(sys.executable).with_name("hass"))
    hp = procs.start("hass", [hass, "-c", str(ha_dir)], ha_log, env)
    HA_PROC = (hp, ha_log)

    t0 = time.monotonic()
    async with aiohttp.ClientSession() as session:
        token = await onboard(session)
        report["ha_start_s"] = round(time.monotonic() - t0, 1)
        auth = {"Authorization": f"Bearer {token}"}
        cfg_ha = await http_json(session, "GET", "/api/config", 30, headers=auth)
        report["ha_version"] = cfg_ha.get("version")
        missing = [
            l.split("]", 1)[-1].strip()
            for l in ha_log.read_text(errors="replace").splitlines()
            if "Unable to install package" in l
        ]
        if missing:
            err(f"HA wanted packages the venv lacks: {missing[:5]}")

        entry_id = await config_flow(session, auth, args, report["rtsp_url"])
        async with WS(session, token) as ws:
            entity_id = await find_entity(session, auth, ws, entry_id)
            report["entity_id"] = entity_id
            mp4 = await hls(session, ws, entity_id, run, args)
            decode(mp4)
            log(f"decoded {report['frames']} frames: {report['codec']} {report['width']}x{report['height']}")
            await still(session, auth, entity_id, run)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtcam", required=True, help="the rtcam binary")
    ap.add_argument("--run-dir", required=True, help="logs, configs and fetched media go here")
    ap.add_argument("--width", type=int, default=int(os.environ.get("HA_TRY_WIDTH", 1280)))
    ap.add_argument("--height", type=int, default=int(os.environ.get("HA_TRY_HEIGHT", 720)))
    ap.add_argument("--fps", type=int, default=int(os.environ.get("HA_TRY_FPS", 15)))
    ap.add_argument("--transport", default=os.environ.get("HA_TRY_TRANSPORT", "tcp"), choices=["tcp", "udp"])
    ap.add_argument("--segments", type=int, default=int(os.environ.get("HA_TRY_SEGMENTS", 3)),
                    help="whole HLS segments to fetch and decode")
    ap.add_argument("--still", action="store_true", default=os.environ.get("HA_TRY_STILL") == "1",
                    help="give the flow rtcam's /snapshot.jpg as the still image URL (default: none)")
    ap.add_argument("--rtsp-user", default=os.environ.get("HA_TRY_RTSP_USER", ""))
    ap.add_argument("--rtsp-password", default=os.environ.get("HA_TRY_RTSP_PASSWORD", ""))
    ap.add_argument("--timeout", type=float, default=float(os.environ.get("HA_TRY_TIMEOUT", 600)),
                    help="the whole run, seconds")
    args = ap.parse_args()
    if bool(args.rtsp_user) != bool(args.rtsp_password):
        ap.error("--rtsp-user and --rtsp-password go together")

    procs = Procs()
    t0 = time.monotonic()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        asyncio.run(asyncio.wait_for(main_async(args, procs), args.timeout))
    except Step as e:
        err(str(e))
    except (asyncio.TimeoutError, TimeoutError):
        err(f"the run took longer than {args.timeout:.0f} s")
    except KeyboardInterrupt as e:
        err(f"interrupted ({e})")
    except Exception as e:  # noqa: BLE001 - everything goes into the report
        err(f"{type(e).__name__}: {e}")
    finally:
        procs.stop_all()
    rtcam_log = Path(args.run_dir, "rtcam.log")
    if rtcam_log.exists():
        text = rtcam_log.read_text(errors="replace")
        report["rtcam_rtsp"] = {
            # TCP connections, the driver's own readiness probe included
            "connections": text.count("rtsp: client connected"),
            "logins": sorted(set(re.findall(r"rtsp: authenticated \((\w+)\)", text))),
            "warnings": len(re.findall(r" WARN .*rtsp", text)),
        }
    report["run_s"] = round(time.monotonic() - t0, 1)
    for key in ("setup_s", "build_s"):
        if os.environ.get(f"HA_TRY_{key.upper()}"):
            report[key] = float(os.environ[f"HA_TRY_{key.upper()}"])
    report["ok"] = report["frames"] > 0
    report["run_dir"] = args.run_dir
    line = json.dumps(report, separators=(",", ":"))
    Path(args.run_dir, "report.json").write_text(line + "\n")
    print(line, flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
