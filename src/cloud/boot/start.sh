#!/bin/sh
# github-runner-start [USER [DIR]]: run as root, once, at a runner instance's
# first boot (its user-data starts it). Runs the runner application in DIR
# (default /home/ubuntu/actions-runner) as USER (default ubuntu) with the JIT
# config the manager put in the instance, then powers the instance off so the
# manager deletes it. The JIT config never enters argv: the runner reads it
# from ACTIONS_RUNNER_INPUT_JITCONFIG, its environment spelling of
# --jitconfig, set for the runner process alone (which removes it from its
# environment). The file is deleted as soon as it is read.
exec >>/var/log/github-runner.log 2>&1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
jit=/var/lib/github-runner/jit-config
environment=/etc/github-runner/environment
user=${1:-ubuntu}
app=${2:-/home/ubuntu/actions-runner}

say() { printf '%s github-runner-start: %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$*"; }
stop() {
	say "$1; powering off"
	sync
	# At once (-f): the instance is deleted next, so an orderly shutdown
	# (seconds of stopping services) only delays its replacement.
	poweroff -f || poweroff || shutdown -h now || halt
	exit 0
}

# A VM's files arrive through its agent after boot: wait, bounded.
tries=0
until [ -s "$jit" ]; do
	tries=$((tries + 1))
	[ "$tries" -le 600 ] || stop "no JIT config at $jit after 10 minutes"
	sleep 1
done

if [ -f "$environment" ]; then
	set -a
	# shellcheck source=/dev/null
	. "$environment"
	set +a
	# For every other process of the instance, like login shells.
	if ! grep -q '^# github-runner' /etc/environment 2>/dev/null; then
		{
			echo '# github-runner: proxies and mirror'
			grep -v '^#' "$environment"
		} >>/etc/environment
	fi
fi

config=$(cat "$jit") || stop "cannot read $jit"
# The config is good for one connection; nothing needs the file again.
rm -f "$jit"
[ -x "$app/run.sh" ] || stop "no runner application at $app"
home=$(getent passwd "$user" 2>/dev/null | cut -d: -f6)
say "starting the runner in $app as $user"
cd "$app" || stop "cannot enter $app"
ACTIONS_RUNNER_INPUT_JITCONFIG=$config HOME=${home:-/home/$user} su -p -s /bin/sh "$user" -c "cd '$app' && exec ./run.sh"
code=$?
unset config
stop "the runner exited with status $code"
