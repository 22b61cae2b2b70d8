package harness_test

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/tests/harness"
)

type toolCase struct {
	name      string
	hook      harness.ExecHook
	argv      []string
	code      int
	stdout    string // exact
	stderrHas string
}

func runToolCases(t *testing.T, u *harness.Unit, cases []toolCase) {
	t.Helper()
	for _, tc := range cases {
		name := tc.name
		if name == "" {
			name = strings.Join(tc.argv, " ")
		}
		t.Run(name, func(t *testing.T) {
			h := tc.hook
			if h.Hook == "" {
				h.Hook = "config-changed"
			}
			r := u.ExecIn(h, tc.argv...)
			if r.Code != tc.code {
				t.Fatalf("exit %d, want %d (stdout %q, stderr %q)", r.Code, tc.code, r.Stdout, r.Stderr)
			}
			if r.Stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", r.Stdout, tc.stdout)
			}
			if tc.stderrHas == "" && r.Stderr != "" {
				t.Errorf("stderr %q, want none", r.Stderr)
			}
			if !strings.Contains(r.Stderr, tc.stderrHas) {
				t.Errorf("stderr %q, want it to contain %q", r.Stderr, tc.stderrHas)
			}
		})
	}
}

// The relation tools keep Juju 3.6's CLI contract (jujuc relation-*.go):
// flags, defaults from the hook's relation, output formats, and exit 2 for
// usage errors (a bad -r is one: gnuflag parses it) vs 1 at run time.
func TestRelationToolContract(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: false})
	id := u.Relate("cos-agent", "grafana-agent", map[string]string{"app-key": "a"}, map[string]map[string]string{
		"grafana-agent/1": {"k": "v1"},
		"grafana-agent/0": {"k": "v0", "other": "o"},
	})
	if id != 1 {
		t.Fatalf("first relation is %d, want 1", id)
	}
	changed1 := harness.ExecHook{Hook: "cos-agent-relation-changed", Relation: id, RemoteUnit: "grafana-agent/1"}
	appChanged := harness.ExecHook{Hook: "cos-agent-relation-changed", Relation: id}
	runToolCases(t, u, []toolCase{
		{argv: []string{"relation-ids"}, code: 2, stderrHas: "ERROR no endpoint name specified\n"},
		{argv: []string{"relation-ids", "cos-agent", "--format=json"}, stdout: `["cos-agent:1"]` + "\n"},
		{argv: []string{"relation-ids", "cos-agent"}, stdout: "cos-agent:1\n"},
		{argv: []string{"relation-ids", "--format", "yaml", "cos-agent"}, stdout: "- cos-agent:1\n"},
		{argv: []string{"relation-ids", "image", "--format=json"}, stdout: "[]\n"},
		{argv: []string{"relation-ids", "image"}, stdout: ""},
		{argv: []string{"relation-ids", "a", "b"}, code: 2, stderrHas: `ERROR unrecognized args: ["b"]`},
		{name: "relation-ids defaults to the hook's relation", hook: changed1, argv: []string{"relation-ids", "--format=json"}, stdout: `["cos-agent:1"]` + "\n"},

		{argv: []string{"relation-list", "-r", "1", "--format=json"}, stdout: `["grafana-agent/0","grafana-agent/1"]` + "\n"},
		{argv: []string{"relation-list", "-r", "cos-agent:1"}, stdout: "grafana-agent/0\ngrafana-agent/1\n"},
		{argv: []string{"relation-list", "--relation=cos-agent:1", "--app"}, stdout: "grafana-agent\n"},
		{name: "relation-list defaults to the hook's relation", hook: changed1, argv: []string{"relation-list", "--format=json"}, stdout: `["grafana-agent/0","grafana-agent/1"]` + "\n"},
		{argv: []string{"relation-list"}, code: 2, stderrHas: "ERROR no relation id specified\n"},
		{argv: []string{"relation-list", "-r", "9"}, code: 2, stderrHas: `ERROR invalid value "9" for flag -r: relation not found`},
		{argv: []string{"relation-list", "-r", "cos-agent:x"}, code: 2, stderrHas: `ERROR invalid value "cos-agent:x" for flag -r: invalid relation id`},
		{argv: []string{"relation-list", "-r"}, code: 2, stderrHas: "ERROR flag needs an argument: -r"},
		{argv: []string{"relation-list", "-r", "1", "extra"}, code: 2, stderrHas: `ERROR unrecognized args: ["extra"]`},

		{name: "relation-get defaults to the remote unit", hook: changed1, argv: []string{"relation-get", "--format=json"}, stdout: `{"k":"v1"}` + "\n"},
		{hook: changed1, argv: []string{"relation-get", "k"}, stdout: "v1\n"},
		{hook: changed1, argv: []string{"relation-get", "nope"}, stdout: ""},
		{hook: changed1, argv: []string{"relation-get", "nope", "--format=json"}, stdout: "null\n"},
		{hook: changed1, argv: []string{"relation-get", "-"}, stdout: "k: v1\n"},
		{hook: changed1, argv: []string{"relation-get", "--app", "--format=json"}, stdout: `{"app-key":"a"}` + "\n"},
		{name: "relation-get in an app change reads the app", hook: appChanged, argv: []string{"relation-get", "--format=json"}, stdout: `{"app-key":"a"}` + "\n"},
		{argv: []string{"relation-get", "-r", "1", "-", "grafana-agent/0", "--format=json"}, stdout: `{"k":"v0","other":"o"}` + "\n"},
		{argv: []string{"relation-get", "-r", "1", "--app", "-", "grafana-agent/0", "--format=json"}, stdout: `{"app-key":"a"}` + "\n"},
		{argv: []string{"relation-get", "-r", "1", "-", "grafana-agent", "--format=json"}, stdout: `{"app-key":"a"}` + "\n"},
		{argv: []string{"relation-get", "-r", "1"}, code: 2, stderrHas: "ERROR no unit or application specified\n"},
		{argv: []string{"relation-get", "-r", "1", "-", "grafana-agent/0", "x"}, code: 2, stderrHas: `ERROR unrecognized args: ["x"]`},
		{argv: []string{"relation-get", "-r", "1", "--app", "-", "github-runner"}, code: 1, stderrHas: "ERROR permission denied\n"},
		{argv: []string{"relation-get", "-r", "1", "-", "prometheus/0"}, code: 1, stderrHas: "ERROR permission denied\n"},
		{argv: []string{"relation-get", "-r", "1", "-", "grafana-agent/7"}, code: 1, stderrHas: `ERROR unit "grafana-agent/7": settings not found`},
		{argv: []string{"relation-get", "-r", "1", "-", "Bad!"}, code: 1, stderrHas: `ERROR "Bad!" is not a valid unit or application`},
		{argv: []string{"relation-get", "-r", "7", "-", "grafana-agent/0"}, code: 2, stderrHas: `ERROR invalid value "7" for flag -r: relation not found`},

		{argv: []string{"relation-set", "-r", "1", "--app", "x=y"}, code: 1, stderrHas: "ERROR cannot write relation settings\n"},
		{argv: []string{"relation-set", "-r", "1", "novalue"}, code: 2, stderrHas: `ERROR expected "key=value", got "novalue"`},
		{argv: []string{"relation-set", "-r", "1", "=v"}, code: 2, stderrHas: `ERROR expected "key=value", got "=v"`},
		{argv: []string{"relation-set", "-r", "1", "a=1", "a=2"}, code: 2, stderrHas: `ERROR key "a" specified more than once`},
		{argv: []string{"relation-set", "a=1"}, code: 2, stderrHas: "ERROR no relation id specified\n"},
		{argv: []string{"relation-set", "-r", "1", "--bogus"}, code: 2, stderrHas: "ERROR flag provided but not defined: --bogus"},
		{argv: []string{"relation-set", "-r", "1", "--file", "/nonexistent/x.yaml"}, code: 1, stderrHas: "ERROR open /nonexistent/x.yaml"},
		{name: "relation-set --file - with a list", argv: []string{"relation-set", "-r", "1", "--file", "-"}, hook: harness.ExecHook{Stdin: "- a\n"}, code: 1, stderrHas: "ERROR yaml: "},
	})
	if r := u.ExecIn(changed1, "juju-log", "--", "hello"); r.Code != 0 {
		t.Fatalf("juju-log: %+v", r)
	}
	if logs := u.Logs(); len(logs) == 0 || logs[len(logs)-1] != (harness.LogLine{Level: "INFO", Message: "cos-agent:1: hello"}) {
		t.Errorf("juju-log in a relation hook: %v, want the last message prefixed with the relation", logs)
	}
	if got := withoutCharmKeys(u.LocalUnitData(id), nil); len(got) != 0 {
		t.Errorf("failed relation-set calls left data: %v", got)
	}
}

