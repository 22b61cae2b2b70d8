#!/usr/bin/env bash
# tests/lxd/setup.sh: take a Debian 12 machine (root; systemd or not) to a working LXD daemon
# with a storage pool, a DHCP bridge and a small local base image, then prove it with a smoke
# container. CI runs this before `go test`; every LXD test in the repository relies on it.
#
# Idempotent: each step checks first and skips what is already done, so a re-run takes a few
# seconds. It also copes with an LXD daemon that is installed (even running) but not initialised.
#
# Knobs (environment):
#   LXD_TEST_BRIDGE        bridge network to create if the default profile has no NIC   [lxdbr0]
#   LXD_TEST_BRIDGE_CIDR   its IPv4 address; MUST be explicit here (see step 3)          [10.99.0.1/24]
#   LXD_TEST_POOL          storage pool to create if the default profile has no root disk [default]
#   LXD_TEST_POOL_DRIVER   its driver: btrfs (a loop file; dir if that fails, outside CI) or dir [btrfs]
#   LXD_TEST_POOL_SIZE     the btrfs loop file's size, like 30GiB; "" is LXD's (5.0: 20% of the disk, 5-30 GiB) []
#   LXD_TEST_IMAGE_ALIAS   alias of the base image                           [github-runner-test-base]
#   LXD_TEST_SKIP_SMOKE    1 = skip the final smoke container                             [0]
#   LXD_TEST_SKIP_DEBIAN   1 = skip the Debian image (tests/lxd/debian.sh)                [0]
#
# Files: /run/github-runner-lxd-test/lxd.pid (daemon we started; tests/lxd/stop.sh stops it),
#        /var/log/github-runner-lxd-test/{lxd.log,daemon.out,apt.log}.
#
# The reasons behind each workaround are in /work/shared/reference/lxd-probe.md (the numbers
# like "probe #2" below refer to its table).
set -euo pipefail

T0=$(date +%s%N)
say() {
	local ms=$((($(date +%s%N) - T0) / 1000000))
	printf '[%4d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"
}
die() {
	say "ERROR: $*" >&2
	exit 1
}

# CI's PATH may lack the sbin directories, where dnsmasq and nft live; LXD execs both.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export DEBIAN_FRONTEND=noninteractive

BRIDGE="${LXD_TEST_BRIDGE:-lxdbr0}"
BRIDGE_CIDR="${LXD_TEST_BRIDGE_CIDR:-10.99.0.1/24}"
POOL="${LXD_TEST_POOL:-default}"
POOL_DRIVER="${LXD_TEST_POOL_DRIVER:-btrfs}"
POOL_SIZE="${LXD_TEST_POOL_SIZE:-}"
ALIAS="${LXD_TEST_IMAGE_ALIAS:-github-runner-test-base}"
SKIP_SMOKE="${LXD_TEST_SKIP_SMOKE:-0}"

RUN_DIR=/run/github-runner-lxd-test
LOG_DIR=/var/log/github-runner-lxd-test
PID_FILE="$RUN_DIR/lxd.pid"
# The package's own log directory; lxd expects it to exist.
LXD_LOG_DIR=/var/log/lxd

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, and the LXD socket is root:lxd 0660)"
mkdir -p "$RUN_DIR" "$LOG_DIR" "$LXD_LOG_DIR"

# Two concurrent runs (say, two test jobs) would race on daemon start and image import.
exec 9>"$RUN_DIR/setup.lock"
flock -w 900 9 || die "another tests/lxd/setup.sh still holds $RUN_DIR/setup.lock after 900 s"

# Every call to the daemon is bounded: a wedged daemon must fail the run, not hang CI.
lxc_() { timeout 120 lxc "$@"; }

