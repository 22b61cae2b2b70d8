package harness_test

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/tests/harness"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m))
}

// The fake hook tools must keep Juju's CLI contract, or a charm that passes
// here could fail under a real agent.
func TestToolContract(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: false})
	u.SetConfig(map[string]any{"path": "org", "virtual-machines": 3})
	tests := []struct {
		argv       []string
		code       int
		stdout     string // exact, when not empty
		stderrHas  string
		wantStatus *harness.Status
	}{
		{argv: []string{"config-get", "path"}, stdout: "org\n"},
		{argv: []string{"config-get", "virtual-machines", "--format=json"}, stdout: "3\n"},
		{argv: []string{"config-get", "--format", "json", "no-such-option"}, stdout: "null\n"},
		{argv: []string{"config-get", "--all", "path"}, code: 2, stderrHas: "ERROR cannot use argument --all"},
		{argv: []string{"config-get", "--bogus"}, code: 2, stderrHas: "ERROR flag provided but not defined: --bogus"},
		{argv: []string{"config-get", "--format=xml"}, code: 2, stderrHas: "ERROR invalid value"},
		{argv: []string{"status-set", "active", "--", "-3 runners"}, wantStatus: &harness.Status{Status: "active", Message: "-3 runners"}},
		{argv: []string{"status-set", "blocked"}, wantStatus: &harness.Status{Status: "blocked"}},
		{argv: []string{"status-set", "error", "x"}, code: 2, stderrHas: `ERROR invalid status "error", expected one of [maintenance blocked waiting active]`},
		{argv: []string{"status-set", "active", "a", "b"}, code: 2, stderrHas: "ERROR unrecognized args"},
		{argv: []string{"status-set", "--application", "active", "x"}, code: 1, stderrHas: "ERROR this unit is not the leader"},
		{argv: []string{"is-leader", "--format=json"}, stdout: "false\n"},
		{argv: []string{"is-leader"}, stdout: "False\n"},
		{argv: []string{"juju-log"}, code: 2, stderrHas: "ERROR no message specified"},
		{argv: []string{"juju-log", "--log-level", "WARNING", "--", "hello", "world"}},
		{argv: []string{"application-version-set"}, code: 2, stderrHas: "ERROR no version specified"},
		{argv: []string{"action-get"}, code: 1, stderrHas: "ERROR not running an action"},
		{argv: []string{"action-set", "a=1"}, code: 1, stderrHas: "ERROR not running an action"},
	}
	for _, test := range tests {
		t.Run(strings.Join(test.argv, " "), func(t *testing.T) {
			r := u.Exec("update-status", false, nil, test.argv...)
			if r.Code != test.code {
				t.Fatalf("exit %d, want %d (stderr %q)", r.Code, test.code, r.Stderr)
			}
			if test.stdout != "" && r.Stdout != test.stdout {
				t.Errorf("stdout %q, want %q", r.Stdout, test.stdout)
			}
			if !strings.Contains(r.Stderr, test.stderrHas) {
				t.Errorf("stderr %q, want it to contain %q", r.Stderr, test.stderrHas)
			}
			if test.wantStatus != nil && u.Status() != *test.wantStatus {
				t.Errorf("status %+v, want %+v", u.Status(), *test.wantStatus)
			}
		})
	}
	if logs := u.Logs(); len(logs) != 1 || logs[0] != (harness.LogLine{Level: "WARNING", Message: "hello world"}) {
		t.Errorf("logs = %+v", logs)
	}
}

func TestActionToolContract(t *testing.T) {
	u := harness.New(t, harness.Options{})
	params := map[string]any{"flush-busy": true, "nested": map[string]any{"key": "v"}}
	tests := []struct {
		argv      []string
		code      int
		stdout    string
		stderrHas string
		results   map[string]any
	}{
		{argv: []string{"action-get", "--format=json"}, stdout: `{"flush-busy":true,"nested":{"key":"v"}}` + "\n"},
		{argv: []string{"action-get", "nested.key"}, stdout: "v\n"},
		{argv: []string{"action-get", "missing", "--format=json"}, stdout: "null\n"},
		{argv: []string{"action-set", "removed=3", "a.b=1", "a.c=2"}, results: map[string]any{"removed": "3", "a": map[string]any{"b": "1", "c": "2"}}},
		{argv: []string{"action-set", "Removed=3"}, code: 2, stderrHas: "ERROR key \"Removed\" must start and end with lowercase alphanumeric"},
		{argv: []string{"action-set", "a_b=3"}, code: 2, stderrHas: "must start and end with lowercase alphanumeric"},
		{argv: []string{"action-set", "stdout=x"}, code: 2, stderrHas: `ERROR cannot set reserved action key "stdout"`},
		{argv: []string{"action-set", "novalue"}, code: 2, stderrHas: "must be of the form key...=value"},
		{argv: []string{"action-fail", "a", "b"}, code: 2, stderrHas: "ERROR unrecognized args"},
	}
	for _, test := range tests {
		t.Run(strings.Join(test.argv, " "), func(t *testing.T) {
			r := u.Exec("flush-runners", true, params, test.argv...)
			if r.Code != test.code {
				t.Fatalf("exit %d, want %d (stderr %q)", r.Code, test.code, r.Stderr)
			}
			if test.stdout != "" && r.Stdout != test.stdout {
				t.Errorf("stdout %q, want %q", r.Stdout, test.stdout)
			}
			if !strings.Contains(r.Stderr, test.stderrHas) {
				t.Errorf("stderr %q, want it to contain %q", r.Stderr, test.stderrHas)
			}
			if test.results != nil && !reflect.DeepEqual(r.Results, test.results) {
				t.Errorf("results %v, want %v", r.Results, test.results)
			}
		})
	}
	r := u.Exec("flush-runners", true, params, "action-fail")
	if r.Status != "failed" || r.Message != "action failed without reason given, check action for errors" {
		t.Errorf("action-fail without message: %+v", r)
	}
}
