#!/bin/sh
# shellcheck disable=SC2317 # the checks are called through `step`
# Runs INSIDE the lab guest (`tests/lab/lab selftest`, or by hand:
# `tests/lab/lab run -- sh tests/lab/guest-selftest.sh`). Each driver check is
# an asserted step; the exit code is the number of failed steps (0 = all ok).
# POSIX sh: dash on amd64, busybox sh on arm64. The x86 host tools
# (v4l2-ctl, gpioset, ...) cannot run in an arm64 guest: there the same
# drivers are checked through sysfs and configfs only.
PASS=0 FAIL=0
W=$(mktemp -d)
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
ko() { FAIL=$((FAIL + 1)); echo "not ok - $*"; }
# step DESCRIPTION FUNCTION: the function's output is shown only on failure.
step() {
	t0=$(cut -d' ' -f1 /proc/uptime)
	if "$2" >"$W/log" 2>&1; then r=0; else r=1; fi
	d=$(awk -v a="$t0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }')
	if [ $r = 0 ]; then ok "$1 ($d s)"; else
		ko "$1 ($d s)"
		sed 's/^/    | /' "$W/log" | tail -n 30
	fi
}
QUERYCAP=
[ "${1:-}" = --querycap ] && QUERYCAP=$2
TOOLS=1 LIMITED=
if ! v4l2-ctl --help >/dev/null 2>&1; then
	TOOLS=0
	LIMITED=" [no host tools: sysfs, configfs${QUERYCAP:+ and querycap} only]"
fi
echo "# guest: $(uname -srm), host tools: $([ "$TOOLS" = 1 ] && echo yes || echo "no (foreign architecture)")"

# The /dev/videoN whose sysfs name matches $1 (first match).
node_named() {
	for n in /sys/class/video4linux/video*; do
		[ -e "$n/name" ] || continue
		# shellcheck disable=SC2254 # $1 is a pattern
		case $(cat "$n/name") in $1) echo "/dev/${n##*/}"; return 0 ;; esac
	done
	return 1
}
# Device caps of node $1, one per line (v4l2-ctl --info, or querycap).
dev_caps() {
	if [ "$TOOLS" = 1 ]; then
		v4l2-ctl -d "$1" --info | sed -n '/Device Caps/,$p' | sed -n 's/^\t\t//p'
	else
		"$QUERYCAP" "$1" | sed -n 's/^cap: //p'
	fi
}
CAPS=1 # can the device caps be read?
[ "$TOOLS" = 1 ] || [ -n "$QUERYCAP" ] || CAPS=0
wait_node() { # wait_node PATTERN: udev-less, nodes appear as the driver probes
	i=0
	while ! node_named "$1" >/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	node_named "$1"
}

vivid() {
	modprobe vivid || return 1
	cap=$(wait_node 'vivid-*-vid-cap') || { echo "no vivid capture node"; ls -l /sys/class/video4linux/; return 1; }
	echo "capture node: $cap"
	[ -c "$cap" ] || return 1
	[ "$CAPS" = 1 ] || return 0
	dev_caps "$cap" | tee "$W/caps"
	grep -qx 'Video Capture' "$W/caps" || return 1
	[ "$TOOLS" = 1 ] || return 0
	v4l2-ctl --list-devices | tee "$W/devs"
	grep -q '^vivid' "$W/devs" && grep -q "$cap" "$W/devs" || return 1
	v4l2-ctl -d "$cap" --list-formats | grep -q "'YUYV'" || return 1
	# a few real frames
	timeout 60 v4l2-ctl -d "$cap" --set-fmt-video=width=640,height=480,pixelformat=YUYV \
		--stream-mmap --stream-count=3 --stream-to="$W/frames.yuyv" || return 1
	size=$(wc -c <"$W/frames.yuyv")
	echo "3 frames: $size bytes"
	[ "$size" -eq $((3 * 640 * 480 * 2)) ]
}

vivid_mplane() {
	rmmod vivid || return 1
	modprobe vivid multiplanar=2 || return 1
	cap=$(wait_node 'vivid-*-vid-cap') || return 1
	echo "capture node: $cap"
	[ "$CAPS" = 1 ] || return 0
	dev_caps "$cap" | tee "$W/caps"
	# multiplanar only: no single-planar capture cap
	grep -qx 'Video Capture Multiplanar' "$W/caps" && ! grep -qx 'Video Capture' "$W/caps" || return 1
	[ "$TOOLS" = 1 ] || return 0
	timeout 60 v4l2-ctl -d "$cap" --set-fmt-video=width=640,height=480,pixelformat=NV12 \
		--stream-mmap --stream-count=2 --stream-to="$W/frames.nv12" || return 1
	[ "$(wc -c <"$W/frames.nv12")" -eq $((2 * 640 * 480 * 3 / 2)) ]
}