# alive PID: true if PID is a running (not zombie) process. After the daemon exits it can stay
# a zombie until PID 1 reaps it (probe #1), and `kill -0` would still succeed on it.
alive() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# ---------------------------------------------------------------- 1. packages
# dnsmasq-base is only a Recommends of lxd but the bridge's DHCP needs it; nftables gives LXD a
# firewall driver (probe #3); busybox-static is the base image's userland; btrfs-progs lets the
# deb's LXD make the btrfs pool (step 3: the charm's choice where LXD offers no zfs). We skip
# Recommends (apparmor, lxd-agent) which this kernel cannot use anyway.
PKGS=(nftables dnsmasq-base busybox-static btrfs-progs lxd)
missing=()
for p in "${PKGS[@]}"; do
	[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	say "packages already installed: ${PKGS[*]}"
else
	say "apt-get install ${missing[*]} (log: $LOG_DIR/apt.log)"
	apt_install() {
		# DPkg::Lock::Timeout: another engineer's apt may hold the lock. The outer timeout and
		# Acquire timeouts bound a stuck download; 1200 s is far above the ~25 s this takes.
		timeout 1200 apt-get install -y -q --no-install-recommends \
			-o DPkg::Lock::Timeout=600 -o Acquire::http::Timeout=60 -o Acquire::Retries=3 \
			"$@" >>"$LOG_DIR/apt.log" 2>&1
	}
	# nftables first, on its own: it must be present before the daemon first starts.
	if ! { apt_install nftables && apt_install "${missing[@]}"; }; then
		# A fresh machine may have stale or no package lists; refresh once and retry.
		say "apt-get install failed; apt-get update and retry"
		timeout 600 apt-get update -q -o DPkg::Lock::Timeout=600 -o Acquire::http::Timeout=60 \
			>>"$LOG_DIR/apt.log" 2>&1 || { tail -20 "$LOG_DIR/apt.log" >&2; die "apt-get update failed"; }
		if ! { apt_install nftables && apt_install "${missing[@]}"; }; then
			tail -20 "$LOG_DIR/apt.log" >&2
			die "apt-get install ${missing[*]} failed (see $LOG_DIR/apt.log)"
		fi
	fi
fi
command -v lxd >/dev/null || die "lxd is not on PATH after installing the lxd package"

# Unprivileged containers map their root to a range of root's subordinate ids. The lxd
# package's preinst gives root a range only when it creates the _lxd user, so a machine whose
# _lxd survived a purge, or whose /etc/subuid was edited, can lack one; LXD then falls back to
# a map that newuidmap refuses ("uid range ... not allowed") and no container starts.
subids_changed=0
for f in subuid subgid; do
	if ! grep -q '^root:' "/etc/$f" 2>/dev/null; then
		# Same range the package gives (and gives _lxd too).
		range=$(awk -F: '$1 == "_lxd" {print $2 "-" $2 + $3 - 1; exit}' "/etc/$f" 2>/dev/null || true)
		range="${range:-100000-10100000}"
		say "root has no /etc/$f range; adding $range"
		if [ "$f" = subuid ]; then usermod --add-subuids "$range" root; else usermod --add-subgids "$range" root; fi
		subids_changed=1
	fi
done

# Every unprivileged container's root maps to the same host uid, so all containers share one
# user's inotify limits; Debian's default of 128 instances lets about a dozen systemd guests
# boot, and the next stall ("Too many open files"). LXD's production-setup values.
for kv in fs.inotify.max_user_instances=1024 fs.inotify.max_user_watches=1048576; do
	key=${kv%%=*} want=${kv#*=}
	have=$(sysctl -n "$key" 2>/dev/null || echo 0)
	if [ "$have" -lt "$want" ]; then
		sysctl -q -w "$kv" >/dev/null || die "cannot raise $key to $want (containers would stall at boot)"
		say "raised $key from $have to $want"
	fi
done

# ---------------------------------------------------------------- 2. daemon
daemon_up() { timeout 10 lxc query /1.0 >/dev/null 2>&1; }

start_daemon() {
	# What lxd.service's ExecStart does; there is no systemd here to do it (probe #1).
	# setsid + redirecting all three streams (and closing fd 9, the setup lock, which it
	# would otherwise hold for its whole life) detaches it completely: it must not hold the
	# caller's stdout (CI waits for that pipe to close) nor get its terminal's signals.
	# In a non-interactive shell a background job is not a group leader, so setsid does not
	# fork again and $! is the daemon's own PID.
	ulimit -n 1048576 2>/dev/null || ulimit -n 65536 2>/dev/null || true
	setsid lxd --group lxd --logfile="$LOG_DIR/lxd.log" </dev/null >>"$LOG_DIR/daemon.out" 2>&1 9>&- &
	local pid=$!
	echo "$pid" >"$PID_FILE"
	started_now=1
	say "started lxd daemon, pid $pid (log: $LOG_DIR/lxd.log)"
	# Bounded wait; it is usually ready in under a second.
	if ! timeout 70 lxd waitready --timeout=60; then
		tail -20 "$LOG_DIR/lxd.log" "$LOG_DIR/daemon.out" >&2 || true
		die "lxd daemon (pid $pid) not ready after 60 s"
	fi
	alive "$pid" || die "lxd daemon (pid $pid) exited; see $LOG_DIR/lxd.log"
}

our_pid() { [ -f "$PID_FILE" ] && alive "$(cat "$PID_FILE")" && cat "$PID_FILE"; }

if daemon_up; then
	if pid=$(our_pid); then
		say "lxd daemon already running (pid $pid, started by this script)"
	else
		say "lxd daemon already running (not started by this script; leaving it alone)"
	fi
else
	if pid=$(our_pid); then
		# Ours but not answering: give it the same bounded wait as a fresh start.
		say "lxd daemon pid $pid is not answering yet; waiting"
		timeout 70 lxd waitready --timeout=60 || die "lxd daemon pid $pid does not answer; run tests/lxd/stop.sh and retry"
	else
		rm -f "$PID_FILE"
		start_daemon
	fi
fi

# LXD reads the subordinate ids when it starts.
if [ "$subids_changed" = 1 ] && pid=$(our_pid) && [ "${started_now:-0}" != 1 ]; then
	say "restarting our lxd daemon (pid $pid) to pick up root's new subordinate ids"
	timeout 120 lxd shutdown --timeout 60 || kill "$pid" || true
	for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
	alive "$pid" && die "lxd daemon pid $pid did not stop"
	start_daemon
elif [ "$subids_changed" = 1 ] && [ "${started_now:-0}" != 1 ]; then
	die "added subordinate ids for root, but the running LXD daemon is not ours: restart it, then re-run"
fi

# The firewall driver is chosen when the daemon starts (probe #3). If nftables arrived after
# a daemon we own started, restart ours; if the daemon is not ours, say what to do.
firewall=$(lxc_ info | sed -n 's/^ *firewall: *//p')
if [ -z "$firewall" ]; then
	if pid=$(our_pid); then
		say "daemon has no firewall driver (started before nftables?); restarting pid $pid"
		timeout 120 lxd shutdown --timeout 60 || kill "$pid" || true
		for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
		alive "$pid" && die "lxd daemon pid $pid did not stop"
		start_daemon
		firewall=$(lxc_ info | sed -n 's/^ *firewall: *//p')
	fi
	[ -n "$firewall" ] || die "LXD found no firewall driver (is nftables installed? restart the daemon after installing it)"
fi
version=$(lxc_ query /1.0 | sed -n 's/.*"server_version": *"\([^"]*\)".*/\1/p')
say "lxd $version answering; firewall driver: $firewall"

# ---------------------------------------------------------------- 3. initialisation
# We do not use `lxd init --auto`: it picks a bridge subnet by probing x.x.x.1:22, and this
# network accepts every TCP connect, so it finds no free subnet (probe #2). Neither do we use
# one big `lxd init --preseed`: it only suits a blank daemon, and a half-initialised one (pool
# but no bridge, say) must work too. Instead we make sure of the three things the default
# profile needs, one at a time; each is one call the charm can make through the Go client:
#   root disk  -> CreateStoragePool(btrfs on a loop file, as the charm chooses) + a "root" disk
#                 device in the default profile
#   NIC        -> CreateNetwork(bridge with explicit ipv4.address) + an "eth0" nic device
profile_dev() { # profile_dev TYPE: name of the first device of that type in the default profile
	lxc_ profile device show default | awk -v t="$1" '
		/^[^ ]/ {dev=$1; sub(/:$/, "", dev)}
		/^  type: / && $2 == t && !found {print dev; found=1}'
}
profile_dev_key() { # profile_dev_key DEVICE KEY
	lxc_ profile device get default "$1" "$2"
}

root_dev=$(profile_dev disk)
if [ -n "$root_dev" ]; then
	pool=$(profile_dev_key "$root_dev" pool)
	say "default profile has root disk on pool '$pool' (driver $(lxc_ storage list --format csv | awk -F, -v p="$pool" '$1 == p {print $2}'))"
else
	pool="$POOL"
	if lxc_ storage show "$pool" >/dev/null 2>&1; then
		say "storage pool '$pool' exists"
	elif [ "$POOL_DRIVER" = btrfs ]; then
		# btrfs on a loop file LXD makes in its disks/ directory (sparse: it takes what is written):
		# an instance is a snapshot of the image's volume, not a copy of the image (1.6-2 s to
		# launch a 100 MB image here, 7 s on dir). It needs the kernel's btrfs and btrfs-progs.
		say "creating storage pool '$pool' (driver btrfs, loop file${POOL_SIZE:+ of $POOL_SIZE})"
		if ! out=$(lxc_ storage create "$pool" btrfs ${POOL_SIZE:+size="$POOL_SIZE"} 2>&1); then
			# CI tests the pool the charm would choose; elsewhere dir still runs every test but
			# the image-volume one, slowly.
			[ "${CI:-}" != true ] || die "cannot create btrfs pool '$pool': $out"
			say "WARNING: cannot create btrfs pool '$pool' ($out); creating it with dir: every container copies its image"
			lxc_ storage create "$pool" dir >/dev/null
		fi
	else
		say "creating storage pool '$pool' (driver $POOL_DRIVER)"
		lxc_ storage create "$pool" "$POOL_DRIVER" >/dev/null
	fi
	say "adding root disk (pool '$pool') to the default profile"
	lxc_ profile device add default root disk path=/ pool="$pool" >/dev/null
fi

nic_dev=$(profile_dev nic)
if [ -n "$nic_dev" ]; then
	net=$(profile_dev_key "$nic_dev" network)
	[ -n "$net" ] || net=$(profile_dev_key "$nic_dev" parent)
	say "default profile has NIC '$nic_dev' on network '$net'"
else
	net="$BRIDGE"
	if lxc_ network show "$net" >/dev/null 2>&1; then
		say "network '$net' exists"
	else
		say "creating bridge '$net' with ipv4.address=$BRIDGE_CIDR (no IPv6)"
		lxc_ network create "$net" ipv4.address="$BRIDGE_CIDR" ipv4.nat=true ipv6.address=none >/dev/null
	fi
	say "adding NIC eth0 (network '$net') to the default profile"
	lxc_ profile device add default eth0 nic name=eth0 network="$net" >/dev/null
fi
bridge_cidr=$(lxc_ network get "$net" ipv4.address 2>/dev/null || true)
case "$bridge_cidr" in
*.*/*) ;;
*) die "network '$net' has no IPv4 address (ipv4.address='$bridge_cidr'); containers need DHCP on it" ;;
esac
bridge_ip="${bridge_cidr%/*}"
say "bridge '$net' at $bridge_ip"

# ---------------------------------------------------------------- 4. base image
# A busybox-static userland (about 1 MB): sh, wget, tar, gzip, sha256sum, poweroff, ...
# busybox init is PID 1: /etc/init.d/rcS gets a DHCP lease on eth0, then starts, in the
# background, the boot scripts /etc/boot.d/* and a "#!" script given as the instance config
# key user.user-data (rendered into the image by an LXD template, like cloud-init's NoCloud
# seed). `poweroff`/`halt` make init end the container, so LXD reports it Stopped; `lxc stop`
# (SIGPWR to init) works too.
build_image() { # build_image DIR: writes DIR/image.tar.gz
	local d="$1" r="$1/rootfs" a
	rm -rf "$d"
	mkdir -p "$r" "$d/templates"
	mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc/init.d,etc/boot.d,dev,proc,sys,run,root,home/ubuntu,var/log,var/lib/cloud/seed/nocloud-net,usr/share/udhcpc,opt,mnt}
	mkdir -p "$r/tmp" "$r/var/tmp"
	chmod 1777 "$r/tmp" "$r/var/tmp"
	chmod 700 "$r/root"
	ln -s ../run "$r/var/run"
	cp /bin/busybox "$r/bin/busybox"
	# --list-full gives each applet's usual place (sbin/init, usr/bin/env, ...), so shebangs
	# like #!/usr/bin/env work. One perl (Essential in Debian) makes all ~400 links: a fork
	# of ln per applet takes seconds.
	local applets
	applets=$(/bin/busybox --list-full | grep -vx bin/busybox)
	for a in sh wget tar gzip sha256sum poweroff halt reboot init udhcpc ip; do
		# Not `busybox --list | grep -q`: grep -q exits early, busybox gets SIGPIPE, and
		# pipefail turns that into a spurious failure.
		case $'\n'"$applets"$'\n' in
		*/"$a"$'\n'*) ;;
		*) die "busybox-static lacks applet '$a'" ;;
		esac
	done
	# shellcheck disable=SC2086 # one applet path per word
	(cd "$r" && perl -e 'for (@ARGV) { -e $_ or symlink("/bin/busybox", $_) or die "$_: $!\n" }' $applets)

	cat >"$r/etc/inittab" <<'EOF'
