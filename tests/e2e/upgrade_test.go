package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// After `juju refresh` from the version without model tags, the runners it
// made (named <app>-<unit>-<12 hex>, metadata without the model) are
// neither leaked nor killed: the idle one is replaced, the busy one
// finishes its job, and a GitHub runner of the old naming with no instance
// of this unit (it may be another model's) is left alone.
func TestUpgradeRetiresRunnersOfTheOldNaming(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "upg", Token: token, Label: "upg", Runners: 1})
	id, err := runner.ParseIdentity(b.Unit.Model(), b.Unit.Name)
	if err != nil {
		t.Fatal(err)
	}
	legacy := id.LegacyPrefix()
	t.Cleanup(func() { lxdtest.DeleteAll(b.LXD, legacy+"-") })
	made := func(suffix string, busy bool) (fakegithub.Runner, int64) {
		r, err := b.GitHub.AddRunner(stack.Repo, fakegithub.RunnerSpec{Name: legacy + "-" + suffix, Online: true, Ephemeral: true, Labels: []string{b.Label}})
		if err != nil {
			t.Fatal(err)
		}
		lxdtest.Launch(t, b.LXD, r.Name, lxdtest.BaseImageAlias, map[string]string{
			"user." + runner.MetaUnit:      id.UnitName(),
			"user." + runner.MetaRunnerID:  strconv.FormatInt(r.ID, 10),
			"user." + runner.MetaCreatedAt: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339),
		})
		var job int64
		if busy {
			j, err := b.GitHub.AssignJob(r.ID, fakegithub.JobSpec{Sleep: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			job = j.ID
		}
		return r, job
	}
	idle, _ := made("0123456789ab", false)
	busy, job := made("ba9876543210", true)
	var foreign fakegithub.Runner
	foreign, err = b.GitHub.AddRunner(stack.Repo, fakegithub.RunnerSpec{Name: legacy + "-aaaaaaaaaaaa", Online: true, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}

	b.Unit.Deploy()
	b.Converge(1)
	if exists(t, b, idle.Name) {
		t.Errorf("the idle runner of the old naming %s is still there", idle.Name)
	}
	if _, ok := b.GitHub.Runner(idle.ID); ok {
		t.Errorf("the idle runner's GitHub record leaked")
	}
	for range 2 {
		b.Reconcile()
		if !exists(t, b, busy.Name) {
			t.Fatalf("the busy runner of the old naming %s was deleted mid-job", busy.Name)
		}
	}
	report := b.Unit.Action("check-runners", nil)
	if !slices.Contains(strings.Split(fmt.Sprint(report.Results["runners"]), ","), busy.Name) {
		t.Errorf("check-runners does not show the retiring runner: %+v", report)
	}

	// The job ends: GitHub drops the ephemeral runner, which powers off.
	if err := b.GitHub.CompleteJob(job, 0); err != nil {
		t.Fatal(err)
	}
	stop(t, b, busy.Name)
	b.Reconcile()
	if exists(t, b, busy.Name) {
		t.Errorf("the finished runner of the old naming %s is still there", busy.Name)
	}
	if _, ok := b.GitHub.Runner(foreign.ID); !ok {
		t.Error("a GitHub runner of the old naming with no instance of this unit was removed")
	}
	b.Converge(1)
}

func exists(t *testing.T, b *stack.Bed, name string) bool {
	t.Helper()
	names, err := b.LXD.GetInstanceNames(api.InstanceTypeContainer)
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(names, name)
}

func stop(t *testing.T, b *stack.Bed, name string) {
	t.Helper()
	op, err := b.LXD.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := op.WaitContext(ctx); err != nil {
		t.Fatal(err)
	}
}
