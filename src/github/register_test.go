package github

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestRegistrationNeverPrintsItsSecret(t *testing.T) {
	const jitSecret = "eyJSECRETjitCONFIG"
	for _, reg := range []Registration{{RunnerID: 5, EncodedJITConfig: jitSecret}} {
		var logs bytes.Buffer
		slog.New(slog.NewTextHandler(&logs, nil)).Info("registered", "registration", reg)
		slog.New(slog.NewJSONHandler(&logs, nil)).Info("registered", "registration", reg)
		printed := fmt.Sprintf("%v %+v %#v %s", reg, reg, reg, reg) + logs.String()
		assertNoSecret(t, "printed registration", printed, jitSecret)
		if !strings.Contains(printed, "5") {
			t.Errorf("printed registration %q does not say its runner", printed)
		}
	}
}

// groupServer is a local org whose runner groups can change under the
// client, which the fake does not offer.
type groupServer struct {
	mu        sync.Mutex
	groups    map[string]int64
	jitGroups []int64 // runner_group_id of each JIT request
	tokens    int
}

func (g *groupServer) handle(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch r.URL.Path {
	case "/api/v3/orgs/canonical/actions/runner-groups":
		var list []string
		for name, id := range g.groups {
			list = append(list, fmt.Sprintf(`{"id":%d,"name":%q}`, id, name))
		}
		writeJSON(w, 200, fmt.Sprintf(`{"total_count":%d,"runner_groups":[%s]}`, len(list), strings.Join(list, ",")))
	case "/api/v3/orgs/canonical/actions/runners/generate-jitconfig":
		var req struct {
			RunnerGroupID int64 `json:"runner_group_id"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		g.jitGroups = append(g.jitGroups, req.RunnerGroupID)
		known := false
		for _, id := range g.groups {
			known = known || id == req.RunnerGroupID
		}
		if !known {
			writeJSON(w, 404, `{"message":"Not Found"}`)
			return
		}
		writeJSON(w, 201, `{"runner":{"id":77,"name":"r"},"encoded_jit_config":"eyJjb25maWc"}`)
	case "/api/v3/orgs/canonical/actions/runners/registration-token":
		g.tokens++
		writeJSON(w, 201, `{"token":"AREGTOKEN","expires_at":"2030-01-01T00:00:00Z"}`)
	default:
		writeJSON(w, 404, `{"message":"Not Found"}`)
	}
}

func TestRegisterRunnerRelooksUpADeletedGroup(t *testing.T) {
	g := &groupServer{groups: map[string]int64{"Default": 1, "gpu": 5}}
	srv := newCountingServer(t, g.handle)
	cfg := testConfig("canonical", srv.apiURL(), &syncBuffer{})
	cfg.RunnerGroup = "gpu"
	c := mustNew(t, cfg)
	ctx := context.Background()
	if _, err := c.RegisterRunner(ctx, "r-1", []string{"linux"}); err != nil {
		t.Fatalf("first RegisterRunner: %v", err)
	}
	// The operator re-creates the group: it gets a new id.
	g.mu.Lock()
	g.groups["gpu"] = 6
	g.mu.Unlock()
	reg, err := c.RegisterRunner(ctx, "r-2", []string{"linux"})
	if err != nil || reg.RunnerID != 77 {
		t.Fatalf("second RegisterRunner = %v, %v; want a JIT registration", reg, err)
	}
	if want := []int64{5, 5, 6}; fmt.Sprint(g.jitGroups) != fmt.Sprint(want) {
		t.Errorf("JIT requests used groups %v, want %v (cached, stale, looked up afresh)", g.jitGroups, want)
	}
	// The group is deleted: the error names the group, not the endpoint.
	g.mu.Lock()
	delete(g.groups, "gpu")
	g.mu.Unlock()
	_, err = c.RegisterRunner(ctx, "r-3", []string{"linux"})
	if !errors.Is(err, ErrRunnerGroupNotFound) {
		t.Fatalf("RegisterRunner with a deleted group: %v, want ErrRunnerGroupNotFound", err)
	}
	if msg := OperatorMessage(err); !strings.Contains(msg, `runner group "gpu" not found in organisation canonical`) {
		t.Errorf("operator message = %q", msg)
	}
	if g.tokens != 0 {
		t.Errorf("registration tokens requested = %d, want 0: the endpoint was never missing", g.tokens)
	}
}

func TestRegisterRunnerNeedsNameAndLabels(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {})
	c := mustNew(t, testConfig("canonical/repo", srv.apiURL(), &syncBuffer{}))
	for _, tt := range []struct {
		name   string
		labels []string
	}{{"", []string{"linux"}}, {"r-1", nil}} {
		if _, err := c.RegisterRunner(context.Background(), tt.name, tt.labels); !errors.Is(err, ErrRejected) {
			t.Errorf("RegisterRunner(%q, %v) error = %v, want ErrRejected", tt.name, tt.labels, err)
		}
	}
	if srv.requests.Load() != 0 {
		t.Errorf("requests = %d, want none for an invalid request", srv.requests.Load())
	}
}
