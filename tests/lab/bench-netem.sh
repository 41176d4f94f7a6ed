#!/bin/sh
# The bad-link benchmark: the agent and `rtcam probe` inside the lab guest,
# whose loopback is shaped with tc netem (this host's kernel has no
# sch_netem), one profile after another; prints, per profile, what the probe
# saw (fps, freezes, latency, ICE restarts, reconnects) and the lowest bitrate congestion
# control set. Figures under emulation: compare profiles with each other, not with
# a real board. From the repository's root, on the host:
#
#   cargo build --release
#   tests/lab/lab run --cpus 2 --timeout 900 -- sh tests/lab/bench-netem.sh [RTCAM] [SECONDS]
#
# RTCAM defaults to target/release/rtcam, SECONDS (per profile) to 20.
set -eu
[ "${LAB_GUEST:-}" = 1 ] || { echo "run me in the lab guest (tests/lab/lab run -- sh $0)" >&2; exit 2; }
bin=${1:-target/release/rtcam}
secs=${2:-20}
dir=$(mktemp -d)
cfg=$dir/rtcam.toml
cat >"$cfg" <<EOF
[video]
source = "test"
width = 640
height = 360
fps = 15
bitrate_kbps = 1500
keyframe_interval_ms = 2000
[webrtc]
interfaces = ["lo"]
loopback = true
[broker]
listen = "127.0.0.1:18830"
v5_listen = "127.0.0.1:18831"
ws_listen = "127.0.0.1:18832"
[http]
listen = "127.0.0.1:18080"
EOF

printf '%-44s %7s %6s %8s %10s %10s %9s %9s %4s %5s %9s\n' profile first_ms fps freezes freeze_ms longest_ms lat_p50 lat_p95 ice reco min_kbps
for profile in \
  "none" \
  "delay 40ms" \
  "delay 40ms loss 2% rate 1mbit limit 100" \
  "delay 40ms loss 10%" \
  "delay 40ms loss 2% rate 500kbit limit 100"; do
  tc qdisc del dev lo root 2>/dev/null || true
  [ "$profile" = none ] || tc qdisc add dev lo root netem $profile
  "$bin" --config "$cfg" run >"$dir/agent.log" 2>&1 &
  agent=$!
  # Ready once it has subscribed at its own broker (at most 30 s).
  i=0
  until grep -q "connected to MQTT broker" "$dir/agent.log"; do
    i=$((i + 1))
    [ "$i" -le 300 ] || { echo "the agent did not start:" >&2; cat "$dir/agent.log" >&2; exit 1; }
    sleep 0.1
  done
  if ! "$bin" --config "$cfg" probe --seconds "$secs" --timeout 30 --json >"$dir/probe.json" 2>"$dir/probe.log"; then
    echo "probe failed under '$profile':" >&2
    tail -n 5 "$dir/probe.log" "$dir/agent.log" >&2
    kill "$agent"; wait "$agent" || true
    exit 1
  fi
  kill "$agent"; wait "$agent" || true
  # The lowest bitrate congestion control set while the probe watched (the
  # ceiling when it never moved); it goes back up once the viewer leaves.
  kbps=$(sed -n 's/.*encoder bitrate follows the viewers.* to=\([0-9]*\).*/\1/p' "$dir/agent.log" | sort -n | head -n 1)
  kbps=${kbps:-1500}
  python3 - "$profile" "$kbps" "$dir/probe.json" <<'EOF'
import json, sys
profile, kbps, path = sys.argv[1], sys.argv[2], sys.argv[3]
r = json.load(open(path))
f = lambda v: "-" if v is None else f"{v:.0f}"
print(f"{profile:<44} {f(r['time_to_first_frame_ms']):>7} {r['fps']:6.1f} {r['freezes']:8d} {r['freeze_ms']:10.0f} {r['longest_freeze_ms']:10.0f} "
      f"{f(r['latency_median_ms']):>9} {f(r['latency_p95_ms']):>9} {r['ice_restarts']:4d} {r['reconnects']:5d} {kbps:>9}")
EOF
done
tc qdisc del dev lo root 2>/dev/null || true
