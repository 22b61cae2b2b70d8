package harness_test

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/tests/harness"
)

// The debug-ssh relation through the packed charm, with Juju's relation
// hook tools and the real manager under Pebble against the fake GitHub.

// Real fingerprints, as ssh-keygen -l -E sha256 prints them.
const (
	tmateRSA     = "SHA256:aZyJL5q5TD/FqtKgRRlXhZiJoRNASJw9IPhPLHHx/1A"
	tmateED25519 = "SHA256:Q0cJAgy/QhMms3Z0VxDde1EGXvGAEt+dIa7kZqMUMDY"
)

// tmateDrain is what configure says while it drains the idle runners made
// with the previous tmate servers.
const tmateDrain = "removing the idle runners made with the previous settings"

// tmateUnitData is what a tmate-ssh-server unit publishes.
func tmateUnitData(host, port string) map[string]string {
	return map[string]string{"host": host, "port": port, "rsa_fingerprint": tmateRSA, "ed25519_fingerprint": tmateED25519}
}

func tmateServersOf(t *testing.T, u *harness.Unit) []config.TmateServer {
	t.Helper()
	f, err := config.Read(filepath.Join(u.StateDir(), "config.yaml"))
	if err != nil {
		t.Fatalf("cannot read the manager's config: %v", err)
	}
	return f.Runner.TmateServers
}

func tmateAt(host string, port int) config.TmateServer {
	return config.TmateServer{Host: host, Port: port, RSAFingerprint: tmateRSA, ED25519Fingerprint: tmateED25519}
}

// drainedSince tells whether configure drained the idle runners since the
// unit's nth status.
func drainedSince(u *harness.Unit, n int) bool {
	for _, s := range u.StatusHistory()[n:] {
		if s.Status == "maintenance" && strings.HasPrefix(s.Message, tmateDrain) {
			return true
		}
	}
	return false
}

func TestDebugSSHRelation(t *testing.T) {
	cfg, _ := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(cfg)
	u.Deploy()
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
		t.Fatalf("status after deploy = %+v", s)
	}
	if got := tmateServersOf(t, u); len(got) != 0 {
		t.Fatalf("tmate servers before the relation: %+v", got)
	}

	t.Log("two tmate-ssh-server units: the manager gets both, the idle runners are replaced")
	n := len(u.StatusHistory())
	id := u.Relate("debug-ssh", "tmate-ssh-server", nil, map[string]map[string]string{
		"tmate-ssh-server/0": tmateUnitData("10.0.0.2", "10022"),
		"tmate-ssh-server/1": tmateUnitData("10.0.0.1", "10022"),
	})
	both := []config.TmateServer{tmateAt("10.0.0.1", 10022), tmateAt("10.0.0.2", 10022)}
	if got := tmateServersOf(t, u); !reflect.DeepEqual(got, both) {
		t.Errorf("the manager's tmate servers = %+v, want %+v", got, both)
	}
	if !drainedSince(u, n) {
		t.Errorf("statuses since the relation %v: the idle runners were not drained", u.StatusHistory()[n:])
	}
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
		t.Errorf("status with the relation = %+v", s)
	}

	t.Log("the same data again changes nothing, drains nothing")
	n = len(u.StatusHistory())
	if r := u.SetRemoteUnitData(id, "tmate-ssh-server/0", tmateUnitData("10.0.0.2", "10022")); r.Code != 0 {
		t.Fatalf("debug-ssh-relation-changed: exit %d: %s", r.Code, r.Stderr)
	}
	if drainedSince(u, n) {
		t.Errorf("unchanged relation data drained the runners: %v", u.StatusHistory()[n:])
	}

	t.Log("a unit's data breaks a rule: left out with a warning, the unit is not Blocked")
	if r := u.SetRemoteUnitData(id, "tmate-ssh-server/1", tmateUnitData("10.0.0.1", "ssh")); r.Code != 0 {
		t.Fatalf("debug-ssh-relation-changed: exit %d: %s", r.Code, r.Stderr)
	}
	if got := tmateServersOf(t, u); !reflect.DeepEqual(got, both[1:]) {
		t.Errorf("the manager's tmate servers with tmate-ssh-server/1's bad port = %+v, want %+v", got, both[1:])
	}
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
		t.Errorf("another charm's bad data changed the unit's status to %+v", s)
	}
	warned := false
	for _, l := range u.Logs() {
		if l.Level == "WARNING" && strings.Contains(l.Message, "remote-unit=tmate-ssh-server/1") && strings.Contains(l.Message, `port \"ssh\" is not a TCP port`) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning names tmate-ssh-server/1 and its port: %v", u.Logs())
	}

	t.Log("fixed, then a unit departs: the manager keeps the other's")
	u.SetRemoteUnitData(id, "tmate-ssh-server/1", tmateUnitData("10.0.0.1", "10022"))
	if got := tmateServersOf(t, u); !reflect.DeepEqual(got, both) {
		t.Errorf("the manager's tmate servers once fixed = %+v, want %+v", got, both)
	}
	n = len(u.StatusHistory())
	if r := u.DepartRemoteUnit(id, "tmate-ssh-server/0"); r.Code != 0 {
		t.Fatalf("debug-ssh-relation-departed: exit %d: %s", r.Code, r.Stderr)
	}
	if got := tmateServersOf(t, u); !reflect.DeepEqual(got, both[:1]) {
		t.Errorf("the manager's tmate servers after tmate-ssh-server/0 departed = %+v, want %+v", got, both[:1])
	}
	if !drainedSince(u, n) {
		t.Errorf("statuses since the departure %v: the idle runners were not drained", u.StatusHistory()[n:])
	}

	t.Log("the relation removed: no servers")
	if r := u.Unrelate(id); r.Code != 0 {
		t.Fatalf("debug-ssh-relation-broken: exit %d: %s", r.Code, r.Stderr)
	}
	if got := tmateServersOf(t, u); len(got) != 0 {
		t.Errorf("the manager's tmate servers after the relation went = %+v", got)
	}
	if s := u.Status(); s.Status == "blocked" || s.Status == "error" {
		t.Errorf("status after the relation went = %+v", s)
	}
}
