package boot_test

import (
	"strings"
	"testing"
	"time"

	lxd "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// TestLeanBootDebian runs lean.sh on the Debian test image (systemd, real
// cloud-init) as an image build does, boots the container again as a
// fresh instance (cloud-init clean), and checks that the next boot is
// lean and still does what a runner needs: the user-data script runs,
// cloud-init ends without error, DNS resolves, and the instance has a
// machine id of its own.
func TestLeanBootDebian(t *testing.T) {
	t.Parallel()
	image := lxdtest.DebianImage(t)
	c := lxdtest.Connect(t)
	name := lxdtest.Prefix(t, c) + "lean"
	// Each boot's user-data run leaves a line.
	lxdtest.Launch(t, c, name, image, map[string]string{
		"user.user-data": "#!/bin/sh\necho ran >>/root/user-data-runs\n",
	})
	lxdtest.WaitCloudInit(t, c, name, 3*time.Minute)
	builderID := strings.TrimSpace(lxdtest.Exec(t, c, name, "cat", "/etc/machine-id").Stdout)

	lxdtest.PushFile(t, c, name, "/tmp/lean.sh", []byte(boot.LeanBootScript), 0o700)
	if res := lxdtest.Exec(t, c, name, "sh", "/tmp/lean.sh"); res.ExitCode != 0 {
		t.Fatalf("lean.sh: exit %d\n%s%s", res.ExitCode, res.Stdout, res.Stderr)
	}
	// As the image build leaves it (install.sh cleans cloud-init), and no
	// host keys, so that the next boot shows whether it makes them.
	lxdtest.Exec(t, c, name, "sh", "-c", "cloud-init clean --logs && rm -f /etc/ssh/ssh_host_*")
	restart(t, c, name)
	status := lxdtest.WaitCloudInit(t, c, name, 3*time.Minute)

	sh := func(script string) lxdtest.ExecResult {
		t.Helper()
		return lxdtest.Exec(t, c, name, "sh", "-c", script)
	}
	if got := sh("cat /root/user-data-runs").Stdout; got != "ran\nran\n" {
		t.Errorf("the user-data script ran %q over two first boots, want twice", got)
	}
	if strings.Contains(status, "error") {
		t.Errorf("cloud-init: %s", status)
	}
	for _, unit := range []string{"apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer", "fstrim.timer", "dpkg-db-backup.timer", "e2scrub_reap.service"} {
		if got := strings.TrimSpace(sh("systemctl is-enabled " + unit).Stdout); got != "masked" {
			t.Errorf("%s is %q, want masked", unit, got)
		}
	}
	if timers := sh("systemctl list-timers --no-legend").Stdout; strings.Contains(timers, "apt-daily") {
		t.Errorf("apt's timers are scheduled:\n%s", timers)
	}
	// The config stage's process is not run; its modules (runcmd, apt,
	// ...) run in the final stage.
	if got := strings.TrimSpace(sh("systemctl show -p ActiveEnterTimestampMonotonic --value cloud-config.service").Stdout); got != "0" {
		t.Errorf("cloud-config.service ran (entered active at %s µs)", got)
	}
	if res := sh("ls /etc/ssh/ssh_host_* 2>/dev/null"); res.Stdout != "" {
		t.Errorf("host keys were made for an sshd that is not installed:\n%s", res.Stdout)
	}
	if got := sh("grep -c config-locale /var/log/cloud-init.log || true").Stdout; strings.TrimSpace(got) != "0" {
		t.Errorf("cloud-init ran its locale module (%s lines)", strings.TrimSpace(got))
	}
	id := strings.TrimSpace(sh("cat /etc/machine-id").Stdout)
	if id == "" || id == builderID {
		t.Errorf("machine id %q after the build, want a new one (the builder's was %q)", id, builderID)
	}
	if res := sh("getent hosts deb.debian.org"); res.ExitCode != 0 {
		t.Errorf("DNS does not resolve after the lean boot: exit %d %s", res.ExitCode, res.Stderr)
	}
}

// restart stops (cleanly, so that what the build wrote is on disk) and
// starts an instance.
func restart(t *testing.T, c lxd.InstanceServer, name string) {
	t.Helper()
	op, err := c.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Timeout: 60}, "")
	if err == nil {
		err = lxdtest.WaitOp(op)
	}
	if err != nil {
		t.Fatalf("cannot stop %s: %v", name, err)
	}
	lxdtest.Start(t, c, name)
	lxdtest.WaitExec(t, c, name, time.Minute)
}
