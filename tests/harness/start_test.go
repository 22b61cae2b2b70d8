package harness_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/tests/harness"
)

// A manager that exits at start for a cause no config check foresees (its
// events log is a directory) fails no hook: the unit is Blocked with the
// manager's own error, every action fails with it, and once the cause is
// gone update-status starts the manager.
func TestManagerThatCannotStartBlocksTheUnit(t *testing.T) {
	tests := []struct {
		name string
		// root is the unit's state root; nil for the harness's own.
		root func(t *testing.T) string
		// cause breaks the unit's start; undo, if not nil, mends it.
		cause func(t *testing.T, stateDir string) (undo func())
		want  string
	}{
		{"events log is a directory", nil, func(t *testing.T, stateDir string) func() {
			// GITHUB_RUNNER_LOG_ROOT is the state root's log (see unit.go).
			path := filepath.Join(filepath.Dir(stateDir), "log", "github-runner-metrics", filepath.Base(stateDir)+".log")
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			return func() { os.Remove(path) }
		}, "cannot open events log"},
		// Juju's own root is short; this one leaves room for the manager's
		// socket (which config checks) but not for Pebble's, longer one.
		{"Pebble's socket path too long", func(t *testing.T) string {
			dir, err := os.MkdirTemp("", "gr-") // t.TempDir's name is long already
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			return filepath.Join(dir, strings.Repeat("d", 72-len(dir)))
		}, func(*testing.T, string) func() { return nil }, "is too deep for Pebble's socket"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			config, _ := withFakeGitHub(t)
			opts := harness.Options{Leader: true}
			if test.root != nil {
				opts.StateRoot = test.root(t)
			}
			u := harness.New(t, opts)
			u.SetConfig(config)
			undo := test.cause(t, u.StateDir())
			u.Deploy() // fails the test if any hook exits non-zero
			s := u.Status()
			if s.Status != "blocked" || !strings.HasPrefix(s.Message, "the runner manager cannot start: ") || !strings.Contains(s.Message, test.want) {
				t.Fatalf("status = %+v, want blocked saying %q\n%s", s, test.want, u.ServiceLogs())
			}
			for _, action := range []string{"check-runners", "reconcile-runners", "flush-runners", "update-dependencies"} {
				if r := u.Action(action, nil); r.Status != "failed" || r.Message != s.Message || r.Code != 0 {
					t.Errorf("%s while the manager cannot start: %+v, want failed with %q", action, r, s.Message)
				}
			}
			if undo == nil {
				assertNoSecret(t, u)
				return // the cause stays
			}
			undo()
			if r := u.Hook("update-status"); r.Code != 0 {
				t.Fatalf("update-status exit %d: %s", r.Code, r.Stderr)
			}
			if s := u.Status(); s.Status == "blocked" || u.ManagerPID() == 0 {
				t.Errorf("after the cause is gone: status %+v, manager pid %d", s, u.ManagerPID())
			}
			assertNoSecret(t, u)
		})
	}
}
