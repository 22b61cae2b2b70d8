package fakegithub_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// TestBrokerFlow follows a JIT runner through its life as the API shows
// it: offline, online after the status lag, busy with a job, gone after it.
func TestBrokerFlow(t *testing.T) {
	const lag = 200 * time.Millisecond
	srv := fakegithub.NewTest(t, fakegithub.Options{StatusLag: lag})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, _ := generateJIT(t, srv, "canonical", "flow")
	runnerPath := fmt.Sprintf("/orgs/canonical/actions/runners/%d", id)
	show := func() runnerJSON {
		t.Helper()
		resp, data := request(t, srv, "GET", runnerPath, fakegithub.DefaultToken, "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET runner: status %d", resp.StatusCode)
		}
		return decode[runnerJSON](t, data)
	}

	connected := time.Now()
	if err := srv.ConnectRunner(id); err != nil {
		t.Fatal(err)
	}
	if r := show(); r.Status != "offline" || r.OS != "linux" {
		t.Errorf("just connected: %+v, want offline linux (status lag)", r)
	}
	if err := srv.WaitRunnersOnline(ctx, "canonical", 1); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(connected); elapsed < lag {
		t.Errorf("online after %v, want at least %v", elapsed, lag)
	}
	if r := show(); r.Status != "online" || r.Busy {
		t.Errorf("after the lag: %+v, want online and idle", r)
	}

	job, err := srv.AssignJob(id, fakegithub.JobSpec{Command: "true"})
	if err != nil {
		t.Fatal(err)
	}
	if r := show(); !r.Busy {
		t.Errorf("with a job: %+v, want busy", r)
	}
	if _, err := srv.AssignJob(id, fakegithub.JobSpec{}); !errors.Is(err, fakegithub.ErrConflict) {
		t.Errorf("second job for a busy runner: %v, want ErrConflict", err)
	}
	if err := srv.CompleteJob(job.ID, 0); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitRunnerGone(ctx, id); err != nil {
		t.Fatal(err)
	}
	if resp, _ := request(t, srv, "GET", runnerPath, fakegithub.DefaultToken, ""); resp.StatusCode != 404 {
		t.Errorf("after its job the ephemeral runner answers %d, want 404", resp.StatusCode)
	}
	if err := srv.CompleteJob(job.ID, 0); !errors.Is(err, fakegithub.ErrConflict) {
		t.Errorf("completing a job twice: %v, want ErrConflict", err)
	}
}

func TestNonEphemeralRunnerStaysAfterItsJob(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	r, err := srv.AddRunner("canonical/repo", fakegithub.RunnerSpec{Name: "long-lived", Online: true, Labels: []string{"arm"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.AssignJobToAny("canonical/repo", []string{"gpu"}, fakegithub.JobSpec{}); !errors.Is(err, fakegithub.ErrNotFound) {
		t.Errorf("a job no runner matches: %v, want ErrNotFound", err)
	}
	job, err := srv.AssignJobToAny("canonical/repo", []string{"ARM", "linux"}, fakegithub.JobSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.CompleteJob(job.ID, 1); err != nil {
		t.Fatal(err)
	}
	got, ok := srv.Runner(r.ID)
	if !ok || got.Busy || got.JobID != 0 {
		t.Errorf("after its job: %+v (exists %v), want an idle runner", got, ok)
	}
}

func TestWaitsEndWithTheirContext(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.WaitRunnersOnline(ctx, "", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitRunnersOnline: %v, want a deadline error", err)
	}
	if _, err := srv.WaitJob(context.Background(), 42); !errors.Is(err, fakegithub.ErrNotFound) {
		t.Errorf("WaitJob of an unknown job: %v, want ErrNotFound", err)
	}
}

func TestAddRunnersRejectsConflicts(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	if _, err := srv.AddRunners("o", 2, fakegithub.RunnerSpec{Name: "r"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		scope string
		spec  fakegithub.RunnerSpec
		want  error
	}{
		{"o", fakegithub.RunnerSpec{Name: "R-1"}, fakegithub.ErrConflict},
		{"o", fakegithub.RunnerSpec{Name: "x", GroupID: 7}, fakegithub.ErrNotFound},
		{"", fakegithub.RunnerSpec{Name: "x"}, nil},
		{"o", fakegithub.RunnerSpec{}, nil},
	}
	for _, tt := range tests {
		_, err := srv.AddRunner(tt.scope, tt.spec)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("AddRunner(%q, %+v): %v, want %v", tt.scope, tt.spec, err, tt.want)
		}
	}
	if got := len(srv.Runners("")); got != 2 {
		t.Errorf("%d runners, want 2", got)
	}
	if err := srv.RemoveRunner(1); err != nil {
		t.Fatal(err)
	}
	if runners := srv.Runners("o"); len(runners) != 1 || runners[0].Name != "r-1" {
		t.Errorf("after removal: %+v", runners)
	}
}
