#!/bin/sh
# run.sh of the fake GitHub Actions runner application (github-runner-charm
# tests/fakegithub). Like GitHub's, it hands over to bin/Runner.Listener:
#   ./run.sh --jitconfig <encoded_jit_config>
#   ./run.sh                  (after ./config.sh)
RUNNER_ROOT=$(cd "$(dirname "$0")" && pwd) || exit 1
exec "$RUNNER_ROOT/bin/Runner.Listener" run "$@"
