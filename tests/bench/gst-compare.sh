#!/bin/sh
# Issue 15's GStreamer row: rtcam against a GStreamer webrtcbin sender with
# the same frames and OpenH264 settings, 1 and 8 viewers, CPU of the sender
# process minus its test source, and RSS (tests/bench/gst_webrtc.py).
#
# Usage: tests/bench/gst-compare.sh [RTCAM_BINARY] [ROUNDS] [WINDOW_SECONDS]
#   defaults: target/ci/rtcam 3 20; about 3 minutes per round.
# Installs what it needs on Debian 12 (like .ci/setup), then runs everything
# in a private network namespace that holds only `lo`; no STUN server.
set -eu

RTCAM=$(realpath "${1:-target/ci/rtcam}")
ROUNDS=${2:-3}
WINDOW=${3:-20}
HERE=$(dirname "$(realpath "$0")")

# openh264enc is in plugins-bad (built against Debian's libopenh264-7);
# gir1.2-nice-0.1 lets the script give libnice the loopback address.
PKGS="gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-nice gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 gir1.2-nice-0.1
  python3-gi python3-paho-mqtt libopenh264-7 mosquitto ffmpeg iproute2 util-linux"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "installing:$missing"
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
for e in openh264enc webrtcbin rtph264pay multifilesrc rawvideoparse clocksync; do
  gst-inspect-1.0 "$e" >/dev/null || { echo "GStreamer element $e missing" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/rtcam-gst.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# The frames both encoders get: 5 s of rtcam's test pattern, recorded at
# 40 Mbit/s (QP near its floor of 16, so the grain survives) and decoded
# to one raw I420 file per frame for GStreamer's multifilesrc.
"$RTCAM" --video-source test --video-width 1280 --video-height 720 --video-fps 30 \
  --video-bitrate-kbps 40000 --video-max-bitrate-kbps 40000 \
  record --frames 150 -o "$TMP/pattern.h264" 2>/dev/null
ffmpeg -v error -i "$TMP/pattern.h264" -f image2 -c:v rawvideo -pix_fmt yuv420p "$TMP/f%03d.yuv"

# Debian's python3 (the gi bindings are its packages, not pip's). The
# single quotes are meant: the inner shell expands its own arguments.
# shellcheck disable=SC2016
unshare --net -- sh -c 'ip link set lo up && exec timeout $(($4 * ($5 * 12 + 60) + 120)) \
  /usr/bin/python3 "$1/gst_webrtc.py" compare --rtcam "$2" --frames "$3" --tmp "$3" --rounds "$4" --window "$5"' \
  sh "$HERE" "$RTCAM" "$TMP" "$ROUNDS" "$WINDOW"