vicodec() {
	modprobe vicodec || return 1
	enc=$(wait_node 'stateful-encoder') || { cat /sys/class/video4linux/*/name; return 1; }
	echo "encoder node: $enc"
	[ -d /sys/module/v4l2_mem2mem ] || { echo "v4l2-mem2mem not loaded"; return 1; }
	[ "$CAPS" = 1 ] || return 0
	dev_caps "$enc" | tee "$W/caps"
	grep -q 'Video Memory-to-Memory' "$W/caps" || return 1
	[ "$TOOLS" = 1 ] || return 0
	v4l2-ctl -d "$enc" --list-formats | grep -q "'FWHT'" || return 1
	# raw YU12 test pattern in, 5 FWHT frames out
	timeout 60 v4l2-ctl -d "$enc" --set-fmt-video-out=width=640,height=480,pixelformat=YU12 \
		--set-fmt-video=pixelformat=FWHT --stream-out-mmap --stream-mmap \
		--stream-count=5 --stream-to="$W/out.fwht" || return 1
	size=$(wc -c <"$W/out.fwht")
	magic=$(head -c 4 "$W/out.fwht")
	echo "5 FWHT frames: $size bytes, magic '$magic'"
	[ "$size" -gt 1000 ] && [ "$magic" = OOOO ]
}

vimc() {
	modprobe vimc || return 1
	cap=$(wait_node 'Raw Capture 0') || { cat /sys/class/video4linux/*/name; return 1; }
	echo "vimc raw capture: $cap"
	[ "$TOOLS" = 1 ] || return 0
	for m in /dev/media*; do media-ctl -d "$m" -p 2>/dev/null | grep -q 'Sensor A' && { echo "media: $m"; return 0; }; done
	return 1
}

# gpio-sim: a chip with named lines made through configfs.
gpio_sim() {
	modprobe gpio-sim || return 1
	C=/sys/kernel/config/gpio-sim/lab
	mkdir "$C" "$C/bank0" || return 1
	echo 8 >"$C/bank0/num_lines"
	echo lab-bank >"$C/bank0/label"
	mkdir "$C/bank0/line1" "$C/bank0/line3"
	echo LAB_LED >"$C/bank0/line1/name"
	echo LAB_BUTTON >"$C/bank0/line3/name"
	echo 1 >"$C/live" || return 1
	chip=$(cat "$C/bank0/chip_name")
	sim=/sys/devices/platform/$(cat "$C/dev_name")/$chip
	echo "chip $chip, sim $sim"
	[ -c "/dev/$chip" ] && [ -d "$sim/sim_gpio3" ] || return 1
	# pull from the simulator side, seen in sysfs
	echo pull-up >"$sim/sim_gpio3/pull" && [ "$(cat "$sim/sim_gpio3/value")" = 1 ] || return 1
	echo pull-down >"$sim/sim_gpio3/pull" && [ "$(cat "$sim/sim_gpio3/value")" = 0 ] || return 1
	[ "$TOOLS" = 1 ] || return 0
	gpioinfo "$chip" | tee "$W/info"
	grep -q '"LAB_LED"' "$W/info" && grep -q '"LAB_BUTTON"' "$W/info" || return 1
	[ "$(gpiofind LAB_BUTTON)" = "$chip 3" ] || return 1
	# gpioget reads the simulated pull
	echo pull-up >"$sim/sim_gpio3/pull"
	[ "$(gpioget "$chip" 3)" = 1 ] || return 1
	echo pull-down >"$sim/sim_gpio3/pull"
	[ "$(gpioget "$chip" 3)" = 0 ] || return 1
	# gpioset drives line 1; the simulator sees it while the line is held
	gpioset --mode=time --sec=10 "$chip" 1=1 &
	i=0
	while [ "$(cat "$sim/sim_gpio1/value")" != 1 ] && [ "$i" -lt 60 ]; do sleep 0.05; i=$((i + 1)); done
	v=$(cat "$sim/sim_gpio1/value")
	kill $! 2>/dev/null
	wait
	echo "line 1 driven high by gpioset: sim value $v"
	[ "$v" = 1 ] || return 1
	# an edge made by the simulator reaches a cdev watcher
	timeout 10 gpiomon --num-events=1 --rising-edge "$chip" 3 >"$W/mon" &
	sleep 0.5
	echo pull-up >"$sim/sim_gpio3/pull"
	wait
	cat "$W/mon"
	grep -q 'RISING EDGE' "$W/mon"
}

no_oops() {
	dmesg | grep -E 'Oops|BUG:|WARNING:|Call Trace' && return 1
	return 0
}

step "modprobe vivid: capture node, v4l2-ctl --list-devices, 3 YUYV frames$LIMITED" vivid
step "modprobe vivid multiplanar=2: multiplanar-only capture, 2 NV12 frames$LIMITED" vivid_mplane
step "modprobe vicodec (+ v4l2-mem2mem): encoder node streams FWHT$LIMITED" vicodec
step "modprobe vimc: media graph with Sensor A and capture nodes$LIMITED" vimc
step "modprobe gpio-sim: configfs chip, named lines, pulls, gpioget/gpioset/gpiomon$LIMITED" gpio_sim
step "kernel log: no oops or warning" no_oops
rm -rf "$W"
echo "guest selftest: $PASS passed, $FAIL failed"
exit $FAIL
