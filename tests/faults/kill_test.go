package faults

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// killPoint is an operation of the manager to kill it in the middle of.
type killPoint struct {
	name string
	// The kill lands at a uniformly random time in [after, after+window)
	// from the moment begin returns: after is how long the request takes
	// to reach the manager (an action's dispatch), window about how long
	// the operation then takes on this machine.
	after, window time.Duration
	// begin starts the operation and returns once it is under way: the
	// runners to expect after it, the manager running it, and a channel
	// that says how the operation's action ended.
	begin func(b *stack.Bed, guard *busyGuard) (target, pid int, ended <-chan string)
}

// killPoints cycle create, scale-down, flush and cleanup, each with one
// runner busy throughout (the guard), so the kill also tests that a
// restarted manager never mistakes the busy runner for an idle one.
var killPoints = []killPoint{{
	// A config change restarts the manager, whose first cycle creates the
	// fourth runner: register at GitHub, create, push the JIT, start.
	name: "create", window: 5 * time.Second,
	begin: func(b *stack.Bed, _ *busyGuard) (int, int, <-chan string) {
		return 4, restartWithRunners(b, 4), reconcileAsync(b)
	},
}, {
	// The next config change: the restarted manager's first cycle removes
	// the newest idle runner, GitHub first, then its instance.
	name: "scale-down", window: 3 * time.Second,
	begin: func(b *stack.Bed, _ *busyGuard) (int, int, <-chan string) {
		return 3, restartWithRunners(b, 3), reconcileAsync(b)
	},
}, {
	// flush-runners: the idle runners go, then a reconcile replaces them.
	name: "flush", after: 300 * time.Millisecond, window: 6 * time.Second,
	begin: func(b *stack.Bed, _ *busyGuard) (int, int, <-chan string) {
		pid := b.ManagerPID()
		ended := make(chan string, 1)
		go func() {
			r := b.Unit.Action("flush-runners", nil)
			ended <- r.Status + " " + r.Message
		}()
		return 3, pid, ended
	},
}, {
	// Cleanup: one idle runner's instance stopped (as a finished runner
	// powers off), another's deleted (a runner without instance); the
	// cycle removes both and creates two.
	name: "cleanup", after: 300 * time.Millisecond, window: 5 * time.Second,
	begin: func(b *stack.Bed, guard *busyGuard) (int, int, <-chan string) {
		var idle []string
		for _, name := range b.RunnerNames() {
			if name != guard.job.RunnerName {
				idle = append(idle, name)
			}
		}
		if len(idle) < 2 {
			b.T.Fatalf("cleanup kill point needs two idle runners, has %v", idle)
		}
		op, err := b.LXD.UpdateInstanceState(idle[0], api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
		if err == nil {
			err = lxdtest.WaitOp(op)
		}
		if err != nil {
			b.T.Fatalf("cannot stop %s: %v", idle[0], err)
		}
		if err := lxdtest.DeleteInstance(b.LXD, idle[1]); err != nil {
			b.T.Fatalf("cannot delete %s: %v", idle[1], err)
		}
		return 3, b.ManagerPID(), reconcileAsync(b)
	},
}}

// restartWithRunners changes virtual-machines, which restarts the manager,
// and returns the new manager's PID once it runs.
func restartWithRunners(b *stack.Bed, n int) int {
	b.T.Helper()
	old := b.ManagerPID()
	if r := b.Unit.Configure(map[string]any{"virtual-machines": n}); r.Code != 0 {
		b.T.Fatalf("config-changed virtual-machines=%d: %s", n, r.Stderr)
	}
	var pid int
	stack.WaitFor(b.T, time.Minute, "the manager restarts with the new config", func() bool {
		pid = b.ManagerPID()
		return pid != 0 && pid != old
	})
	return pid
}

func reconcileAsync(b *stack.Bed) <-chan string {
	ended := make(chan string, 1)
	go func() {
		r := b.Unit.Action("reconcile-runners", nil)
		ended <- r.Status + " " + r.Message
	}()
	return ended
}

// seed is FAULTS_SEED, or the time: printed, so that a failure replays.
func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if env := os.Getenv("FAULTS_SEED"); env != "" {
		v, err := strconv.ParseUint(env, 10, 64)
		if err != nil {
			t.Fatalf("FAULTS_SEED=%q: %v", env, err)
		}
		s = v
	}
	t.Logf("kill points seeded with %d (FAULTS_SEED=%d replays them)", s, s)
	return s
}

func killCount(t *testing.T) int {
	env := os.Getenv("FAULTS_KILLS")
	if env == "" {
		return 20
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1 {
		t.Fatalf("FAULTS_KILLS=%q is not a positive number", env)
	}
	return n
}

// TestManagerKilledAtRandomPoints SIGKILLs the manager (Pebble restarts it)
// at random points of create, scale-down, flush and cleanup (16 by
// default, see killCount), through the whole stack. After each kill, two cycles must bring back exactly the
// expected runners with nothing leaked, and the busy runner must have kept
// its job. About 40 s to deploy, then 11 s a kill point here.
func TestManagerKilledAtRandomPoints(t *testing.T) {
	rng := rand.New(rand.NewPCG(seed(t), 0))
	kills := killCount(t)
	b := deploy(t, 3, nil)
	guard := holdBusy(b)
	interrupted := 0
	for i := range kills {
		point := killPoints[i%len(killPoints)]
		delay := point.after + time.Duration(rng.Int64N(int64(point.window)))
		target, pid, ended := point.begin(b, guard)
		if pid == 0 {
			t.Fatalf("kill %d (%s): no manager running", i+1, point.name)
		}
		time.Sleep(delay)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d (%s): cannot kill the manager, pid %d: %v", i+1, point.name, pid, err)
		}
		outcome := <-ended
		if outcome[:6] == "failed" {
			interrupted++
		}
		t.Logf("kill %d: %s, %v in; its action: %s", i+1, point.name, delay.Round(time.Millisecond), outcome)
		stack.WaitFor(t, time.Minute, "Pebble restarts the manager", func() bool {
			p := b.ManagerPID()
			return p != 0 && p != pid
		})
		recoversWithin2Cycles(b, target)
		guard.check(fmt.Sprintf("kill %d (%s, %v in)", i+1, point.name, delay.Round(time.Millisecond)))
		if _, _, runners := b.State(); !slices.Contains(runners, guard.job.RunnerName) {
			t.Fatalf("kill %d: the busy runner %s is gone", i+1, guard.job.RunnerName)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	reconcileIsQuiet(b)
	t.Logf("%d of %d kills interrupted their operation's action; the rest landed after it", interrupted, kills)
}
