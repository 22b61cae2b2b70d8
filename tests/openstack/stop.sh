#!/bin/bash
# Stop every service tests/openstack/setup.sh started, by the PIDs in its run/ directory (each
# service runs in its own session, so the whole process group is signalled: uwsgi workers, the
# Erlang VM under the rabbitmq-server script, eventlet workers). Never by process name.
# Data (MariaDB, RabbitMQ, /var/lib/{glance,nova,neutron}) is kept: setup.sh starts it all again.
#
#   sudo bash tests/openstack/stop.sh
set -euo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
S=${OPENSTACK_TEST_DIR:-/var/lib/openstack-test}
RUN=$S/run

# stop NAME SECONDS: TERM the process group, wait, then KILL what is left of it.
stop() {
  local name=$1 secs=$2 f=$RUN/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(($(date +%s) + secs))
    while kill -0 "$pid" 2>/dev/null || kill -0 -- "-$pid" 2>/dev/null; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "stop.sh: $name (pid $pid) did not stop within ${secs}s: killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
    echo "stop.sh: stopped $name (pid $pid)"
  fi
  rm -f "$f" "$RUN/$name.sum"
}

# Clients before servers: compute first, the message bus and the database last, so nothing
# spends its shutdown retrying connections to a service that is already gone.
for n in nova-compute nova-api nova-conductor nova-scheduler neutron glance placement keystone; do
  stop $n 30
done
stop rabbitmq 60
stop epmd 10
stop mariadb 60

left=$(ss -Hltn | grep -E '127\.0\.0\.1:(5000|8774|8778|9292|9696|3306|5672|25672|4369)\b' || true)
if [ -n "$left" ]; then
  echo "stop.sh: still listening (not started by setup.sh, or did not stop):" >&2
  echo "$left" >&2
  exit 1
fi
echo "stop.sh: all stopped"
