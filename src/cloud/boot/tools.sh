#!/bin/sh
# tools.sh: run as root in the image builder after install.sh, with the
# unit's proxies in the environment. Installs the tools jobs expect.
# (Filled in by the runner-images work: Docker, git, curl, ...)
set -eu
echo "tools: nothing to install yet"
