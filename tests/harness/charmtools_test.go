package harness_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/charm"
	"github.com/canonical/github-runner-charm/tests/harness"
)

// TestCharmToolsHelper is not a test of its own: TestCharmToolsAgainstHarness
// runs this test binary as a hook's program (ExecIn), where it calls one of
// the charm's Tools methods against the harness's hook tools and prints the
// outcome. Outside a hook context (no JUJU_CONTEXT_ID) it does nothing.
func TestCharmToolsHelper(t *testing.T) {
	if os.Getenv("JUJU_CONTEXT_ID") == "" {
		return
	}
	args := flag.Args()
	tools := &charm.Tools{}
	ctx := context.Background()
	var out any
	var err error
	switch args[0] {
	case "secret-get":
		out, err = tools.SecretGet(ctx, args[1], len(args) > 2 && args[2] == "refresh")
	case "relation-ids":
		out, err = tools.RelationIDs(ctx, args[1])
	case "relation-list":
		out, err = tools.RelationList(ctx, args[1])
	case "relation-get":
		out, err = tools.RelationGet(ctx, args[1], args[2], len(args) > 3 && args[3] == "app")
	case "relation-set":
		var data map[string]string
		if err = json.Unmarshal([]byte(args[3]), &data); err == nil {
			err = tools.RelationSet(ctx, args[1], args[2] == "app", data)
		}
	}
	switch {
	case errors.Is(err, charm.ErrSecretNotFound):
		fmt.Printf("not-found: %v\n", err)
	case errors.Is(err, charm.ErrSecretNotGranted):
		fmt.Printf("not-granted: %v\n", err)
	case err != nil:
		fmt.Printf("error: %v\n", err)
	default:
		b, _ := json.Marshal(out)
		fmt.Printf("ok: %s\n", b)
	}
	os.Exit(0)
}

// The charm's client side of the relation and secret tools (charm/
// relationtools.go) against the harness's Juju-faithful tools: relation data
// goes through `--file -` and comes back byte for byte (YAML-special values
// included), and secret-get's failures map to ErrSecretNotFound and
// ErrSecretNotGranted from Juju's own texts.
func TestCharmToolsAgainstHarness(t *testing.T) {
	u := harness.New(t, harness.Options{})
	id := u.Relate("cos-agent", "agent", map[string]string{"app": "data"}, map[string]map[string]string{"agent/0": {"k": "v"}, "agent/1": {}})
	granted := u.AddSecret(map[string]string{"token": "abc"})
	u.GrantSecret(granted)
	notGranted := u.AddSecret(map[string]string{"token": "abc"})
	removed := u.AddSecret(map[string]string{"token": "abc"})
	u.RemoveSecret(removed)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	call := func(t *testing.T, argv ...string) string {
		t.Helper()
		r := u.ExecIn(harness.ExecHook{Hook: "update-status"}, append([]string{self, "-test.run=^TestCharmToolsHelper$", "--"}, argv...)...)
		if r.Code != 0 {
			t.Fatalf("helper exit %d: %s %s", r.Code, r.Stdout, r.Stderr)
		}
		return strings.TrimSpace(r.Stdout)
	}
	tricky := map[string]string{
		"multi":  "line one\nline two: with colon\n",
		"yes":    "yes",
		"number": "007",
		"null":   "null",
		"list":   "- a",
		"quote":  `it's "quoted"`,
		"json":   `{"a": [1, 2]}`,
		"space":  "  padded  ",
	}
	trickyJSON, _ := json.Marshal(tricky)
	for _, tc := range []struct {
		name string
		argv []string
		want string // prefix
	}{
		{"granted", []string{"secret-get", granted}, `ok: {"token":"abc"}`},
		{"granted, refresh", []string{"secret-get", granted, "refresh"}, `ok: {"token":"abc"}`},
		{"not granted", []string{"secret-get", notGranted}, "not-granted: cannot read secret " + notGranted},
		{"removed", []string{"secret-get", removed}, "not-found: cannot read secret " + removed},
		{"relation-ids", []string{"relation-ids", "cos-agent"}, `ok: ["cos-agent:1"]`},
		{"relation-ids none", []string{"relation-ids", "image"}, `ok: []`},
		{"relation-list", []string{"relation-list", "cos-agent:1"}, `ok: ["agent/0","agent/1"]`},
		{"relation-get unit", []string{"relation-get", "cos-agent:1", "agent/0"}, `ok: {"k":"v"}`},
		{"relation-get empty unit", []string{"relation-get", "cos-agent:1", "agent/1"}, `ok: {}`},
		{"relation-get app", []string{"relation-get", "cos-agent:1", "agent", "app"}, `ok: {"app":"data"}`},
		{"relation-set", []string{"relation-set", "cos-agent:1", "unit", string(trickyJSON)}, `ok: null`},
		{"relation-set app, not leader", []string{"relation-set", "cos-agent:1", "app", `{"a":"b"}`}, "error: cannot run relation-set: cannot write relation settings"},
		{"relation-get unknown relation", []string{"relation-get", "cos-agent:9", "agent/0"}, `error: cannot run relation-get: invalid value "cos-agent:9" for flag -r: relation not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := call(t, tc.argv...); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want it to start with %q", got, tc.want)
			}
		})
	}
	if got := u.LocalUnitData(id); !maps.Equal(withoutCharmKeys(got, nil), tricky) {
		t.Errorf("relation data did not round-trip:\n got  %q\n want %q", got, tricky)
	}
	// "" deletes.
	call(t, "relation-set", "cos-agent:1", "unit", `{"yes":"","null":""}`)
	want := maps.Clone(tricky)
	delete(want, "yes")
	delete(want, "null")
	if got := u.LocalUnitData(id); !maps.Equal(withoutCharmKeys(got, nil), want) {
		t.Errorf("after deleting: %q", got)
	}
	if got := u.TrackedRevision(granted); got != 1 {
		t.Errorf("tracked revision %d", got)
	}
}
