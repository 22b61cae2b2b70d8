package faults

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// lxdPIDFile is where tests/lxd/setup.sh keeps the PID of the daemon it
// started.
const lxdPIDFile = "/run/github-runner-lxd-test/lxd.pid"

// TestLXDRestartedMidCycle stops the LXD daemon (SIGTERM: the daemon goes,
// its instances keep running, as in a snap refresh) while a flush is
// replacing runners, and starts it again the way tests/lxd/setup.sh does.
// Expected: the manager survives (same PID), the busy runner keeps its
// job, update-status says LXD is the problem while it is down, and two
// cycles after the restart the unit has its runners back. The daemon the
// setup script started is the one restarted; LXD tests of other packages
// running at that moment see a few seconds without it. About 1 minute.
func TestLXDRestartedMidCycle(t *testing.T) {
	daemon := lxdDaemonPID(t)
	b := deploy(t, 3, nil)
	guard := holdBusy(b)
	pid := b.ManagerPID()

	flushed := make(chan string, 1)
	go func() {
		r := b.Unit.Action("flush-runners", nil)
		flushed <- r.Status + " " + r.Message
	}()
	// A flush of two idle runners then two creates takes about 6 s here.
	time.Sleep(1500 * time.Millisecond)
	t.Logf("SIGTERM to the LXD daemon, pid %d", daemon)
	if err := syscall.Kill(daemon, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Restart it whatever happens next: other tests need it.
	restarted := false
	restart := func() {
		if !restarted {
			restarted = true
			run(t, 3*time.Minute, "env", "LXD_TEST_SKIP_SMOKE=1", "bash", setupScript())
		}
	}
	t.Cleanup(restart)
	stack.WaitFor(t, time.Minute, "the LXD daemon ends", func() bool { return !alive(daemon) })
	t.Logf("the flush during the restart: %s", <-flushed)

	b.Unit.Hook("update-status")
	if s := b.Unit.Status(); s.Status != "maintenance" || !strings.Contains(s.Message, "LXD") {
		t.Errorf("status while LXD is down = %+v, want maintenance naming LXD", s)
	}
	restart()
	if _, _, _, err := b.TryState(); err != nil {
		t.Fatalf("LXD is not back: %v", err)
	}
	guard.check("after the LXD restart")
	recoversWithin2Cycles(b, 3)
	guard.check("two cycles after the LXD restart")
	if got := b.ManagerPID(); got != pid {
		t.Errorf("the manager was restarted (pid %d, was %d)", got, pid)
	}
	b.Reconcile() // status is the last completed cycle's view
	b.Unit.Hook("update-status")
	if s := b.Unit.Status(); s != (harness.Status{Status: "active", Message: "3 runners: 2 idle, 1 busy"}) {
		t.Errorf("status after recovery = %+v", s)
	}
	reconcileIsQuiet(b)
	// The bed works for whoever comes next: a fresh client launches an
	// instance that gets an address on the bridge the fake GitHub uses.
	c := lxdtest.Connect(t)
	name := lxdtest.Prefix(t, c) + "after-restart"
	lxdtest.Launch(t, c, name, lxdtest.BaseImageAlias, nil)
	lxdtest.WaitIPv4(t, c, name, time.Minute)
}

// lxdDaemonPID is the daemon tests/lxd/setup.sh started; the test needs
// one it may restart.
func lxdDaemonPID(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile(lxdPIDFile)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || perr != nil || !alive(pid) {
		msg := "no LXD daemon started by tests/lxd/setup.sh (" + lxdPIDFile + "); run it first"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return pid
}

// alive: running and not a zombie (an exited daemon lingers as one until
// init reaps it).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func setupScript() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "lxd", "setup.sh")
}
