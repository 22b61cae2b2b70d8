package harness_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// upgradeVersion is the charm `juju refresh` brings in these tests: the
// version is linked into dispatch and the manager, so both binaries differ
// from the deployed charm's.
const upgradeVersion = "harness-2"

// After juju refresh, upgrade-charm puts the new manager binary to work
// (the old one is gone from disk), leaves Pebble alone when its binary is
// the same, and the config-changed after it has nothing left to do.
func TestUpgradeRunsTheNewManager(t *testing.T) {
	config, _ := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(config)
	u.Deploy()
	oldManager, oldPebble := u.ManagerPID(), u.PebblePID()
	if oldManager == 0 || oldPebble == 0 {
		t.Fatalf("after deploy: manager pid %d, Pebble pid %d\n%s", oldManager, oldPebble, u.ServiceLogs())
	}
	if v := exeVersion(t, oldManager); v != harness.Version {
		t.Fatalf("the deployed manager says version %q, want %q", v, harness.Version)
	}
	oldPebbleDigest := exeDigest(t, oldPebble)

	u.Upgrade(upgradeVersion)
	assertNewManager(t, u, oldManager)
	if u.AppVersion() != upgradeVersion {
		t.Errorf("application version = %q, want %q", u.AppVersion(), upgradeVersion)
	}
	// Pebble's build does not carry the charm's version: the same binary
	// needs no restart, and the running one must not be restarted for it.
	if fileDigest(t, filepath.Join(u.CharmDir, "bin", "pebble")) != oldPebbleDigest {
		t.Fatal("the two packs' Pebble binaries differ: this test expects them equal (the other test covers a changed Pebble)")
	}
	if pid := u.PebblePID(); pid != oldPebble {
		t.Errorf("Pebble was restarted (pid %d → %d) though its binary did not change", oldPebble, pid)
	}
	assertConfigChangedIsNoOp(t, u)
}

// A Pebble started from another binary than the charm's bin/pebble is
// replaced at upgrade-charm: the old daemon goes (stopping its manager, so
// no orphan is left), the new one runs the new manager. The two packs'
// Pebble binaries are the same, so the record of which binary the running
// Pebble was started from is made to differ, as after a Pebble bump; and
// removed, as after an upgrade from a charm version that kept no record.
func TestUpgradeRestartsAChangedPebble(t *testing.T) {
	for _, test := range []struct {
		name   string
		record func(path string) error
	}{
		{"changed binary", func(path string) error {
			return os.WriteFile(path, []byte(strings.Repeat("0", 64)+"\n"), 0o600)
		}},
		{"no record", os.Remove},
	} {
		t.Run(test.name, func(t *testing.T) {
			config, _ := withFakeGitHub(t)
			u := harness.New(t, harness.Options{Leader: true})
			u.SetConfig(config)
			u.Deploy()
			oldManager, oldPebble := u.ManagerPID(), u.PebblePID()
			if oldManager == 0 || oldPebble == 0 {
				t.Fatalf("after deploy: manager pid %d, Pebble pid %d\n%s", oldManager, oldPebble, u.ServiceLogs())
			}
			record := filepath.Join(u.StateDir(), "pebble.sha256")
			if _, err := os.Stat(record); err != nil {
				t.Fatalf("the charm keeps no record of the binary Pebble runs from: %v", err)
			}
			if err := test.record(record); err != nil {
				t.Fatal(err)
			}

			u.Upgrade(upgradeVersion)
			pebble := u.PebblePID()
			if pebble == 0 || pebble == oldPebble {
				t.Fatalf("Pebble pid %d → %d, want a new Pebble", oldPebble, pebble)
			}
			if alive(oldPebble) {
				t.Errorf("the old Pebble (pid %d) is still running", oldPebble)
			}
			if deleted(t, pebble) || exeDigest(t, pebble) != fileDigest(t, filepath.Join(u.CharmDir, "bin", "pebble")) {
				t.Errorf("the new Pebble does not run the charm's bin/pebble")
			}
			manager := assertNewManager(t, u, oldManager)
			if parent := ppid(t, manager); parent != pebble {
				t.Errorf("the manager's parent is pid %d, want the new Pebble %d", parent, pebble)
			}
			if managers := managerPIDs(t, u); len(managers) != 1 {
				t.Errorf("manager processes of the unit: %v, want one", managers)
			}
			if got, _ := os.ReadFile(record); strings.TrimSpace(string(got)) != exeDigest(t, pebble) {
				t.Errorf("record %q, want the running Pebble's digest", got)
			}
			assertConfigChangedIsNoOp(t, u)
			if pid := u.PebblePID(); pid != pebble {
				t.Errorf("config-changed restarted Pebble again (%d → %d)", pebble, pid)
			}
		})
	}
}

