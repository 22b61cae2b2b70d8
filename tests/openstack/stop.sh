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

# group_alive PID: the leader or any process of its group is still there.
group_alive() { kill -0 "$1" 2>/dev/null || kill -0 -- "-$1" 2>/dev/null; }

# stop SECONDS NAME...: TERM the process groups of all NAMEs at once (their shutdowns overlap),
# wait up to SECONDS for all of them, then KILL whatever is left.
stop() {
  local secs=$1 name pid; shift
  local -A pids=()
  for name in "$@"; do
    [ -f "$RUN/$name.pid" ] || continue
    pid=$(cat "$RUN/$name.pid")
    if group_alive "$pid"; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      pids[$name]=$pid
    fi
    rm -f "$RUN/$name.pid" "$RUN/$name.sum"
  done
  local deadline=$((SECONDS + secs))
  for name in "${!pids[@]}"; do
    pid=${pids[$name]}
    while group_alive "$pid"; do
      if [ "$SECONDS" -ge "$deadline" ]; then
        echo "stop.sh: $name (pid $pid) did not stop within ${secs}s: killing it" >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        break
      fi
      sleep 0.2
    done
    echo "stop.sh: stopped $name (pid $pid)"
  done
}

# Clients before servers: the OpenStack services first, then the message bus, the database last,
# so nothing spends its shutdown retrying connections to a service that is already gone.
stop 30 nova-compute nova-api nova-conductor nova-scheduler neutron glance placement keystone
stop 60 rabbitmq
stop 10 epmd
stop 60 mariadb

left=$(ss -Hltn | grep -E '127\.0\.0\.1:(5000|8774|8778|9292|9696|3306|5672|25672|4369)\b' || true)
if [ -n "$left" ]; then
  echo "stop.sh: still listening (not started by setup.sh, or did not stop):" >&2
  echo "$left" >&2
  exit 1
fi
echo "stop.sh: all stopped"
