#!/bin/sh
# github-runner-start USER DIR: run as root, once, on a runner server (its
# user-data starts it). Runs the runner application in DIR as USER with the
# JIT config the user-data wrote, then powers the server off so the manager
# deletes it. The JIT config never enters argv: the runner reads it from
# ACTIONS_RUNNER_INPUT_JITCONFIG, its environment spelling of --jitconfig,
# set for the runner process alone (which removes it from its environment).
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
	poweroff || shutdown -h now || halt
	exit 0
}

[ -s "$jit" ] || stop "no JIT config at $jit"
if [ -f "$environment" ]; then
	set -a
	# shellcheck source=/dev/null
	. "$environment"
	set +a
	# For every other process of the server, like login shells.
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
[ -x "$app/run.sh" ] || stop "no runner application at $app (the image must have it)"
home=$(getent passwd "$user" | cut -d: -f6)
say "starting the runner in $app as $user"
cd "$app" || stop "cannot enter $app"
ACTIONS_RUNNER_INPUT_JITCONFIG=$config HOME=${home:-/home/$user} su -p -s /bin/sh "$user" -c "cd '$app' && exec ./run.sh"
code=$?
unset config
stop "the runner exited with status $code"
