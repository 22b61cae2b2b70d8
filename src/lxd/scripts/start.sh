#!/bin/sh
# github-runner-start: run as root at the runner instance's first boot (from
# its user-data). Starts the instance's one ephemeral runner with the JIT
# config the manager wrote, then powers the instance off so the manager can
# delete it. The JIT config never enters argv: the runner reads it from
# ACTIONS_RUNNER_INPUT_JITCONFIG, its environment spelling of --jitconfig,
# set for the runner process alone.
exec >>/var/log/github-runner.log 2>&1
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
jit=/var/lib/github-runner/jit-config
environment=/etc/github-runner/environment
user=ubuntu
app=/home/$user/actions-runner

say() { printf '%s github-runner-start: %s\n' "$(date -u '+%Y-%m-%dT%H:%M:%SZ')" "$*"; }
stop() {
	say "$1; powering off"
	sync
	poweroff || halt
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
say "starting the runner as $user"
cd "$app" || stop "no runner application at $app"
ACTIONS_RUNNER_INPUT_JITCONFIG=$config HOME=/home/$user su -p -s /bin/sh "$user" -c "cd '$app' && exec ./run.sh"
code=$?
unset config
stop "the runner exited with status $code"
