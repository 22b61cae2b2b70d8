#!/bin/bash
# Stand up the real-OpenStack test bed: Keystone + Glance + Placement + Nova (fake virt driver) +
# Neutron (ML2 with an agent-less "fakebind" mechanism driver), on MariaDB + RabbitMQ, all from
# Debian 12 packages (OpenStack Zed), every listener on 127.0.0.1, no systemd, no KVM, no PyPI.
# See /work/shared/reference/openstack-probe.md for why each piece is the way it is.
#
#   sudo bash tests/openstack/setup.sh        # bare machine ~5 min (apt ~4); re-run 5-15 s (40-60 s after stop.sh)
#   sudo bash tests/openstack/stop.sh         # stop every service it started (data is kept)
#
# Afterwards:
#   clouds.yaml   /etc/openstack-test/clouds.yaml (0600; OPENSTACK_TEST_CLOUDS_YAML overrides)
#                 clouds: testcloud (user runner-test, member of project runner-test),
#                         testcloud-appcred (application credential of that user),
#                         testcloud-admin (admin, for admin-only calls)
#   fixtures      flavor runner-small (2 vCPU, 2 GiB, 10 GiB), flavor runner-unschedulable
#                 (NoValidHost -> ERROR), image runner-image, network runner-net (+ runner-net-subnet)
#   state         /var/lib/openstack-test (OPENSTACK_TEST_DIR overrides): log/ (every service's log),
#                 run/ (PID files), secret (the one password, 0600)
#   environment   OPENSTACK_TEST_OWNER=user[:group] chowns clouds.yaml, for tests run as non-root.
#
# Idempotent: every service already running with the same config is left alone, one-time
# initialisation (db syncs, bootstrap) is recorded in the database itself, fixtures are
# find-or-create. Every wait is bounded; on failure the failing service's log tail is printed.
# -E: the ERR trap (which prints the failing service's log) also fires inside functions.
set -Eeuo pipefail

# Debian's /usr/bin/python3 must run everything: the machine has pyenv shims first in PATH, and a
# pyenv python has none of the OpenStack modules. The console scripts say #!/usr/bin/python3, but
# anything started as "python3" or "uwsgi --plugins python3" follows PATH/PYTHON* variables.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP PYENV_VERSION PYENV_ROOT PYENV_DIR VIRTUAL_ENV
PY=/usr/bin/python3
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 LANG=C.UTF-8

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
S=${OPENSTACK_TEST_DIR:-/var/lib/openstack-test}
LOG=$S/log
RUN=$S/run
CLOUDS_YAML=${OPENSTACK_TEST_CLOUDS_YAML:-/etc/openstack-test/clouds.yaml}

# Names the Go helper (tests/openstacktest) hard-codes as constants: change both together.
CLOUD=testcloud
CLOUD_ADMIN=testcloud-admin
CLOUD_APPCRED=testcloud-appcred
export BED_PROJECT=runner-test BED_USER=runner-test BED_APPCRED=runner-test
export BED_FLAVOR=runner-small BED_FLAVOR_UNSCHEDULABLE=runner-unschedulable
export BED_IMAGE=runner-image BED_NETWORK=runner-net BED_CIDR=10.10.0.0/24
export BED_CLOUD=$CLOUD BED_ADMIN_CLOUD=$CLOUD_ADMIN

PACKAGES=(keystone glance-api placement-api nova-api nova-conductor nova-scheduler python3-nova
  neutron-server python3-openstackclient python3-openstacksdk mariadb-server rabbitmq-server
  uwsgi-plugin-python3 curl eatmydata)

if [ "$(id -u)" != 0 ]; then
  echo "setup.sh: must run as root (it installs packages and starts MariaDB/RabbitMQ/OpenStack)" >&2
  exit 1
fi
mkdir -p "$LOG" "$RUN"

