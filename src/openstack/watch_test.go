package openstack

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

func TestFinishedSince(t *testing.T) {
	for _, tc := range []struct {
		what      string
		last, now map[string]string
		want      bool
	}{
		{"nothing changed", map[string]string{"a": "ACTIVE", "b": "SHUTOFF"}, map[string]string{"a": "ACTIVE", "b": "SHUTOFF"}, false},
		{"a runner powered off", map[string]string{"a": "ACTIVE"}, map[string]string{"a": "SHUTOFF"}, true},
		{"a server failed", map[string]string{"a": "ACTIVE"}, map[string]string{"a": "ERROR"}, true},
		{"a booting server failed", map[string]string{"a": "BUILD"}, map[string]string{"a": "ERROR"}, true},
		{"a running server went away", map[string]string{"a": "ACTIVE"}, map[string]string{}, true},
		{"an off server deleted (the manager's cleanup)", map[string]string{"a": "SHUTOFF", "b": "ACTIVE"}, map[string]string{"b": "ACTIVE"}, false},
		{"a new server booting", map[string]string{}, map[string]string{"a": "BUILD"}, false},
		{"a new server already off (a job within one poll)", map[string]string{}, map[string]string{"a": "SHUTOFF"}, true},
		{"paused: its job goes on", map[string]string{"a": "ACTIVE"}, map[string]string{"a": "PAUSED"}, false},
		{"booted", map[string]string{"a": "BUILD"}, map[string]string{"a": "ACTIVE"}, false},
	} {
		if got := finishedSince(tc.last, tc.now); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.what, got, tc.want)
		}
	}
}

// watching is a watch polling every 300ms until the test ends: changes
// gets a value for each call of changed, polls one after each poll.
type watching struct {
	changes, polls chan struct{}
}

func startWatch(t *testing.T, c *Cloud) *watching {
	t.Helper()
	w := &watching{changes: make(chan struct{}, 100), polls: make(chan struct{}, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		ended <- c.watch(ctx, func() { w.changes <- struct{}{} }, 300*time.Millisecond, func() { w.polls <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ended:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want ctx's error", err)
			}
		case <-time.After(time.Minute):
			t.Error("Watch did not return once its ctx ended")
		}
	})
	return w
}

// afterPolls waits until n polls more have been made.
func (w *watching) afterPolls(t *testing.T, n int) {
	t.Helper()
	for range len(w.polls) {
		<-w.polls
	}
	for range n {
		select {
		case <-w.polls:
		case <-time.After(time.Minute):
			t.Fatal("the watch did not poll for a minute")
		}
	}
}

// changed tells whether changed was called since the last look.
func (w *watching) changed() bool {
	called := false
	for {
		select {
		case <-w.changes:
			called = true
		default:
			return called
		}
	}
}

// The watch calls changed, within a poll or two, when one of the unit's
// servers goes SHUTOFF (its runner's poweroff), goes to ERROR, or goes away
// while running; not when another unit's server does, nor when the unit's
// server that was off is deleted (the manager's own cleanup).
func TestWatchSeesTheUnitsServersFinish(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	c := newCloud(t, b, testConfig(b))
	id := c.cfg.Identity
	otherUnit := runner.Identity{Model: id.Model, App: id.App, Unit: 1}
	otherCfg := testConfig(b)
	otherCfg.Identity = otherUnit
	newCloud(t, b, otherCfg)
	scope := runner.NewScope("https://api.github.com", testRepo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	boot := func(id runner.Identity, runnerID int64) string {
		serverID := makeServer(t, b, id.NewName(), id.Meta(runnerID, scope))
		if _, err := openstacktest.WaitForServerStatus(ctx, b.compute, serverID, "ACTIVE", 2*time.Minute); err != nil {
			t.Fatal(err)
		}
		return serverID
	}
	others, powersOff, fails, goesAway := boot(otherUnit, 1), boot(id, 2), boot(id, 3), boot(id, 4)
	w := startWatch(t, c)
	w.afterPolls(t, 2)
	if w.changed() {
		t.Error("changed was called with no server finished")
	}

	for _, step := range []struct {
		what string
		do   func() error
		want bool
	}{
		{"another unit's server powered off", func() error {
			if err := servers.Stop(ctx, b.compute, others).ExtractErr(); err != nil {
				return err
			}
			_, err := openstacktest.WaitForServerStatus(ctx, b.compute, others, "SHUTOFF", 2*time.Minute)
			return err
		}, false},
		{"the unit's server powered off", func() error {
			if err := servers.Stop(ctx, b.compute, powersOff).ExtractErr(); err != nil {
				return err
			}
			_, err := openstacktest.WaitForServerStatus(ctx, b.compute, powersOff, "SHUTOFF", 2*time.Minute)
			return err
		}, true},
		{"the unit's server that was off deleted", func() error {
			if err := servers.Delete(ctx, b.compute, powersOff).ExtractErr(); err != nil {
				return err
			}
			return openstacktest.WaitForServerDeleted(ctx, b.compute, powersOff, 2*time.Minute)
		}, false},
		{"the unit's server in ERROR", func() error {
			return servers.ResetState(ctx, b.admin, fails, servers.StateError).ExtractErr()
		}, true},
		{"the unit's running server deleted from outside", func() error {
			if err := servers.Delete(ctx, b.compute, goesAway).ExtractErr(); err != nil {
				return err
			}
			return openstacktest.WaitForServerDeleted(ctx, b.compute, goesAway, 2*time.Minute)
		}, true},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		w.afterPolls(t, 2)
		if got := w.changed(); got != step.want {
			t.Errorf("%s: changed called %v, want %v", step.what, got, step.want)
		}
	}
}
