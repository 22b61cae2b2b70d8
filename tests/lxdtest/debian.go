package lxdtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	lxd "github.com/canonical/lxd/client"
)

// DebianImageAlias is the alias of the Debian bookworm image that tests/lxd/debian.sh builds
// and imports (tests/lxd/setup.sh runs it last).
//
// It is debootstrap's minbase with systemd as PID 1 (systemd-networkd: DHCP on eth0;
// systemd-resolved: DNS from the lease), sudo, ca-certificates, python3 and real cloud-init
// 22.4 with the NoCloud datasource only. As on Ubuntu's LXD images, LXD's image templates render
// the seed /var/lib/cloud/seed/nocloud-net/{meta-data,user-data,vendor-data} from the instance
// config keys user.user-data, user.vendor-data and user.meta-data (instance-id and
// local-hostname are the instance name; user.meta-data comes after them, so its keys override
// them). A "#!" user-data runs once per instance, as root, under cloud-final.service
// (scripts-user); `poweroff` stops the container. apt has no package lists: run
// `apt-get update` first (deb.debian.org is reachable).
const DebianImageAlias = "github-runner-test-debian"

const debianHint = "run `sudo tests/lxd/setup.sh` (or tests/lxd/debian.sh) to build the Debian test image"

// DebianImage returns DebianImageAlias when the local LXD daemon has that image. When it has
// not, or no daemon answers, it calls t.Fatal if CI=true, else t.Skip, saying how to build it.
func DebianImage(t testing.TB) string {
	t.Helper()
	c, err := connect()
	if err == nil {
		_, _, err = c.GetImageAlias(DebianImageAlias)
		if err != nil {
			err = fmt.Errorf("cannot find image %q: %w", DebianImageAlias, err)
		}
	}
	if err != nil {
		msg := fmt.Sprintf("Debian test image not available: %v; %s", err, debianHint)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a missing real part fails the test)")
		}
		t.Skip(msg)
	}
	return DebianImageAlias
}

// WaitCloudInit waits, for at most timeout, until cloud-init has finished in the instance
// (`cloud-init status --wait`), and returns the long status. It fails the test when cloud-init
// reports an error or does not finish in time. Do not call it from a test whose user-data
// powers the instance off before cloud-init is done: there is nothing left to wait in.
func WaitCloudInit(t testing.TB, c lxd.InstanceServer, name string, timeout time.Duration) string {
	t.Helper()
	secs := strconv.Itoa(int(timeout.Seconds() + 0.5))
	// The command's own timeout keeps the exec within OpTimeout's bound as well.
	res, err := exec(c, name, []string{"timeout", secs, "cloud-init", "status", "--wait", "--long"})
	if err != nil {
		t.Fatalf("cannot wait for cloud-init in %q: %v", name, err)
	}
	// --wait prints a dot a second until it is done.
	out := strings.TrimSpace(strings.TrimLeft(res.Stdout, ".\n"))
	if res.ExitCode != 0 || !strings.Contains(out, "status: done") {
		t.Fatalf("cloud-init in %q not done within %v (exit %d): %s %s", name, timeout, res.ExitCode, out, res.Stderr)
	}
	return out
}