############################################################################ helpers
T0=$(date +%s)
PHASE=""
PHASE_T=$T0
PHASE_LOG=""   # the log to show if this phase fails
phase() {      # phase NAME: print how long the previous phase took, start timing the next one
  local now; now=$(date +%s)
  [ -n "$PHASE" ] && printf 'setup.sh: %-28s %4ss\n' "$PHASE" $((now - PHASE_T))
  PHASE=$1 PHASE_T=$now PHASE_LOG=""
}
show_log() {   # show_log FILE...: the tail of each file that exists
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "----- last 40 lines of $f" >&2
    tail -n 40 "$f" >&2
  done
}
die() {        # die MESSAGE [LOG...]
  local msg=$1; shift
  echo "setup.sh: FAILED in phase '$PHASE': $msg" >&2
  show_log "$@"
  echo "setup.sh: all logs are in $LOG" >&2
  exit 1
}
on_err() {     # any command failing under set -e ends up here
  trap - ERR
  echo "setup.sh: FAILED in phase '$PHASE': command at line $1 exited $2" >&2
  # shellcheck disable=SC2086 # PHASE_LOG is a list of files
  show_log $PHASE_LOG
  echo "setup.sh: all logs are in $LOG" >&2
  exit 1
}
trap 'on_err $LINENO $?' ERR

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# start NAME CONFIG_FILES CMD...: run CMD detached (own session, so stop.sh can signal the whole
# process group), stdout/stderr to $LOG/NAME.out, PID in $RUN/NAME.pid. If it already runs with
# the same config files (hashed), leave it alone; if the config changed, restart it.
start() {
  local name=$1 confs=$2; shift 2
  local sum
  # shellcheck disable=SC2086 # confs is a space-separated list of files
  sum=$(cat $confs /dev/null | sha256sum | cut -d' ' -f1)
  if alive "$name"; then
    if [ "$(cat "$RUN/$name.sum" 2>/dev/null)" = "$sum" ]; then
      return 0
    fi
    echo "setup.sh: $name: config changed, restarting"
    stop_one "$name"
  fi
  STARTED=1
  setsid "$@" > "$LOG/$name.out" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  echo "$sum" > "$RUN/$name.sum"
}
stop_one() {   # same logic as stop.sh, for a config-change restart
  local pid; pid=$(cat "$RUN/$1.pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$RUN/$1.pid" "$RUN/$1.sum"
}

# service_log NAME: the log file the service writes itself (next to $LOG/NAME.out, its stdout).
service_log() {
  case $1 in
    glance) echo "$LOG/glance-api.log" ;;
    neutron) echo "$LOG/neutron-server.log" ;;
    rabbitmq) echo "$LOG/rabbitmq.out" ;;
    *) echo "$LOG/$1.log" ;;
  esac
}

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds; fail early if NAME's process died.
wait_for() {
  local name=$1 secs=$2; shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" > /dev/null 2>&1; do
    if [ -f "$RUN/$name.pid" ] && ! alive "$name"; then
      die "$name exited (see its log)" "$LOG/$name.out" "$(service_log "$name")"
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      die "$name did not answer within ${secs}s ($*)" "$LOG/$name.out" "$(service_log "$name")"
    fi
    sleep 0.5
  done
}
http_ok() { curl -s -o /dev/null --max-time 5 "$1"; }   # any HTTP answer means the API is up
listening() { ss -Hltn "sport = :$1" | grep -q .; }
port_free() { ! listening "$1"; }
# A port held by something we did not start (another stack, a leftover) would make our service
# fail obscurely: say so up front.
need_port() {  # need_port NAME PORT
  if ! alive "$1" && ! port_free "$2"; then
    die "port 127.0.0.1:$2 is already taken by a process setup.sh did not start: $(ss -Hltnp "sport = :$2" | head -1)"
  fi
}

# SQL goes in on stdin, so the passwords in it never show up in the process list.
sql() { timeout 60 mysql --connect-timeout=10 -N -B <<< "$1"; }
# One-time steps (db syncs, bootstrap) are recorded in the database they initialise, so wiping
# MariaDB's data also forgets them and a later run redoes them.
step_done() { [ -n "$(sql "SELECT 1 FROM openstack_test.steps WHERE name='$1'" 2>/dev/null)" ]; }
mark_done() { sql "INSERT IGNORE INTO openstack_test.steps VALUES ('$1')"; }