# busybox init. No respawn/askfirst lines: after sysinit, init just reaps and waits for a
# signal (SIGUSR2 from `poweroff`, SIGUSR1 from `halt`, SIGPWR from `lxc stop`).
::sysinit:/etc/init.d/rcS
::shutdown:/etc/init.d/rcK
EOF
	cat >"$r/etc/init.d/rcS" <<'EOF'
#!/bin/sh
# Boot: loopback, DHCP on eth0 (wait for the lease, bounded, so boot scripts have a network),
# then boot scripts in the background so init is free to handle signals.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec >>/var/log/boot.log 2>&1
echo "rcS: boot at $(date)"
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
	# -b: after the first lease (or 10 tries) go on in the background, renewing the lease.
	udhcpc -b -i eth0 -t 10 -T 1 -A 1 -p /run/udhcpc.eth0.pid -s /usr/share/udhcpc/default.script
fi
setsid /etc/init.d/boot-scripts </dev/null >>/var/log/boot.log 2>&1 &
EOF
	cat >"$r/etc/init.d/boot-scripts" <<'EOF'
#!/bin/sh
# Runs every executable /etc/boot.d/* at every boot, in order, each logging to
# /var/log/boot.d/NAME.log; then the user-data script (if it starts with "#!") once per
# instance, logging to /var/log/user-data.log (like cloud-init's scripts-user).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /var/log/boot.d
for f in /etc/boot.d/*; do
	[ -f "$f" ] && [ -x "$f" ] || continue
	echo "boot-scripts: running $f"
	"$f" >>"/var/log/boot.d/${f##*/}.log" 2>&1
	echo "boot-scripts: $f exited $?"
