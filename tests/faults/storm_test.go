package faults

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// storm is a spell of GitHub failing every API call the same way.
type storm struct {
	name  string
	fault fakegithub.Fault
	// status is what the unit's status message must say during the storm.
	status *regexp.Regexp
	// holdsFor is how long the manager is told to stay away (rate limits).
	holdsFor time.Duration
}

var storms = []storm{{
	name:   "5xx burst",
	fault:  fakegithub.Fault{Kind: fakegithub.ServerError, Status: 502},
	status: regexp.MustCompile(`^GitHub API unavailable \(HTTP 502 after 3 attempts\): retrying at the next reconcile$`),
}, {
	name:     "primary rate limit",
	fault:    fakegithub.Fault{Kind: fakegithub.PrimaryRateLimit, RetryAfter: 20 * time.Second},
	status:   regexp.MustCompile(`^GitHub API rate limit exhausted until (\d\d:\d\d) UTC: runners are reconciled again after the reset$`),
	holdsFor: 20 * time.Second,
}, {
	name:     "secondary rate limit, 403",
	fault:    fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, Status: 403, RetryAfter: 15 * time.Second},
	status:   regexp.MustCompile(`^GitHub secondary rate limit hit: waiting (\d+)s before calling GitHub again$`),
	holdsFor: 15 * time.Second,
}, {
	name:     "secondary rate limit, 429",
	fault:    fakegithub.Fault{Kind: fakegithub.SecondaryRateLimit, Status: 429, RetryAfter: 15 * time.Second},
	status:   regexp.MustCompile(`^GitHub secondary rate limit hit: waiting (\d+)s before calling GitHub again$`),
	holdsFor: 15 * time.Second,
}, {
	name:   "dropped connections",
	fault:  fakegithub.Fault{Kind: fakegithub.DropConnection},
	status: regexp.MustCompile(`^cannot reach the GitHub API \(after 3 attempts\): check the network and proxy; retrying at the next reconcile$`),
}, {
	// 31 s: just past the client's 30 s per-request timeout, so every call
	// times out rather than racing it.
	name:   "30 s latency",
	fault:  fakegithub.Fault{Kind: fakegithub.Latency, Delay: 31 * time.Second},
	status: regexp.MustCompile(`^GitHub API did not answer within 30s: retrying at the next reconcile$`),
}}

// TestGitHubStorms puts one unit through each storm in turn. Before each,
// one runner is busy and one idle runner's instance is deleted (so there
// is work to do once GitHub answers again); during it, an operator flushes
// the idle runners. Expected: the manager never crashes (same PID), the
// busy runner keeps its job, update-status names the cause (for a rate
// limit, when it clears, and as Maintenance: time fixes it), and two
// cycles after the storm the unit has its runners back. About 3 minutes,
// half of it the latency storm.
func TestGitHubStorms(t *testing.T) {
	b := deploy(t, 3, nil)
	guard := holdBusy(b)
	pid := b.ManagerPID()
	for _, s := range storms {
		t.Logf("storm: %s", s.name)
		start := time.Now()
		deleteOneIdle(b, guard)
		fault := s.fault
		if err := b.GitHub.InjectFault(fault); err != nil {
			t.Fatal(err)
		}
		injected := time.Now()
		if r := b.Unit.Action("flush-runners", nil); r.Status == "completed" {
			t.Errorf("%s: flush-runners completed while GitHub failed every call: %+v", s.name, r)
		}
		b.Unit.Hook("update-status")
		status := b.Unit.Status()
		match := s.status.FindStringSubmatch(status.Message)
		if status.Status != "maintenance" || match == nil {
			t.Errorf("%s: status = %+v, want maintenance matching %s", s.name, status, s.status)
		} else if s.holdsFor > 0 {
			checkClearTime(t, s, match[1], injected)
		}
		guard.check(s.name)
		b.GitHub.ClearFaults()
		if s.holdsFor > 0 {
			// The storm is over when the limit lifts, at a time the
			// manager was told and must not call GitHub before: a clock
			// to wait for, not a condition to poll. (The unit's status
			// keeps the cycle's problem until the next cycle.)
			time.Sleep(time.Until(injected.Add(s.holdsFor + 2*time.Second)))
		}
		recoversWithin2Cycles(b, 3)
		guard.check(s.name + ", after")
		if got := b.ManagerPID(); got != pid {
			t.Fatalf("%s: the manager was restarted (pid %d, was %d)", s.name, got, pid)
		}
		// Status is the last completed cycle's view: one that has seen
		// the replacements online.
		b.Reconcile()
		b.Unit.Hook("update-status")
		if status := b.Unit.Status(); status != (harness.Status{Status: "active", Message: "3 runners: 2 idle, 1 busy"}) {
			t.Errorf("%s: status after recovery = %+v", s.name, status)
		}
		t.Logf("storm %s: recovered in %v", s.name, time.Since(start).Round(time.Second))
		if t.Failed() {
			t.FailNow()
		}
	}
	reconcileIsQuiet(b)
}

// deleteOneIdle deletes the instance of an idle runner, leaving its GitHub
// runner without an instance for the next good cycle to clean up.
func deleteOneIdle(b *stack.Bed, guard *busyGuard) {
	b.T.Helper()
	for _, name := range b.RunnerNames() {
		if name != guard.job.RunnerName {
			if err := lxdtest.DeleteInstance(b.LXD, name); err != nil {
				b.T.Fatal(err)
			}
			return
		}
	}
	b.T.Fatal("no idle runner to delete")
}

// checkClearTime checks the time a rate-limit status gives: the clock time
// the primary limit resets, or the wait a secondary limit asked for.
func checkClearTime(t *testing.T, s storm, said string, injected time.Time) {
	t.Helper()
	if strings.Contains(s.status.String(), "UTC") {
		reset := injected.Add(s.holdsFor).UTC()
		for _, ok := range []string{reset.Format("15:04"), reset.Add(time.Minute).Format("15:04")} {
			if said == ok {
				return
			}
		}
		t.Errorf("%s: the status says the limit clears at %s UTC, want about %s", s.name, said, reset.Format("15:04:05"))
		return
	}
	wait, _ := time.ParseDuration(said + "s")
	if wait <= 0 || wait > s.holdsFor {
		t.Errorf("%s: the status says to wait %v, want up to %v", s.name, wait, s.holdsFor)
	}
}