// withoutCharmKeys is bag minus the keys the charm itself may write (the
// cos-agent publisher's "config"), plus extra.
func withoutCharmKeys(bag, extra map[string]string) map[string]string {
	out := maps.Clone(bag)
	delete(out, "config")
	maps.Copy(out, extra)
	return out
}

// relation-set writes this unit's bag (or the leader's app bag) from
// key=value arguments and `--file <path>|-` (YAML or JSON; arguments win),
// "k=" deletes; relation-get of this unit shows the hook's own writes at
// once, and they are committed only when the hook exits 0.
func TestRelationSetIsTransactional(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: true})
	id := u.Relate("cos-agent", "grafana-agent", nil, map[string]map[string]string{"grafana-agent/0": {}})
	in := harness.ExecHook{Hook: "update-status"}
	sh := func(h harness.ExecHook, script string) harness.HookResult {
		t.Helper()
		return u.ExecIn(h, "/bin/sh", "-c", script)
	}

	r := sh(in, `relation-set -r cos-agent:1 a=1 && relation-get -r 1 a github-runner/0 && exit 3`)
	if r.Code != 3 || r.Stdout != "1\n" {
		t.Fatalf("own pending write: exit %d stdout %q stderr %q, want 3 and \"1\\n\"", r.Code, r.Stdout, r.Stderr)
	}
	if got := u.LocalUnitData(id); got["a"] != "" {
		t.Fatalf("a failed hook committed its relation-set: %v", got)
	}

	if r := sh(in, `relation-set -r 1 a=1 b=2`); r.Code != 0 {
		t.Fatalf("relation-set: %+v", r)
	}
	if got := withoutCharmKeys(u.LocalUnitData(id), nil); !maps.Equal(got, map[string]string{"a": "1", "b": "2"}) {
		t.Fatalf("committed %v", got)
	}

	file := filepath.Join(t.TempDir(), "data.yaml")
	if err := os.WriteFile(file, []byte("c: from-file\nd: '4'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		name  string
		h     harness.ExecHook
		argv  []string
		want  map[string]string
		wantA map[string]string
	}{
		{"stdin YAML, arguments override, k= deletes", harness.ExecHook{Hook: "update-status", Stdin: "b: from-stdin\nc: \"three\"\nn: 5\n"},
			[]string{"relation-set", "-r", "1", "--file", "-", "c=override", "a="},
			map[string]string{"b": "from-stdin", "c": "override", "n": "5"}, map[string]string{}},
		{"stdin JSON", harness.ExecHook{Hook: "update-status", Stdin: `{"j": "son", "b": ""}`},
			[]string{"relation-set", "-r", "1", "--file=-"},
			map[string]string{"c": "override", "n": "5", "j": "son"}, map[string]string{}},
		{"a file", harness.ExecHook{Hook: "update-status"},
			[]string{"relation-set", "-r", "1", "--file", file},
			map[string]string{"c": "from-file", "d": "4", "n": "5", "j": "son"}, map[string]string{}},
		{"the leader's app bag", harness.ExecHook{Hook: "cos-agent-relation-changed", Relation: id, RemoteUnit: "grafana-agent/0"},
			[]string{"relation-set", "--app", "shared=yes"},
			map[string]string{"c": "from-file", "d": "4", "n": "5", "j": "son"}, map[string]string{"shared": "yes"}},
	} {
		t.Run(step.name, func(t *testing.T) {
			if r := u.ExecIn(step.h, step.argv...); r.Code != 0 {
				t.Fatalf("exit %d: %s", r.Code, r.Stderr)
			}
			if got := withoutCharmKeys(u.LocalUnitData(id), nil); !maps.Equal(got, step.want) {
				t.Errorf("unit bag %v, want %v", got, step.want)
			}
			if got := u.LocalAppData(id); !maps.Equal(withoutCharmKeys(got, nil), step.wantA) {
				t.Errorf("app bag %v, want %v", got, step.wantA)
			}
		})
	}
	// The leader reads its own app bag, with its pending writes.
	r = sh(in, `relation-set -r 1 --app more=1 && relation-get -r 1 --app --format=json - github-runner; exit 1`)
	if r.Code != 1 || !strings.Contains(r.Stdout, `"more":"1"`) || !strings.Contains(r.Stdout, `"shared":"yes"`) {
		t.Errorf("leader's app read: %+v", r)
	}
	if got := u.LocalAppData(id); got["more"] != "" {
		t.Errorf("a failed hook committed its app write: %v", got)
	}
}

