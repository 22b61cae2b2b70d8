package manager_test

import (
	"context"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
)

// recordingCloud is the in-memory cloud, keeping each create's request.
type recordingCloud struct {
	*managertest.Cloud
	mu       sync.Mutex
	requests []cloud.CreateRequest
}

func (c *recordingCloud) Create(ctx context.Context, req cloud.CreateRequest) error {
	c.mu.Lock()
	c.requests = append(c.requests, req)
	c.mu.Unlock()
	return c.Cloud.Create(ctx, req)
}

// TestEveryNewRunnerGetsOneEnvironmentAtRandom: with the debug-ssh
// relation's servers as choices, each runner gets exactly one of them, and
// over many runners every server is used (the sessions are spread); a
// runner changing its copy changes no other's.
func TestEveryNewRunnerGetsOneEnvironmentAtRandom(t *testing.T) {
	for _, tc := range []struct {
		name    string
		choices []map[string]string
	}{
		{name: "no servers"},
		{name: "one server", choices: []map[string]string{{"TMATE_SERVER_HOST": "10.0.0.1", "TMATE_SERVER_PORT": "10022"}}},
		{name: "three servers", choices: []map[string]string{
			{"TMATE_SERVER_HOST": "10.0.0.1", "TMATE_SERVER_PORT": "10022"},
			{"TMATE_SERVER_HOST": "10.0.0.2", "TMATE_SERVER_PORT": "10022"},
			{"TMATE_SERVER_HOST": "tmate.example.com", "TMATE_SERVER_PORT": "22"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const runners = 90 // every one of three used, but for 3·(2/3)^90 ≈ 4e-16
			c := &recordingCloud{Cloud: managertest.NewCloud()}
			s := settings(runners)
			s.Environments = tc.choices
			engine := manager.New(c, managertest.NewPlatform(), s, slog.New(slog.NewTextHandler(io.Discard, nil)))
			out, err := engine.Run(context.Background(), manager.Reconcile)
			if err != nil || out.Created != runners {
				t.Fatalf("created %d, error %v", out.Created, err)
			}
			used := make([]int, len(tc.choices))
			for _, req := range c.requests {
				if len(tc.choices) == 0 {
					if req.Environment != nil {
						t.Fatalf("runner %s got %v with no choices", req.Name, req.Environment)
					}
					continue
				}
				found := -1
				for i, choice := range tc.choices {
					if maps.Equal(req.Environment, choice) {
						found = i
					}
				}
				if found < 0 {
					t.Fatalf("runner %s got %v, none of the choices", req.Name, req.Environment)
				}
				used[found]++
				req.Environment["TMATE_SERVER_HOST"] = "changed"
			}
			for i, n := range used {
				if n == 0 {
					t.Errorf("choice %v given to none of %d runners: %v", tc.choices[i], runners, used)
				}
				if tc.choices[i]["TMATE_SERVER_HOST"] == "changed" {
					t.Errorf("a runner's environment is the choice itself, not a copy")
				}
			}
		})
	}
}
