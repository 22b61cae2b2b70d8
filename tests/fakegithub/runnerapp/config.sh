#!/bin/sh
# config.sh of the fake GitHub Actions runner application (github-runner-charm
# tests/fakegithub). Like GitHub's, it hands over to bin/Runner.Listener:
#   ./config.sh --url <fake>/<owner>/<repo>|<fake>/<org> --token <registration token>
#               [--name N] [--labels a,b] [--work DIR] [--ephemeral] [--unattended]
#   ./config.sh remove [--token <remove token>]
RUNNER_ROOT=$(cd "$(dirname "$0")" && pwd) || exit 1
if [ "$(id -u)" = 0 ] && [ -z "${RUNNER_ALLOW_RUNASROOT:-}" ]; then
	echo "Must not run with sudo" >&2
	exit 1
fi
if [ "${1:-}" = remove ]; then
	shift
	exec "$RUNNER_ROOT/bin/Runner.Listener" remove "$@"
fi
exec "$RUNNER_ROOT/bin/Runner.Listener" configure "$@"
