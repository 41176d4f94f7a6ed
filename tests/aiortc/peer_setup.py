"""What rtcam's aiortc players (viewer.py, whep_client.py) set up alike:
gathering on loopback, and the H.264 they ask for. Imported by them; it
needs the venv of tests/aiortc/setup."""

import aioice.ice
from aiortc import RTCRtpReceiver


def patch_host_addresses(addresses):
    """aioice leaves 127.0.0.1 out of its host candidates; rtcam's tests run
    in a namespace with only lo, so gather on the addresses asked for."""
    def get_host_addresses(use_ipv4, use_ipv6):
        return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
    aioice.ice.get_host_addresses = get_host_addresses


def h264_codecs():
    """What rtcam sends: H.264 Constrained Baseline, packetization-mode 1."""
    return [c for c in RTCRtpReceiver.getCapabilities("video").codecs
            if c.mimeType.lower() == "video/h264"
            and str(c.parameters.get("packetization-mode")) == "1"
            and str(c.parameters.get("profile-level-id", "")).lower().startswith("42e0")]