done
u=/var/lib/cloud/seed/nocloud-net/user-data
if [ -s "$u" ] && [ "$(head -c 2 "$u")" = "#!" ] && [ ! -e /var/lib/cloud/user-data.done ]; then
	: >/var/lib/cloud/user-data.done
	cp "$u" /var/lib/cloud/user-data.sh
	chmod 0700 /var/lib/cloud/user-data.sh
	echo "boot-scripts: running user-data"
	/var/lib/cloud/user-data.sh >>/var/log/user-data.log 2>&1
	echo "boot-scripts: user-data exited $?"
fi
EOF
	cat >"$r/etc/init.d/rcK" <<'EOF'
#!/bin/sh
echo "rcK: shutdown at $(date)" >>/var/log/boot.log
sync
EOF
	cat >"$r/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
# udhcpc hook: apply the lease (address, default route, DNS).
case "$1" in
deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
bound | renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	[ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
	: >/etc/resolv.conf
	[ -n "$domain" ] && echo "search $domain" >>/etc/resolv.conf
	for s in $dns; do echo "nameserver $s" >>/etc/resolv.conf; done
	;;
esac
exit 0
EOF
	chmod 0755 "$r/etc/init.d/rcS" "$r/etc/init.d/rcK" "$r/etc/init.d/boot-scripts" "$r/usr/share/udhcpc/default.script"

	cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
ubuntu:x:1000:1000:ubuntu:/home/ubuntu:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
	cat >"$r/etc/group" <<'EOF'
root:x:0:
ubuntu:x:1000:
nogroup:x:65534:
EOF
	printf 'root:*:19000:0:99999:7:::\nubuntu:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' >"$r/etc/shadow"
	chmod 0640 "$r/etc/shadow"
	chown 1000:1000 "$r/home/ubuntu"
	printf '127.0.0.1 localhost\n::1 localhost\n' >"$r/etc/hosts"
	: >"$r/etc/resolv.conf"
	printf 'NAME="%s"\nID=%s\nVERSION_ID="%s"\nPRETTY_NAME="%s (busybox %s)"\n' \
		"$ALIAS" "$ALIAS" "$recipe" "$ALIAS" "$busybox_version" >"$r/etc/os-release"

	# LXD renders these templates into the rootfs. user-data: at create and at every start,
	# so it can be set after create too (the script itself still runs once per instance).
	echo '{{ container.name }}' >"$d/templates/hostname.tpl"
	echo '{{ config_get("user.user-data", "") }}' >"$d/templates/user-data.tpl"
	cat >"$d/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: github-runner test base (busybox-static $busybox_version, busybox init, DHCP)
  os: busybox
  release: "$busybox_version"
  recipe: "$recipe"
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /var/lib/cloud/seed/nocloud-net/user-data:
    when: [create, copy, start]
    template: user-data.tpl
EOF
	# --numeric-owner keeps root:root and ubuntu's 1000:1000 as built.
	tar -C "$d" --numeric-owner -czf "$d/image.tar.gz" metadata.yaml templates rootfs
}

