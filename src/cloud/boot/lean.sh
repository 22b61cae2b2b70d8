#!/bin/sh
# lean.sh: run as root in the image builder after tools.sh, on both clouds
# (LXD's builder container, OpenStack's builder server). Takes out of a
# runner's boot what a runner, which lives for one job, does not need, so
# that it listens sooner and parallel boots share the CPU with less:
#
# - timers and services of long-lived machines (apt's daily update and
#   upgrade, unattended-upgrades, e2scrub, fstrim, man-db, dpkg's backup,
#   Ubuntu's motd and advantage timers): masked, so nothing starts them;
# - on Ubuntu, the wait for snapd's seeding, which multi-user.target (and
#   so cloud-init's final stage, the runner's start) would wait for; snapd
#   itself stays, and seeds on its own;
# - cloud-init's modules that do work unconditionally and a runner never
#   uses (locale, grub-dpkg, set-passwords, the key fingerprints on the
#   console, host key generation where no sshd is installed): left out. The
#   config stage's remaining modules (runcmd, apt, ntp, ...) run at the
#   start of the final stage instead, and the config stage's service is
#   masked: one cloud-init process less on the path to the user-data
#   (scripts-user, which starts the runner, is kept, as are the datasource,
#   growpart/resizefs, users-groups: sudo for the runner user on Ubuntu);
# - the builder's machine id: emptied, so that each runner gets its own
#   (DHCP client ids, journald) instead of all sharing the builder's.
#
# Kept on purpose: the *-wait-online service (the runner reaches GitHub at
# once: the network must be up), systemd-resolved, Docker, udev, sshd and
# its host keys where sshd is installed.
#
# POSIX sh. Without systemd or cloud-init (the busybox test base) it changes
# nothing and says what it skipped.
set -eu

say() { printf 'lean-boot: %s\n' "$*"; }

units=/etc/systemd/system
# unit_exists UNIT: the unit is installed (in one of systemd's unit paths).
unit_exists() {
	for dir in /etc/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
		[ -e "$dir/$1" ] && return 0
	done
	return 1
}

# mask UNIT...: nothing starts the units that are installed, as `systemctl
# mask` does (without needing the running manager).
mask() {
	for unit in "$@"; do
		unit_exists "$unit" || continue
		if [ -f "$units/$unit" ] && [ ! -L "$units/$unit" ]; then
			say "not masking $unit: $units/$unit is a unit file of its own"
			continue
		fi
		ln -sf /dev/null "$units/$unit"
		say "masked $unit"
	done
}

if [ -d /run/systemd/system ] || [ -d "$units" ]; then
	mkdir -p "$units"
	mask apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service \
		unattended-upgrades.service e2scrub_all.timer e2scrub_all.service e2scrub_reap.service \
		fstrim.timer fstrim.service man-db.timer man-db.service dpkg-db-backup.timer dpkg-db-backup.service \
		motd-news.timer motd-news.service update-notifier-download.timer update-notifier-motd.timer \
		ua-timer.timer apt-news.service esm-cache.service fwupd-refresh.timer \
		snapd.seeded.service
else
	say "no systemd: no units to mask"
fi

# cloud-init: the module lists of the image's own cloud.cfg, less what a
# runner does not use, in a cloud.cfg.d file that comes after the others.
lean_cfg=/etc/cloud/cloud.cfg.d/95-github-runner-lean.cfg
if command -v cloud-init >/dev/null 2>&1 && [ -f /etc/cloud/cloud.cfg ] && command -v python3 >/dev/null 2>&1; then
	sshd=no
	if [ -x /usr/sbin/sshd ]; then sshd=yes; fi
	python3 - "$lean_cfg" "$sshd" <<'LEAN_CLOUD_CFG'
import glob, json, sys

import yaml  # cloud-init's own dependency

path, sshd = sys.argv[1], sys.argv[2] == "yes"
# cloud.cfg, then the cloud.cfg.d files before this one, as cloud-init
# merges them: a later file's list replaces an earlier one's.
cfg = {}
for source in ["/etc/cloud/cloud.cfg"] + sorted(glob.glob("/etc/cloud/cloud.cfg.d/*.cfg")):
    if source >= path:
        continue
    with open(source) as f:
        cfg.update({k: v for k, v in (yaml.safe_load(f) or {}).items() if k.endswith("_modules")})

def name(module):
    # A module is "name" or [name, frequency]; "-" and "_" are one.
    return (module[0] if isinstance(module, list) else module).replace("-", "_")

# Work done on every first boot that a one-job runner never uses.
drop = {
    "locale", "grub_dpkg", "keyboard", "byobu", "set_passwords", "ssh_import_id",
    "ssh_authkey_fingerprints", "keys_to_console", "fan", "landscape", "lxd",
    "puppet", "chef", "mcollective", "salt_minion", "reset_rmc",
    "refresh_rmc_and_interface", "rightscale_userdata", "ubuntu_autoinstall",
}
if not sshd:
    drop.add("ssh")  # host keys for a server that is not installed

def keep(section):
    return [m for m in cfg.get(section) or [] if name(m) not in drop]

lean = {
    "cloud_init_modules": keep("cloud_init_modules"),
    # The config stage's service is masked: its modules run first thing
    # in the final stage, before the user-data scripts.
    "cloud_config_modules": [],
    "cloud_final_modules": keep("cloud_config_modules") + keep("cloud_final_modules"),
}
if not any(name(m) == "scripts_user" for m in lean["cloud_final_modules"]):
    sys.exit("lean-boot: the image's cloud.cfg runs no scripts_user: the user-data would not start the runner")
with open(path, "w") as f:
    f.write("# Written by the github-runner image build (lean.sh): what a runner's first boot runs.\n")
    json.dump(lean, f, indent=1)
    f.write("\n")
for section in ("cloud_init_modules", "cloud_final_modules"):
    print("lean-boot: %s: %s" % (section, " ".join(name(m) for m in lean[section])))
LEAN_CLOUD_CFG
	say "wrote $lean_cfg"
	if [ -d "$units" ]; then mask cloud-config.service; fi
else
	say "no cloud-init: no modules to trim"
fi

# Each runner's own machine id, made at its first boot (an empty file, as
# in distribution images: systemd fills it in).
if [ -s /etc/machine-id ] && [ -d "$units" ]; then
	: >/etc/machine-id
	# D-Bus's copy, unless it is the usual link to /etc/machine-id.
	[ -L /var/lib/dbus/machine-id ] || rm -f /var/lib/dbus/machine-id
	say "emptied /etc/machine-id"
fi
say "done"