// probe replaces the charm's dispatch with a script that records, for every
// hook, the relation and secret variables Juju set and what the relation
// tools answer inside it; it fails the hook while the file fail exists.
func probe(t *testing.T, u *harness.Unit) (log func() []string, fail string) {
	t.Helper()
	dir := t.TempDir()
	logFile, fail := filepath.Join(dir, "log"), filepath.Join(dir, "fail")
	script := `#!/bin/sh
set -u
rel=
if [ -n "${JUJU_RELATION_ID-}" ]; then
	rel=" ids=$(relation-ids --format=json) units=$(relation-list --format=json)"
	[ -n "${JUJU_REMOTE_UNIT}" ] && rel="$rel data=$(relation-get --format=json)"
	relation-set "last=$JUJU_HOOK_NAME:$JUJU_REMOTE_UNIT"
fi
echo "$JUJU_HOOK_NAME rel=${JUJU_RELATION-unset} id=${JUJU_RELATION_ID-unset} remote=${JUJU_REMOTE_UNIT-unset} app=${JUJU_REMOTE_APP-unset} departing=${JUJU_DEPARTING_UNIT-unset} secret=${JUJU_SECRET_ID-unset}$rel" >>` + logFile + `
[ -e ` + fail + ` ] && exit 1
exit 0
`
	if err := os.WriteFile(filepath.Join(u.CharmDir, "dispatch"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return func() []string {
		b, _ := os.ReadFile(logFile)
		os.Remove(logFile)
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}, fail
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s:\n got  %s\n want %s", what, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
	}
}

// Relate, SetRemote…Data, DepartRemoteUnit and Unrelate run the hooks Juju
// runs, in its order, each with the relation context Juju gives it: during
// -relation-departed relation-list no longer lists the departing unit;
// during -relation-broken relation-ids no longer lists the relation and it
// has no units.
func TestRelationHookSequence(t *testing.T) {
	u := harness.New(t, harness.Options{})
	log, fail := probe(t, u)

	id := u.Relate("cos-agent", "agent", map[string]string{"x": "1"}, map[string]map[string]string{"agent/1": {"u": "1"}, "agent/0": {"u": "0"}})
	sameLines(t, "integrate", log(), []string{
		`cos-agent-relation-created rel=cos-agent id=cos-agent:1 remote= app=agent departing=unset secret=unset ids=["cos-agent:1"] units=[]`,
		`cos-agent-relation-joined rel=cos-agent id=cos-agent:1 remote=agent/0 app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0"] data={"u":"0"}`,
		`cos-agent-relation-changed rel=cos-agent id=cos-agent:1 remote=agent/0 app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0"] data={"u":"0"}`,
		`cos-agent-relation-joined rel=cos-agent id=cos-agent:1 remote=agent/1 app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0","agent/1"] data={"u":"1"}`,
		`cos-agent-relation-changed rel=cos-agent id=cos-agent:1 remote=agent/1 app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0","agent/1"] data={"u":"1"}`,
		`cos-agent-relation-changed rel=cos-agent id=cos-agent:1 remote= app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0","agent/1"]`,
	})
	if got := u.LocalUnitData(id); got["last"] != "cos-agent-relation-changed:" {
		t.Errorf("local data %v", got)
	}
	image := u.Relate("image", "builder", nil, nil)
	sameLines(t, "second relation", log(), []string{
		`image-relation-created rel=image id=image:2 remote= app=builder departing=unset secret=unset ids=["image:2"] units=[]`,
	})
	if got := u.RelationIDs("cos-agent"); len(got) != 1 || got[0] != id {
		t.Errorf("RelationIDs(cos-agent) = %v", got)
	}

	if r := u.SetRemoteUnitData(id, "agent/0", map[string]string{"u": "zero"}); r.Code != 0 {
		t.Fatal(r)
	}
	if r := u.SetRemoteAppData(id, map[string]string{"x": "2"}); r.Code != 0 {
		t.Fatal(r)
	}
	sameLines(t, "changes", log(), []string{
		`cos-agent-relation-changed rel=cos-agent id=cos-agent:1 remote=agent/0 app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0","agent/1"] data={"u":"zero"}`,
		`cos-agent-relation-changed rel=cos-agent id=cos-agent:1 remote= app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0","agent/1"]`,
	})

	// A failing hook: the unit is in error and its relation-set is dropped.
	os.WriteFile(fail, nil, 0o600)
	if r := u.SetRemoteUnitData(id, "agent/1", nil); r.Code != 1 {
		t.Fatalf("failing hook exit %d", r.Code)
	}
	if u.Status().Status != "error" {
		t.Errorf("status after a failed hook %+v", u.Status())
	}
	if got := u.LocalUnitData(id); got["last"] != "cos-agent-relation-changed:" {
		t.Errorf("the failed hook's relation-set was committed: %v", got)
	}
	os.Remove(fail)
	log()
	if r := u.SetRemoteUnitData(id, "agent/2", map[string]string{"u": "2"}); r.Code != 0 {
		t.Fatal(r)
	}
	sameLines(t, "a new unit joins", log(), []string{
		`cos-agent-relation-joined rel=cos-agent id=cos-agent:1 remote=agent/2 app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0","agent/1","agent/2"] data={"u":"2"}`,
		`cos-agent-relation-changed rel=cos-agent id=cos-agent:1 remote=agent/2 app=agent departing=unset secret=unset ids=["cos-agent:1"] units=["agent/0","agent/1","agent/2"] data={"u":"2"}`,
	})

	if r := u.DepartRemoteUnit(id, "agent/0"); r.Code != 0 {
		t.Fatal(r)
	}
	sameLines(t, "depart", log(), []string{
		`cos-agent-relation-departed rel=cos-agent id=cos-agent:1 remote=agent/0 app=agent departing=agent/0 secret=unset ids=["cos-agent:1"] units=["agent/1","agent/2"] data={"u":"zero"}`,
	})
	if r := u.Unrelate(id); r.Code != 0 {
		t.Fatal(r)
	}
	sameLines(t, "remove-relation", log(), []string{
		`cos-agent-relation-departed rel=cos-agent id=cos-agent:1 remote=agent/1 app=agent departing=agent/1 secret=unset ids=["cos-agent:1"] units=["agent/2"] data={}`,
		`cos-agent-relation-departed rel=cos-agent id=cos-agent:1 remote=agent/2 app=agent departing=agent/2 secret=unset ids=["cos-agent:1"] units=[] data={"u":"2"}`,
		`cos-agent-relation-broken rel=cos-agent id=cos-agent:1 remote= app=agent departing=unset secret=unset ids=[] units=[]`,
	})
	if got := u.RelationIDs("cos-agent"); len(got) != 0 {
		t.Errorf("RelationIDs after remove-relation = %v", got)
	}
	if r := u.ExecIn(harness.ExecHook{Hook: "update-status"}, "relation-list", "-r", "1"); r.Code != 2 || !strings.Contains(r.Stderr, "relation not found") {
		t.Errorf("a removed relation is still known: %+v", r)
	}
	if got := u.LocalUnitData(id); got["last"] != "cos-agent-relation-broken:" {
		t.Errorf("local data after broken %v", got)
	}
	runs := u.Hooks()
	last := runs[len(runs)-1]
	if last.Name != "cos-agent-relation-broken" || last.Env["JUJU_RELATION_ID"] != "cos-agent:1" || last.Env["JUJU_REMOTE_APP"] != "agent" {
		t.Errorf("Hooks() last = %+v", last)
	}
	if _, ok := last.Env["JUJU_DEPARTING_UNIT"]; ok {
		t.Errorf("JUJU_DEPARTING_UNIT set in broken: %+v", last)
	}
	_ = image
}
