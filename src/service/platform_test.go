package service

import (
	"errors"
	"testing"

	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// After a path change, the platform asks about a runner in the path it was
// registered in, through the real client against the fake GitHub: GitHub's
// answer there decides, and a 404 counts as gone only where the
// credentials can read that path at all.
func TestRemoveAsksInTheRunnersOwnScope(t *testing.T) {
	const oldRepo, newRepo, token = "canonical/old-runners", "canonical/runners", "ghp_scopetest"
	tests := []struct {
		name      string
		scope     string // the token's reach
		busy      bool
		otherAPI  bool
		wantErr   error // nil: removed
		wantGone  bool
		wantNoNil bool // some error other than busy
	}{
		{name: "idle in the old path: removed there", scope: "canonical", wantGone: true},
		{name: "busy in the old path: kept", scope: "canonical", busy: true, wantErr: manager.ErrBusy},
		{name: "old path out of the token's reach: not proof of gone", scope: newRepo, wantNoNil: true},
		{name: "registered at another API: never asked", scope: "canonical", otherAPI: true, wantNoNil: true},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			fake := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{{Value: token, Scope: test.scope}}})
			r, err := fake.AddRunner(oldRepo, fakegithub.RunnerSpec{Name: managertest.Identity.NewName(), Online: true, Ephemeral: true})
			if err != nil {
				t.Fatal(err)
			}
			if test.busy {
				if _, err := fake.AssignJob(r.ID, fakegithub.JobSpec{}); err != nil {
					t.Fatal(err)
				}
			}
			cfg := github.Config{Path: newRepo, BaseURL: fake.URL(), Token: token, Logger: discardLog()}
			client, err := github.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := newPlatform(client, managertest.Identity, runner.NewScope(fake.URL(), newRepo), nil)
			p.elsewhere = func(path string) (*github.Client, error) {
				c := cfg
				c.Path = path
				return github.New(c)
			}
			old := runner.NewScope(fake.URL(), oldRepo)
			if test.otherAPI {
				old = runner.NewScope("https://ghe.example.com/api/v3", oldRepo)
			}
			err = p.Remove(t.Context(), old, r.ID)
			switch {
			case test.wantErr != nil && !errors.Is(err, test.wantErr):
				t.Errorf("err = %v, want %v", err, test.wantErr)
			case test.wantNoNil && (err == nil || errors.Is(err, manager.ErrBusy)):
				t.Errorf("err = %v, want an error that keeps the instance", err)
			case test.wantErr == nil && !test.wantNoNil && err != nil:
				t.Errorf("err = %v", err)
			}
			_, present := fake.Runner(r.ID)
			if present == test.wantGone {
				t.Errorf("runner present at GitHub: %v, want %v", present, !test.wantGone)
			}
		})
	}
}