# bg_sync NAME LOGFILE CMD...: unless done before, run the one-time step CMD in the background
# (bounded by timeout); join_sync NAME waits for it, fails with its log if it failed, records it.
declare -A SYNC_PID=()
bg_sync() {
  local name=$1 log=$2; shift 2
  step_done "$name" && return 0
  (
    trap - ERR
    set +e
    if [ "$(type -t "$1")" = function ]; then
      # timeout(1) cannot run a shell function: such a function bounds each of its commands.
      (set -e; "$@") > "$log" 2>&1
    else
      timeout 600 "$@" > "$log" 2>&1
    fi
    echo $? > "$RUN/$name.sync-rc"
  ) &
  SYNC_PID[$name]=$!
}
join_sync() {
  local name=$1
  [ -n "${SYNC_PID[$name]:-}" ] || return 0
  wait "${SYNC_PID[$name]}" || true
  local rc; rc=$(cat "$RUN/$name.sync-rc" 2>/dev/null || echo missing)
  rm -f "$RUN/$name.sync-rc"
  unset "SYNC_PID[$name]"
  if [ "$rc" != 0 ]; then
    die "the database sync of $name failed (exit status $rc)" "$LOG/$name"*-manage.out
  fi
  mark_done "$name"
}

# What every service uses to talk to Keystone and to the others: all as admin (a throw-away bed).
authblock() {
  cat <<EOT
auth_type = password
auth_url = http://127.0.0.1:5000/v3
www_authenticate_uri = http://127.0.0.1:5000/v3
project_name = admin
username = admin
password = $PW
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
EOT
}

############################################################################ 1. packages
phase "packages"
PHASE_LOG="$LOG/apt.log"
installed=$(dpkg-query -W -f='${Status} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null |
  grep -c '^install ok installed ' || true)