busybox_version=$(/bin/busybox | sed -n '1s/^BusyBox v\([^ ]*\).*/\1/p')
# The recipe hash changes whenever build_image or the busybox binary changes, and then the
# image is rebuilt; otherwise an existing image is kept.
recipe=$({
	declare -f build_image
	sha256sum /bin/busybox
} | sha256sum | cut -c1-16)
have=$(lxc_ image show "$ALIAS" 2>/dev/null | sed -n 's/^ *recipe: *"\{0,1\}\([0-9a-f]*\)"\{0,1\}$/\1/p' || true)
if [ "$have" = "$recipe" ]; then
	say "image '$ALIAS' up to date (recipe $recipe)"
else
	say "building image '$ALIAS' (recipe $recipe, busybox $busybox_version)"
	img_dir=$(mktemp -d /var/tmp/github-runner-test-base.XXXXXX)
	build_image "$img_dir"
	old=$(lxc_ image info "$ALIAS" 2>/dev/null | sed -n 's/^Fingerprint: *//p' || true)
	[ -z "$old" ] || lxc_ image alias delete "$ALIAS" >/dev/null
	lxc_ image import "$img_dir/image.tar.gz" --alias "$ALIAS" >/dev/null
	[ -z "$old" ] || lxc_ image delete "$old" >/dev/null || say "note: could not delete old image $old"
	rm -rf "$img_dir"
