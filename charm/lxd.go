package charm

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/canonical/github-runner-charm/src/lxd/lxdsocket"
)

// snapInstallTimeout bounds installing the LXD snap: a download of about
// 100 MB, done once per machine.
const snapInstallTimeout = 10 * time.Minute

// lxdInstaller makes sure an LXD daemon is on the machine. The manager
// completes an uninitialised daemon (pool, bridge, profile) when it starts;
// the charm only has to make sure there is one.
type lxdInstaller struct {
	find func() error
	// snap runs the snap command, or says it is missing.
	snap func(ctx context.Context, args ...string) error
}

func newLXDInstaller() *lxdInstaller {
	return &lxdInstaller{
		find: func() error { _, err := lxdsocket.Find(""); return err },
		snap: func(ctx context.Context, args ...string) error {
			if _, err := exec.LookPath("snap"); err != nil {
				return errNoSnap
			}
			out, err := exec.CommandContext(ctx, "snap", args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
			}
			return nil
		},
	}
}

var errNoSnap = fmt.Errorf("no snap command")

// ensure installs the LXD snap when no LXD socket answers. The error is a
// sentence for the unit's Blocked status.
func (i *lxdInstaller) ensure(ctx context.Context) error {
	if i.find() == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, snapInstallTimeout)
	defer cancel()
	switch err := i.snap(ctx, "install", "lxd"); {
	case err == errNoSnap:
		return fmt.Errorf("LXD is not installed on this machine and there is no snap command to install it with: install LXD (the lxd snap or package), or set openstack-clouds-yaml")
	case err != nil:
		return fmt.Errorf("cannot install the LXD snap (%v): install LXD by hand, or set openstack-clouds-yaml", err)
	}
	if err := i.find(); err != nil {
		return fmt.Errorf("the LXD snap is installed but its daemon does not answer (%v): check `snap services lxd`", err)
	}
	return nil
}

// noLXD is the status of a unit whose LXD daemon has gone since it was
// ensured: most often a restart or an upgrade of the daemon, which time
// ends (Maintenance; the manager retries every cycle), but it says what to
// do if LXD was removed.
const noLXD = "no LXD daemon answers on this machine; runners are managed again once it does (if LXD was removed: install it, or set openstack-clouds-yaml)"
