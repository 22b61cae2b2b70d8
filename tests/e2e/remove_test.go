package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// `remove` while a cycle is creating runners leaves nothing of the unit:
// no instance (runner or image builder), no GitHub runner, no LXD image
// alias, network ACL or profile of its prefix, no bridge of its own, no
// process it started, no systemd unit and no state directory.
func TestRemoveWhileCreatingLeavesNothing(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "rm", Token: "ghp_E2E_REMOVE_TOKEN_0123456789abcdef", Label: "rm", Runners: 3,
		// 192.0.2.0/24 is TEST-NET-1: an ACL that rejects nothing in use.
		Config: map[string]any{"denylist": "192.0.2.0/24"}})
	b.Unit.Deploy()
	stack.WaitFor(t, 10*time.Minute, "a cycle creating runners", func() bool {
		online, instances, _, err := b.TryState()
		return err == nil && len(instances) > 0 && online < 3
	})
	pebble, manager, stateDir := b.Unit.PebblePID(), b.ManagerPID(), b.Unit.StateDir()
	if pebble == 0 || manager == 0 {
		t.Fatalf("Pebble pid %d, manager pid %d", pebble, manager)
	}
	_, creating, _ := b.State()
	t.Logf("removing the unit while %v are being created", creating)
	start := time.Now()
	for _, hook := range []string{"stop", "remove"} {
		if r := b.Unit.Hook(hook); r.Code != 0 {
			t.Fatalf("%s exit %d: %s\nunit log: %v", hook, r.Code, r.Stderr, b.Unit.Logs())
		}
	}
	t.Logf("stop and remove took %v", time.Since(start).Round(time.Second))

	var left []string
	found := func(what string, names []string) {
		for _, n := range names {
			if strings.HasPrefix(n, b.Prefix+"-") || strings.HasPrefix(n, b.Prefix+"/") {
				left = append(left, what+" "+n)
			}
		}
	}
	for _, list := range []struct {
		what  string
		names func() ([]string, error)
	}{
		{"instance", func() ([]string, error) { return b.LXD.GetInstanceNames("") }},
		{"image alias", b.LXD.GetImageAliasNames},
		{"network ACL", b.LXD.GetNetworkACLNames},
		{"profile", b.LXD.GetProfileNames},
	} {
		names, err := list.names()
		if err != nil {
			t.Fatalf("cannot list LXD's %ss: %v", list.what, err)
		}
		found(list.what, names)
	}
	bridge := lxdtest.UnitBridge(b.Prefix)
	if _, _, err := b.LXD.GetNetwork(bridge); err == nil {
		left = append(left, "network "+bridge)
	}
	for _, r := range b.GitHub.Runners("") {
		found("GitHub runner", []string{r.Name})
	}
	for _, pid := range []int{pebble, manager} {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil && !zombie(pid) {
			left = append(left, "process "+strconv.Itoa(pid))
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		for _, f := range []string{"cmdline", "environ"} {
			if data, err := os.ReadFile(filepath.Join(p, f)); err == nil && strings.Contains(string(data), stateDir) && !zombie(pidOf(p)) {
				left = append(left, "process "+filepath.Base(p)+" (its "+f+" names the state directory)")
				break
			}
		}
	}
	if _, err := os.Stat(filepath.Join("/etc/systemd/system", "github-runner-pebble-"+strings.ReplaceAll(b.Unit.Name, "/", "-")+".service")); err == nil {
		left = append(left, "systemd unit")
	}
	if _, err := os.Stat(stateDir); !os.IsNotExist(err) {
		left = append(left, "state directory "+stateDir)
	}
	if len(left) > 0 {
		t.Errorf("left after remove:\n%s", strings.Join(left, "\n"))
	}
}

func pidOf(procDir string) int {
	pid, _ := strconv.Atoi(filepath.Base(procDir))
	return pid
}

// zombie tells whether a process has exited and waits only to be reaped.
func zombie(pid int) bool {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] == "Z"
}