// Runners live through an upgrade: the same instances and GitHub runners
// are there after it, a busy one keeps its job, and the new manager, once
// it has reconciled, removes none of them. Real LXD and the fake GitHub.
func TestUpgradeKeepsTheRunners(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "upk", Token: "ghp_UPGRADE_KEEPS_0123456789abcdef", Label: "upk", Runners: 2})
	b.Unit.Deploy()
	b.Converge(2)
	job := b.Assign(fakegithub.JobSpec{Sleep: 10 * time.Minute})
	stack.WaitFor(t, time.Minute, "the job to start", func() bool {
		j, ok := b.GitHub.Job(job.ID)
		return ok && j.State == fakegithub.JobInProgress
	})
	_, instances, runners := b.State()
	ids := runnerIDs(b)
	oldManager := b.ManagerPID()

	b.Unit.Upgrade(upgradeVersion)
	assertNewManager(t, b.Unit, oldManager)
	for range 2 {
		b.Reconcile()
		_, afterInstances, afterRunners := b.State()
		if !slices.Equal(afterInstances, instances) || !slices.Equal(afterRunners, runners) {
			t.Fatalf("after the upgrade: instances %v, runners %v; before: %v, %v", afterInstances, afterRunners, instances, runners)
		}
	}
	if after := runnerIDs(b); !slices.Equal(after, ids) {
		t.Errorf("GitHub runner ids %v after the upgrade, %v before: runners were replaced", after, ids)
	}
	if j, ok := b.GitHub.Job(job.ID); !ok || j.State != fakegithub.JobInProgress || j.Lost {
		t.Errorf("the busy runner's job after the upgrade: %+v (found %v), want still running", j, ok)
	}
	if removed := stack.MetricIn(b.Metrics(), "deleted_runners_total"); removed != 0 {
		t.Errorf("the new manager removed %v runners", removed)
	}
	assertConfigChangedIsNoOp(t, b.Unit)
}

func runnerIDs(b *stack.Bed) []string {
	var ids []string
	for _, r := range b.GitHub.Runners(stack.Repo) {
		if strings.HasPrefix(r.Name, b.Prefix+"-") {
			ids = append(ids, strconv.FormatInt(r.ID, 10))
		}
	}
	slices.Sort(ids)
	return ids
}

// assertNewManager checks that the unit's manager is a new process running
// the charm's bin/github-runner-manager, of upgradeVersion, and returns it.
func assertNewManager(t *testing.T, u *harness.Unit, old int) int {
	t.Helper()
	pid := u.ManagerPID()
	switch {
	case pid == 0:
		t.Fatalf("no manager runs after the upgrade\n%s", u.ServiceLogs())
	case pid == old:
		t.Fatalf("the manager (pid %d) was not restarted by the upgrade", pid)
	case deleted(t, pid):
		t.Fatalf("the manager (pid %d) runs a binary deleted from disk", pid)
	}
	if got, want := exeDigest(t, pid), fileDigest(t, filepath.Join(u.CharmDir, "bin", "github-runner-manager")); got != want {
		t.Fatalf("the manager runs a binary of sha256 %s, the charm's is %s", got, want)
	}
	if v := exeVersion(t, pid); v != upgradeVersion {
		t.Fatalf("the manager says version %q, want %q", v, upgradeVersion)
	}
	return pid
}

// assertConfigChangedIsNoOp runs config-changed with nothing changed and
// checks that it returned early: configure rewrites the config file (a new
// inode: it writes a temporary file and renames it) and the layer whenever
// it goes on, and a replan of a changed layer restarts the manager.
func assertConfigChangedIsNoOp(t *testing.T, u *harness.Unit) {
	t.Helper()
	configFile := filepath.Join(u.StateDir(), "config.yaml")
	layer := filepath.Join(u.StateDir(), "pebble", "layers", "001-github-runner.yaml")
	before := []uint64{inode(t, configFile), inode(t, layer)}
	manager, pebble := u.ManagerPID(), u.PebblePID()
	if r := u.Hook("config-changed"); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	if after := []uint64{inode(t, configFile), inode(t, layer)}; !slices.Equal(after, before) {
		t.Errorf("config-changed with nothing changed rewrote the config file or the layer (inodes %v → %v)", before, after)
	}
	if m, p := u.ManagerPID(), u.PebblePID(); m != manager || p != pebble {
		t.Errorf("config-changed with nothing changed restarted something: manager %d → %d, Pebble %d → %d", manager, m, pebble, p)
	}
	if s := u.Status(); s.Status == "error" || s.Status == "blocked" {
		t.Errorf("status = %+v", s)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Sys().(*syscall.Stat_t).Ino
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// exeDigest is the sha256 of the binary a process runs, deleted or not.
func exeDigest(t *testing.T, pid int) string {
	t.Helper()
	return fileDigest(t, fmt.Sprintf("/proc/%d/exe", pid))
}

// exeVersion runs the binary a process runs with --version.
func exeVersion(t *testing.T, pid int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, fmt.Sprintf("/proc/%d/exe", pid), "--version").Output()
	if err != nil {
		t.Fatalf("cannot run pid %d's binary with --version: %v", pid, err)
	}
	return strings.TrimSpace(string(out))
}

func deleted(t *testing.T, pid int) bool {
	t.Helper()
	target, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.HasSuffix(target, " (deleted)")
}

func ppid(t *testing.T, pid int) int {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	parent, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatal(err)
	}
	return parent
}

// alive tells whether a process exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// managerPIDs are every manager process of the unit (ManagerPID finds one).
func managerPIDs(t *testing.T, u *harness.Unit) []int {
	t.Helper()
	config := filepath.Join(u.StateDir(), "config.yaml")
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 2 && strings.HasSuffix(args[0], "github-runner-manager") && slices.Contains(args, config) && !slices.Contains(args, "health") {
			pids = append(pids, pid)
		}
	}
	return pids
}
