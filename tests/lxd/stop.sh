#!/usr/bin/env bash
# tests/lxd/stop.sh: stop the LXD daemon that tests/lxd/setup.sh started (by its PID), for local
# cleanup. A daemon that setup.sh did not start (systemd's, say) is left alone. Instances and
# images stay on disk; the next setup.sh run starts the daemon again and reuses them.
set -euo pipefail
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PID_FILE=/run/github-runner-lxd-test/lxd.pid

# alive PID: running and not a zombie. The exited daemon can linger as a zombie until PID 1
# reaps it, and `kill -0` succeeds on zombies.
alive() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
# wait_gone PID TENTHS: true once PID is gone, false after TENTHS tenths of a second.
wait_gone() {
	local i
	for ((i = 0; i < $2; i++)); do
		alive "$1" || return 0
		sleep 0.1
	done
	! alive "$1"
}

if [ ! -f "$PID_FILE" ]; then
	echo "no $PID_FILE: setup.sh started no daemon here; nothing to stop"
	exit 0
fi
pid=$(cat "$PID_FILE")
if ! alive "$pid"; then
	echo "lxd pid $pid (from $PID_FILE) is not running; removing the stale PID file"
	rm -f "$PID_FILE"
	exit 0
fi
# The PID may have been reused since setup.sh wrote it: only signal an lxd.
exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
if [ "${exe##*/}" != lxd ]; then
	echo "pid $pid is '$exe', not lxd; not touching it. Removing the stale PID file." >&2
	rm -f "$PID_FILE"
	exit 1
fi

# SIGPWR is LXD's "shut down the instances, then exit" (what `lxd shutdown` asks for); it
# also removes the bridge and stops its dnsmasq. Instances get up to LXD's own timeout.
echo "stopping lxd pid $pid (SIGPWR: instances stop first)"
kill -PWR "$pid"
if ! wait_gone "$pid" 1200; then
	echo "lxd pid $pid still running after 120 s; SIGTERM" >&2
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" 100; then
		echo "lxd pid $pid still running; SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 50 || { echo "cannot stop lxd pid $pid" >&2; exit 1; }
	fi
fi
rm -f "$PID_FILE"
# LXD leaves its nftables table behind; drop it unless another LXD daemon is still up.
if ! timeout 10 lxc query /1.0 >/dev/null 2>&1; then
	nft delete table inet lxd 2>/dev/null || true
fi
echo "lxd pid $pid stopped"
