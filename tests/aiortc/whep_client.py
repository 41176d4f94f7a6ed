#!/usr/bin/env python3
"""A WHEP player built on aiortc and urllib, independent of rtcam's code.

It does what draft-ietf-wish-whep-04 asks of a player, against the URL it
is given, and reports every HTTP status it got as JSON on stdout:

1. OPTIONS on the endpoint (CORS preflight, Accept-Post);
2. bad requests that must be refused (wrong media type, SDP that is not
   SDP, no token, a wrong token);
3. POST of a recvonly H.264 offer with a `control` DataChannel and the
   bearer token; the 201's Location, ETag and answer (its candidates in it);
4. the video for --seconds, each frame decoded and counted; the
   DataChannel commands of --command sent, their replies recorded;
5. PATCH: a trickled candidate (204), a stale If-Match (412), a fragment
   of the wrong type (415), an unreadable one (400/422), an ICE restart
   without If-Match (428) and with it (200, new credentials and ETag);
6. DELETE (200), and a PATCH on the deleted resource (404).

Exits 0 when it ran to the end (the Rust test judges the figures), 1 when
it could not; bounded by --timeout and a watchdog thread.
Needs tests/aiortc/setup's venv.
"""

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

try:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
    from peer_setup import h264_codecs, patch_host_addresses
except ImportError as e:
    why = f"import failed: {e} (run tests/aiortc/setup)"
    print(json.dumps({"errors": [why]}))
    sys.exit(1)


# HTTPS: the CA of --cafile (set in main).
TLS = None


def http(method, url, body=None, headers=None, timeout=10.0):
    """One request; returns (status, headers as a lowercase dict of lists, body text)."""
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=TLS) as r:
            status, hdrs, text = r.status, r.headers, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        status, hdrs, text = e.code, e.headers, e.read().decode(errors="replace")
    h = {}
    for k, v in hdrs.items():
        h.setdefault(k.lower(), []).append(v)
    return status, h, text


def one(h, name):
    v = h.get(name)
    return v[0] if v else None


def error_code(text):
    try:
        return json.loads(text).get("error")
    except ValueError:
        return None


def ufrag_of(sdp):
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line.split(":", 1)[1].strip()
    return None