missing=$((${#PACKAGES[@]} - installed))
if [ "$missing" -gt 0 ]; then
  # Keep maintainer scripts from starting daemons (MariaDB, RabbitMQ, the APIs): we start them
  # ourselves below, on loopback. Restore whatever policy-rc.d was there before, even on failure.
  policy=/usr/sbin/policy-rc.d
  if [ -e $policy ]; then cp -p $policy "$S/policy-rc.d.orig"; fi
  restore_policy() {
    if [ -e "$S/policy-rc.d.orig" ]; then mv "$S/policy-rc.d.orig" $policy; else rm -f $policy; fi
  }
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' > $policy
  chmod 755 $policy
  # DPkg::Lock::Timeout: another job may be running apt at the same time (e.g. installing LXD).
  # Acquire::*: a stalled mirror connection fails and is retried instead of hanging.
  APT=(apt-get -o DPkg::Lock::Timeout=600 -o Acquire::http::Timeout=60 -o Acquire::Retries=3
    -o Dpkg::Options::=--force-unsafe-io -y -q --no-install-recommends)
  echo "setup.sh: installing packages ($missing of ${#PACKAGES[@]} named ones missing) (log: $LOG/apt.log)"
  timeout 900 "${APT[@]}" update > "$LOG/apt.log" 2>&1
  # eatmydata turns dpkg's thousands of fsyncs into no-ops: this is a throw-away machine.
  timeout 900 "${APT[@]}" install eatmydata >> "$LOG/apt.log" 2>&1
  # Every Debian OpenStack debconf question (configure_db, register-endpoint, ...) defaults to
  # "no", so noninteractive needs no preseeding; every config file we use is overwritten below.
  timeout 1800 eatmydata "${APT[@]}" install "${PACKAGES[@]}" >> "$LOG/apt.log" 2>&1
  restore_policy
  trap - EXIT
fi

# The password of every account in the bed (DB, RabbitMQ, Keystone users). Generated once; the
# Go tests read it only from clouds.yaml.
if [ ! -s "$S/secret" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$S/secret")
fi
chmod 600 "$S/secret"
PW=$(cat "$S/secret")
export BED_PASSWORD=$PW

############################################################################ 2. MariaDB
phase "mariadb"
need_port mariadb 3306
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
  # The package's postinst creates the data dir; recreate it if someone wiped only the data.
  PHASE_LOG="$LOG/mariadb-install-db.out"
  timeout 300 mariadb-install-db --user=mysql --datadir=/var/lib/mysql > "$LOG/mariadb-install-db.out" 2>&1
fi
# mariadbd writes its error log after dropping to the mysql user: pre-create it.
touch "$LOG/mariadb.log" && chown mysql: "$LOG/mariadb.log"
start mariadb "" /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port=3306 \
  --max-connections=1000 --log-error="$LOG/mariadb.log"
wait_for mariadb 60 timeout 10 mysqladmin --connect-timeout=2 ping
PHASE_LOG="$LOG/mariadb.log"
sql "CREATE DATABASE IF NOT EXISTS openstack_test;
     CREATE TABLE IF NOT EXISTS openstack_test.steps (name VARCHAR(64) PRIMARY KEY)"
for db in keystone glance nova_api nova nova_cell0 placement neutron; do
  sql "CREATE DATABASE IF NOT EXISTS $db"
done
# The same statements work on first run and on a re-run with a regenerated secret.
for h in localhost 127.0.0.1; do
  sql "CREATE USER IF NOT EXISTS 'os'@'$h' IDENTIFIED BY '$PW';
       ALTER USER 'os'@'$h' IDENTIFIED BY '$PW'; GRANT ALL ON *.* TO 'os'@'$h'"
done
DBURL="mysql+pymysql://os:$PW@127.0.0.1"

############################################################################ 3. RabbitMQ
phase "rabbitmq"
need_port epmd 4369
need_port rabbitmq 5672
cat > /etc/rabbitmq/rabbitmq-env.conf <<'EOT'
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOT
mkdir -p /var/log/rabbitmq && chown rabbitmq: /var/log/rabbitmq
# epmd would otherwise daemonize itself out of our reach (and listen on all addresses): run it in
# the foreground ourselves, so it has a PID file like everything else.
start epmd "" setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
  /usr/bin/epmd -address 127.0.0.1 -port 4369
wait_for epmd 20 listening 4369
# setpriv execs (su would fork and stay around): the PID is the rabbitmq-server script, whose TERM
# trap stops the node cleanly; the Erlang VM is its child in the same process group.
# RABBITMQ_LOGS=-: the node logs to stdout, i.e. into $LOG/rabbitmq.out with everything else.
STARTED=""
start rabbitmq /etc/rabbitmq/rabbitmq-env.conf \
  env HOME=/var/lib/rabbitmq ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_LOGS=- \
  setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
TRANSPORT="rabbit://openstack:$PW@127.0.0.1:5672/"

############################################################################ 4. configs, and the DB schema syncs in the background
# The syncs need only MariaDB; they are slow Python (nova's four take ~30 s), so they run while
# RabbitMQ boots and Keystone is set up. Each service is started once its sync has finished.
phase "configs + db syncs"
############################################################################ 5. Placement config
cat > /etc/placement/placement.conf <<EOT
[DEFAULT]
log_dir = $LOG
log_file = placement.log
[api]
auth_strategy = keystone
[placement_database]
connection = $DBURL/placement
[keystone_authtoken]
$(authblock)
EOT
chmod 640 /etc/placement/placement.conf
bg_sync placement "$LOG/placement-manage.out" placement-manage db sync

############################################################################ 6. Glance config
mkdir -p /var/lib/glance/images /var/lib/glance/staging /var/lib/glance/tasks /var/lib/glance/lock
cat > /etc/glance/glance-api.conf <<EOT
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9292
workers = 1
log_dir = $LOG
log_file = glance-api.log
enabled_backends = fs:file
[database]
connection = $DBURL/glance
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = /var/lib/glance/images
[os_glance_staging_store]
filesystem_store_datadir = /var/lib/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = /var/lib/glance/tasks
[paste_deploy]
flavor = keystone
[oslo_concurrency]
lock_path = /var/lib/glance/lock
[keystone_authtoken]
$(authblock)
EOT
chmod 640 /etc/glance/glance-api.conf
bg_sync glance "$LOG/glance-manage.out" glance-manage db_sync

############################################################################ 7. Neutron config
# No L2 agent can run here, so with the stock drivers ports end up binding_failed and Nova puts
# the server in ERROR. This agent-less ML2 mechanism driver binds every port (vif_type ovs, status
# ACTIVE); it is registered through a hand-written dist-info entry point (no pip, no PyPI).
D=/usr/local/lib/python3.11/dist-packages
mkdir -p $D/fakebind_ml2-1.0.dist-info
cat > $D/fakebind_ml2.py <<'EOT'
"""Agent-less ML2 mechanism driver for test clouds (tests/openstack/setup.sh): binds every port to
the first segment with vif_type 'ovs' and marks it ACTIVE. Nova's fake virt driver never plugs
anything, so nothing else is needed."""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class FakeBindMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OVS,
                                {portbindings.CAP_PORT_FILTER: True},
                                status=constants.PORT_STATUS_ACTIVE)
            return
EOT
printf 'Metadata-Version: 2.1\nName: fakebind-ml2\nVersion: 1.0\n' > $D/fakebind_ml2-1.0.dist-info/METADATA
printf '[neutron.ml2.mechanism_drivers]\nfakebind = fakebind_ml2:FakeBindMechanismDriver\n' \
  > $D/fakebind_ml2-1.0.dist-info/entry_points.txt
: > $D/fakebind_ml2-1.0.dist-info/RECORD
mkdir -p /var/lib/neutron/lock
cat > /etc/neutron/neutron.conf <<EOT
[DEFAULT]
bind_host = 127.0.0.1
bind_port = 9696
core_plugin = ml2
service_plugins = router
auth_strategy = keystone
transport_url = $TRANSPORT
api_workers = 1
rpc_workers = 1
rpc_state_report_workers = 1
graceful_shutdown_timeout = 5
notify_nova_on_port_status_changes = true
notify_nova_on_port_data_changes = true
log_dir = $LOG
log_file = neutron-server.log
[database]
connection = $DBURL/neutron
[keystone_authtoken]
$(authblock)
[nova]
$(authblock)
[oslo_concurrency]
lock_path = /var/lib/neutron/lock
EOT
# tenant_network_types = vxlan lets the non-admin test user create networks too.
cat > /etc/neutron/plugins/ml2/ml2_conf.ini <<EOT
[ml2]
type_drivers = flat,vlan,vxlan
tenant_network_types = vxlan
mechanism_drivers = fakebind
extension_drivers = port_security
[ml2_type_flat]
flat_networks = public
[ml2_type_vlan]
network_vlan_ranges = public
[ml2_type_vxlan]
vni_ranges = 1:1000
[securitygroup]
enable_security_group = true
firewall_driver = noop
EOT
chmod 640 /etc/neutron/neutron.conf
NEUTRON_CONFS="/etc/neutron/neutron.conf /etc/neutron/plugins/ml2/ml2_conf.ini $D/fakebind_ml2.py"
NEUTRON_CFG=(--config-file /etc/neutron/neutron.conf --config-file /etc/neutron/plugins/ml2/ml2_conf.ini)
bg_sync neutron "$LOG/neutron-db-manage.out" neutron-db-manage "${NEUTRON_CFG[@]}" upgrade heads

############################################################################ 8. Nova config
mkdir -p /var/lib/nova/instances /var/lib/nova/tmp
# nova.conf has no DB settings: nova-compute must not see them ("No DB access allowed in
# nova-compute"). The controllers and nova-manage also load nova-db.conf.
cat > /etc/nova/nova.conf <<EOT
[DEFAULT]
my_ip = 127.0.0.1
host = fake-compute-1
transport_url = $TRANSPORT
compute_driver = fake.FakeDriver
state_path = /var/lib/nova
log_dir = $LOG
enabled_apis = osapi_compute
osapi_compute_listen = 127.0.0.1
osapi_compute_listen_port = 8774
osapi_compute_workers = 1
# oslo.service waits up to 60 s for open connections on SIGTERM; stop.sh should not.
graceful_shutdown_timeout = 5
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = /etc/nova/api-paste.ini
[keystone_authtoken]
$(authblock)
[placement]
$(authblock)
[neutron]
$(authblock)
[glance]
region_name = RegionOne
[cinder]
os_region_name = RegionOne
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 5
[vnc]
enabled = false
[oslo_concurrency]
lock_path = /var/lib/nova/tmp
[oslo_messaging_notifications]
driver = noop
EOT
cat > /etc/nova/nova-db.conf <<EOT
[api_database]
connection = $DBURL/nova_api
[database]
connection = $DBURL/nova
EOT
# nova-compute alone runs a subclass of the fake driver whose snapshot (createImage) uploads a
# 64 KiB placeholder through the image API, as libvirt's driver uploads the disk: the stock fake
# driver uploads nothing, so a snapshot would stay "queued" in Glance for ever. The properties
# Nova gave the image (instance_uuid, image_type=snapshot, the createImage metadata) are kept.
# Nova loads drivers only from its own package (nova.virt.*): the module goes beside fake.py. It
# and its config are files of their own, so changing them restarts only nova-compute.
NOVA_VIRT=/usr/lib/python3/dist-packages/nova/virt
cat > $NOVA_VIRT/fakesnap.py <<'EOT'
"""The fake virt driver, with snapshots that become active Glance images."""
import io

from nova.compute import task_states
from nova.image import glance
from nova.virt import fake


class SnapshotFakeDriver(fake.FakeDriver):
    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._image_api = glance.API()

    def snapshot(self, context, instance, image_id, update_task_state):
        # No "instance not running" check: after a nova-compute restart the fake driver has
        # forgotten its instances, and a snapshot of one should still work.
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        update_task_state(task_state=task_states.IMAGE_UPLOADING,
                          expected_state=task_states.IMAGE_PENDING_UPLOAD)
        meta = {'disk_format': 'raw', 'container_format': 'bare'}
        self._image_api.update(context, image_id, meta, io.BytesIO(bytes(65536)),
                               purge_props=False)
EOT
cat > /etc/nova/nova-compute.conf <<'EOT'
[DEFAULT]
compute_driver = fakesnap.SnapshotFakeDriver
EOT
chmod 640 /etc/nova/nova.conf /etc/nova/nova-db.conf
NOVA_CONFS="/etc/nova/nova.conf /etc/nova/nova-db.conf"
NOVA_CFG=(--config-file /etc/nova/nova.conf --config-file /etc/nova/nova-db.conf)
nova_db_sync() {
  timeout 300 nova-manage "${NOVA_CFG[@]}" api_db sync
  timeout 300 nova-manage "${NOVA_CFG[@]}" cell_v2 map_cell0 --database_connection "$DBURL/nova_cell0"
  timeout 300 nova-manage "${NOVA_CFG[@]}" cell_v2 list_cells | grep -q ' cell1 ' ||
    timeout 300 nova-manage "${NOVA_CFG[@]}" cell_v2 create_cell --name cell1
  timeout 300 nova-manage "${NOVA_CFG[@]}" db sync
}
bg_sync nova "$LOG/nova-manage.out" nova_db_sync
############################################################################ 9. Keystone
phase "keystone"
need_port keystone 5000
PHASE_LOG="$LOG/keystone.log $LOG/keystone-manage.out"
cat > /etc/keystone/keystone.conf <<EOT
[DEFAULT]
log_dir = $LOG
log_file = keystone.log
[database]
connection = $DBURL/keystone
[token]
provider = fernet
[identity]
# bcrypt cost 4 instead of 12: a password auth takes ~10 ms instead of ~1 s (throw-away cloud).
password_hash_rounds = 4
EOT
chmod 640 /etc/keystone/keystone.conf
if ! step_done keystone; then
  {
    timeout 300 keystone-manage db_sync
    [ -e /etc/keystone/fernet-keys/0 ] || timeout 120 keystone-manage fernet_setup --keystone-user root --keystone-group root
    [ -e /etc/keystone/credential-keys/0 ] || timeout 120 keystone-manage credential_setup --keystone-user root --keystone-group root
    # OS_BOOTSTRAP_PASSWORD rather than --bootstrap-password: keeps it out of the process list.
    OS_BOOTSTRAP_PASSWORD=$PW timeout 300 keystone-manage bootstrap \
      --bootstrap-admin-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ \
      --bootstrap-public-url http://127.0.0.1:5000/v3/ --bootstrap-region-id RegionOne
  } > "$LOG/keystone-manage.out" 2>&1
  mark_done keystone
fi
# --add-header Connection:close: uwsgi's --http-socket resets keep-alive connections otherwise
# (python-requests fails on its second request); Debian's own uwsgi ini files do the same.
UWSGI=(uwsgi --plugins python3 --master --enable-threads --lazy-apps --die-on-term --need-app
  --buffer-size 65535 --add-header Connection:close)
start keystone /etc/keystone/keystone.conf "${UWSGI[@]}" --http-socket 127.0.0.1:5000 \
  --wsgi-file /usr/bin/keystone-wsgi-public --processes 2 --threads 4
wait_for keystone 60 http_ok http://127.0.0.1:5000/v3

# clouds.yaml: the admin and test-user clouds now, the application credential after the fixtures.
write_clouds() { # write_clouds [APPCRED_ID]
  local tmp; tmp=$(mktemp "$(dirname "$CLOUDS_YAML")/.clouds.XXXXXX")
  {
    cat <<EOT
# Written by tests/openstack/setup.sh: the loopback OpenStack test bed. Do not edit.
clouds:
  $CLOUD:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: $BED_USER
      password: $PW
      project_name: $BED_PROJECT
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    api_timeout: 60
  $CLOUD_ADMIN:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: admin
      password: $PW
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    api_timeout: 60
EOT
    if [ -n "${1:-}" ]; then
      cat <<EOT
  $CLOUD_APPCRED:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://127.0.0.1:5000/v3
      application_credential_id: $1
      application_credential_secret: $PW
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    api_timeout: 60
EOT
    fi
  } > "$tmp"
  chmod 600 "$tmp"
  if [ -n "${OPENSTACK_TEST_OWNER:-}" ]; then chown "$OPENSTACK_TEST_OWNER" "$tmp"; fi
  mv -f "$tmp" "$CLOUDS_YAML"   # atomic: a test reading it never sees half a file
}
mkdir -p "$(dirname "$CLOUDS_YAML")"
chmod 755 "$(dirname "$CLOUDS_YAML")"
if [ ! -s "$CLOUDS_YAML" ] || ! grep -q "password: $PW\$" "$CLOUDS_YAML"; then
  write_clouds
fi
export OS_CLIENT_CONFIG_FILE=$CLOUDS_YAML

# The catalog, the test project and the test user (one Python process; ~2 s).
PHASE_LOG="$LOG/bed-identity.out $LOG/keystone.log"
if ! step_done identity; then
  timeout 120 $PY "$HERE/bed.py" identity >> "$LOG/bed-identity.out" 2>&1
  mark_done identity
fi

phase "rabbitmq ready"
PHASE_LOG="$LOG/rabbitmq.out"
wait_for rabbitmq 120 timeout 15 rabbitmqctl -q --timeout 5 await_startup
# Each rabbitmqctl call costs ~1 s of Erlang start-up: set the account up only when the node was
# (re)started by this run; it lives in the node's mnesia database across restarts anyway.
pwsum=$(sha256sum < "$S/secret" | cut -d' ' -f1)
if [ -n "$STARTED" ] || [ "$(cat "$RUN/rabbitmq.account" 2>/dev/null)" != "$pwsum" ]; then
  if ! timeout 60 rabbitmqctl -q list_users 2>/dev/null | grep -q '^openstack\b'; then
    timeout 60 rabbitmqctl -q add_user openstack "$PW" > /dev/null
  fi
  timeout 60 rabbitmqctl -q change_password openstack "$PW" > /dev/null
  timeout 60 rabbitmqctl -q set_permissions openstack '.*' '.*' '.*'
  echo "$pwsum" > "$RUN/rabbitmq.account"
fi

############################################################################ 10. start the services (each after its schema sync)
phase "start services"
need_port placement 8778
need_port glance 9292
need_port neutron 9696
need_port nova-api 8774
join_sync placement
start placement /etc/placement/placement.conf "${UWSGI[@]}" --http-socket 127.0.0.1:8778 \
  --wsgi-file /usr/bin/placement-api --processes 1 --threads 8
join_sync glance
start glance /etc/glance/glance-api.conf glance-api --config-file /etc/glance/glance-api.conf
join_sync neutron
start neutron "$NEUTRON_CONFS" neutron-server "${NEUTRON_CFG[@]}"
join_sync nova
start nova-api "$NOVA_CONFS" nova-api "${NOVA_CFG[@]}"
start nova-conductor "$NOVA_CONFS" nova-conductor "${NOVA_CFG[@]}"
start nova-scheduler "$NOVA_CONFS" nova-scheduler "${NOVA_CFG[@]}"
# The nova-compute console script lives in the nova-compute package, which drags in libvirt and
# qemu: run its entry point from python3-nova instead. --log-file, or the log is "<string>.log".
# A heartbeat newer than this shows the running nova-compute is up (see compute_ready).
COMPUTE_SINCE=$(sql "SELECT UTC_TIMESTAMP() - INTERVAL 50 SECOND")
STARTED=""
start nova-compute "/etc/nova/nova.conf /etc/nova/nova-compute.conf $NOVA_VIRT/fakesnap.py" $PY -c \
  'import sys; from nova.cmd.compute import main; sys.argv[0] = "nova-compute"; sys.exit(main())' \
  --config-file /etc/nova/nova.conf --config-file /etc/nova/nova-compute.conf \
  --log-file "$LOG/nova-compute.log"
if [ -n "$STARTED" ]; then COMPUTE_SINCE=$(sql "SELECT UTC_TIMESTAMP()"); fi

############################################################################ 11. everything answers
phase "services answer"
wait_for placement 90 http_ok http://127.0.0.1:8778
wait_for glance 90 http_ok http://127.0.0.1:9292
wait_for neutron 120 http_ok http://127.0.0.1:9696
wait_for nova-api 120 http_ok http://127.0.0.1:8774
# Scheduling needs: the compute service row, its resource provider in Placement, and the host
# mapped to cell1. The scheduler maps new hosts every 5 s (discover_hosts_in_cells_interval);
# the explicit discover_hosts just saves those seconds on the first run.
# The scheduler also skips a compute service whose last heartbeat is older than 60 s
# (service_down_time): after a stop.sh the old row looks fine but is stale, so wait for a
# heartbeat of the nova-compute running now (it reports ~5 s after start, then every 10 s).
compute_ready() {
  [ "$(sql "SELECT COUNT(*) FROM nova.services WHERE \`binary\`='nova-compute' AND deleted=0
      AND disabled=0 AND COALESCE(updated_at, created_at) >= '$COMPUTE_SINCE'")" -ge 1 ] &&
    [ "$(sql "SELECT COUNT(*) FROM nova.compute_nodes WHERE deleted=0")" -ge 1 ] &&
    [ "$(sql "SELECT COUNT(*) FROM placement.resource_providers")" -ge 1 ] &&
    [ "$(sql "SELECT COUNT(*) FROM nova_api.host_mappings")" -ge 1 ]
}
discovered=""
compute_ready_or_discover() {
  compute_ready && return 0
  if [ -z "$discovered" ] && [ "$(sql "SELECT COUNT(*) FROM nova.compute_nodes WHERE deleted=0")" -ge 1 ]; then
    timeout 120 nova-manage "${NOVA_CFG[@]}" cell_v2 discover_hosts >> "$LOG/nova-manage.out" 2>&1 || true
    discovered=1
  fi
  return 1
}
PHASE_LOG="$LOG/nova-compute.log $LOG/nova-scheduler.log"
wait_for nova-compute 120 compute_ready_or_discover
for s in nova-conductor nova-scheduler nova-compute; do
  alive $s || die "$s is not running" "$LOG/$s.out" "$(service_log $s)"
done

############################################################################ 12. fixtures
phase "fixtures"
PHASE_LOG="$LOG/bed-fixtures.out"
appcred=$(timeout 180 $PY "$HERE/bed.py" fixtures 2>> "$LOG/bed-fixtures.out")
[ -n "$appcred" ] || die "bed.py fixtures printed no application credential ID" "$LOG/bed-fixtures.out"
if ! grep -q "application_credential_id: $appcred\$" "$CLOUDS_YAML"; then
  write_clouds "$appcred"
fi

phase "done"
echo "setup.sh: OpenStack test bed ready in $(($(date +%s) - T0))s: clouds.yaml $CLOUDS_YAML" \
  "(clouds $CLOUD, $CLOUD_APPCRED, $CLOUD_ADMIN); logs $LOG; PIDs $RUN"
