#!/bin/sh
# The agent's CPU with recording off or continuous (docs/BENCHMARKS.md,
# "Recording, snapshots and motion"): the 1280x720@30 test pattern always
# on, no viewer; prints the CPU ticks (1/100 s) of 20 s after 3 s of warm-up.
# Usage, inside a private network namespace:
#   tests/bench/record-cpu.sh target/ci/rtcam off|continuous
set -eu
BIN=$(realpath "$1")
MODE=$2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cat > $W/c.toml <<EOT
[video]
always_on = true
[http]
listen = "127.0.0.1:18181"
[broker]
listen = "127.0.0.1:11991"
v5_listen = "127.0.0.1:11992"
ws_listen = "127.0.0.1:11993"
[webrtc]
mdns = "disabled"
[record]
mode = "$MODE"
dir = "$W/out"
min_free_mb = 0
EOT
$BIN --config $W/c.toml run >$W/log 2>&1 &
P=$!
sleep 3
a=$(awk '{print $14+$15}' /proc/$P/stat)
sleep 20
b=$(awk '{print $14+$15}' /proc/$P/stat)
kill -INT $P; wait $P
echo "$MODE $(( b - a ))"