async def run(args, report):
    errors = report["errors"]
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    url = args.url

    st, h, _ = http("OPTIONS", url, headers={"Origin": "http://player.example", "Access-Control-Request-Method": "POST"})
    report["options"] = {"status": st, "accept_post": one(h, "accept-post"), "allow_origin": one(h, "access-control-allow-origin")}

    patch_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = pc.addTransceiver("video", direction="recvonly")
    video.setCodecPreferences(h264_codecs())
    dc = pc.createDataChannel("control")
    replies = {}
    opened = asyncio.Event()
    frames = {"decoded": 0}
    track_done = asyncio.Event()

    @dc.on("open")
    def on_open():
        opened.set()

    @dc.on("message")
    def on_message(msg):
        try:
            m = json.loads(msg)
        except ValueError:
            errors.append(f"control: not JSON: {msg!r:.80}")
            return
        if "id" in m:
            replies[str(m["id"])] = m

    @pc.on("track")
    def on_track(track):
        async def count():
            try:
                while True:
                    await track.recv()
                    frames["decoded"] += 1
            except MediaStreamError:
                pass
            track_done.set()
        asyncio.ensure_future(count())

    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    sdp = pc.localDescription.sdp

    # Bad requests first: none may create a session.
    bad = {}
    st, h, t = http("POST", url, sdp, {"Content-Type": "text/plain", **auth})
    bad["wrong_type"] = {"status": st, "error": error_code(t), "accept_post": one(h, "accept-post")}
    st, h, t = http("POST", url, "hello", {"Content-Type": "application/sdp", **auth})
    bad["not_sdp"] = {"status": st, "error": error_code(t), "message": t[:200]}
    st, h, t = http("POST", url, sdp, {"Content-Type": "application/sdp"})
    bad["no_token"] = {"status": st, "error": error_code(t), "www_authenticate": one(h, "www-authenticate")}
    st, h, t = http("POST", url, sdp, {"Content-Type": "application/sdp", "Authorization": "Bearer wrong-token"})
    bad["wrong_token"] = {"status": st, "error": error_code(t)}
    report["bad_posts"] = bad

    st, h, answer = http("POST", url, sdp, {"Content-Type": "application/sdp", **auth})
    post = {"status": st, "content_type": one(h, "content-type"), "location": one(h, "location"),
            "etag": one(h, "etag"), "links": h.get("link", []), "allow_origin": one(h, "access-control-allow-origin")}
    report["post"] = post
    if st != 201:
        errors.append(f"POST answered {st}: {answer[:300]}")
        await pc.close()
        return
    post["answer_candidates"] = sum(1 for l in answer.splitlines() if l.startswith("a=candidate:"))
    post["end_of_candidates"] = "a=end-of-candidates" in answer
    resource = urllib.parse.urljoin(url, post["location"])
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(opened.wait(), 15)
    except asyncio.TimeoutError:
        errors.append("the DataChannel did not open")
    for i, cmd in enumerate(args.command):
        req = json.loads(cmd)
        req["id"] = i + 1
        dc.send(json.dumps(req))
    until = loop.time() + args.seconds
    while loop.time() < until and not track_done.is_set():
        await asyncio.sleep(0.1)
    report["frames_decoded"] = frames["decoded"]
    report["replies"] = replies
    report["connection_state"] = pc.connectionState

    etag = post["etag"]
    ufrag = ufrag_of(sdp)
    pwd = next(l.split(":", 1)[1].strip() for l in sdp.splitlines() if l.startswith("a=ice-pwd:"))
    frag_type = {"Content-Type": "application/trickle-ice-sdpfrag"}
    trickle = (f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
               "a=candidate:99 1 udp 1 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n")
    p = {}
    st, h, t = http("PATCH", resource, trickle, {**frag_type, "If-Match": etag, **auth})
    p["trickle"] = {"status": st, "body": t[:200]}
    st, h, t = http("PATCH", resource, trickle, {**frag_type, "If-Match": '"stale"', **auth})
    p["stale_etag"] = {"status": st, "error": error_code(t)}
    st, h, t = http("PATCH", resource, trickle, {"Content-Type": "application/sdp", **auth})
    p["wrong_type"] = {"status": st, "error": error_code(t)}
    st, h, t = http("PATCH", resource, "not a fragment", {**frag_type, **auth})
    p["unreadable"] = {"status": st, "error": error_code(t)}
    st, h, t = http("PATCH", resource, trickle, {**frag_type, "Authorization": "Bearer wrong-token"})
    p["wrong_token"] = {"status": st, "error": error_code(t)}
    restart = "a=ice-ufrag:newufrag1\r\na=ice-pwd:newpasswordnewpassword12\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
    st, h, t = http("PATCH", resource, restart, {**frag_type, **auth})
    p["restart_without_if_match"] = {"status": st, "error": error_code(t)}
    st, h, t = http("PATCH", resource, restart, {**frag_type, "If-Match": "*", **auth})
    p["restart"] = {"status": st, "etag": one(h, "etag"), "content_type": one(h, "content-type"),
                    "ufrag": ufrag_of(t), "candidates": sum(1 for l in t.splitlines() if l.startswith("a=candidate:")),
                    "body": t[:400]}
    p["answer_ufrag"] = ufrag_of(answer)
    # Again, by a player that carried its token in the POST's URL only: the
    # resource's URL vouches for it.
    restart2 = restart.replace("newufrag1", "newufrag2")
    st, h, t = http("PATCH", resource, restart2, {**frag_type, "If-Match": "*"})
    p["restart_without_token"] = {"status": st, "ufrag": ufrag_of(t), "error": error_code(t)}
    report["patch"] = p

    st, h, t = http("DELETE", resource, headers=auth)
    report["delete"] = {"status": st}
    st, h, t = http("PATCH", resource, trickle, {**frag_type, **auth})
    report["patch_after_delete"] = {"status": st, "error": error_code(t)}
    await pc.close()


def main():
    ap = argparse.ArgumentParser(description="aiortc WHEP player for rtcam's tests")
    ap.add_argument("--url", required=True, help="the WHEP endpoint, http://HOST:PORT/whep")
    ap.add_argument("--token", default=os.environ.get("RTCAM_VIEWER_TOKEN"))
    ap.add_argument("--seconds", type=float, default=3.0, help="how long to watch")
    ap.add_argument("--command", action="append", default=[], help="a DataChannel command (JSON, id added)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--cafile", help="CA certificate (PEM) an https:// URL's server is checked against")
    args = ap.parse_args()
    if args.cafile:
        import ssl
        global TLS
        TLS = ssl.create_default_context(cafile=args.cafile)

    report = {"errors": []}

    def watchdog():
        time.sleep(args.timeout + 10)
        report["errors"].append("watchdog: the run hung")
        print(json.dumps(report), flush=True)
        os._exit(1)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        asyncio.run(asyncio.wait_for(run(args, report), args.timeout))
    except Exception as e:  # noqa: BLE001 - reported, the test judges
        report["errors"].append(f"{type(e).__name__}: {e}")
    print(json.dumps(report), flush=True)
    sys.exit(0 if "delete" in report else 1)


if __name__ == "__main__":
    main()