fi
fingerprint=$(lxc_ image info "$ALIAS" | sed -n 's/^Fingerprint: *//p')
say "image '$ALIAS' = ${fingerprint:0:12}"

# ---------------------------------------------------------------- 5. smoke test
# Boot a container whose user-data fetches a file over HTTP from the host's bridge IP and
# powers off; LXD must then report it Stopped, and the file must be in it.
if [ "$SKIP_SMOKE" = 1 ]; then
	say "smoke test skipped (LXD_TEST_SKIP_SMOKE=1)"
else
	smoke="lxdtest-setup-smoke-$$"
	www=$(mktemp -d /tmp/github-runner-lxd-smoke.XXXXXX)
	httpd_pid=""
	cleanup() {
		[ -z "$httpd_pid" ] || kill "$httpd_pid" 2>/dev/null || true
		# LXD refuses to delete while it still runs an operation on the instance (a failed
		# start, a stop after poweroff): retry for a while.
		for _ in $(seq 30); do
			timeout 60 lxc delete -f "$smoke" >/dev/null 2>&1 && break
			timeout 10 lxc query "/1.0/instances/$smoke" >/dev/null 2>&1 || break
			sleep 1
		done
		rm -rf "$www"
	}
	trap cleanup EXIT
	token="smoke-$$-$RANDOM"
	echo "$token" >"$www/token"
	# Bind the bridge IP only: reachable from containers, not from anywhere else. Pick a free
	# port by trying a few; busybox httpd exits at once if the bind fails.
	for _ in 1 2 3 4 5; do
		port=$((20000 + RANDOM % 20000))
		/bin/busybox httpd -f -p "$bridge_ip:$port" -h "$www" 9>&- &
		httpd_pid=$!
		sleep 0.2
		alive "$httpd_pid" && break
		httpd_pid=""
	done
	[ -n "$httpd_pid" ] || die "cannot start busybox httpd on $bridge_ip"
	say "smoke: launching $smoke; its user-data fetches http://$bridge_ip:$port/token then powers off"
	lxc_ init "$ALIAS" "$smoke" -c user.user-data="#!/bin/sh
wget -q -O /root/token http://$bridge_ip:$port/token
poweroff" >/dev/null
	lxc_ start "$smoke" >/dev/null # it prints a progress line ("Remapping container filesystem")
	status=""
	for _ in $(seq 600); do # at most ~60 s
		status=$(lxc_ list "^$smoke\$" -c s --format csv)
		[ "$status" = STOPPED ] && break
		sleep 0.1
	done
	if [ "$status" != STOPPED ]; then
		lxc_ exec "$smoke" -- cat /var/log/boot.log /var/log/user-data.log >&2 || true
		die "smoke: $smoke still $status 60 s after start; boot script or poweroff broken"
	fi
	say "smoke: $smoke powered itself off; LXD reports STOPPED"
	got=$(lxc_ file pull "$smoke/root/token" - 2>/dev/null || true)
	[ "$got" = "$token" ] || die "smoke: container did not fetch the token over HTTP (got '$got')"
	say "smoke: container fetched the token from the host over the bridge"
	lxc_ delete "$smoke" >/dev/null
	trap - EXIT
	cleanup
fi

if pid=$(our_pid); then who="pid $pid, stop with tests/lxd/stop.sh"; else who="not started by this script"; fi
say "DONE: lxd $version ($who), pool '$pool', bridge '$net' $bridge_ip, image '$ALIAS'"

# ---------------------------------------------------------------- 6. Debian image
# The Debian bookworm image with systemd and real cloud-init that the Debian tests and benchmarks
# use (tests/lxd/debian.sh: cached by its recipe, so a re-run takes seconds; the first build about
# 3 min). LXD_TEST_SKIP_DEBIAN=1 skips it.
if [ "${LXD_TEST_SKIP_DEBIAN:-0}" = 1 ]; then
	say "Debian image skipped (LXD_TEST_SKIP_DEBIAN=1)"
else
	"$(dirname "${BASH_SOURCE[0]}")/debian.sh"
fi
