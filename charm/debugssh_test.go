package charm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
)

// Real fingerprints, as ssh-keygen -l -E sha256 prints them.
const (
	testRSAFingerprint     = "SHA256:aZyJL5q5TD/FqtKgRRlXhZiJoRNASJw9IPhPLHHx/1A"
	testED25519Fingerprint = "SHA256:Q0cJAgy/QhMms3Z0VxDde1EGXvGAEt+dIa7kZqMUMDY"
)

func tmateBag(host, port string) map[string]string {
	return map[string]string{"host": host, "port": port, "rsa_fingerprint": testRSAFingerprint, "ed25519_fingerprint": testED25519Fingerprint,
		"ingress-address": "10.9.9.9", "egress-subnets": "10.9.9.9/32", "private-address": "10.9.9.9"}
}

// fakeRelationTools puts relation-ids, relation-list and relation-get on
// PATH, answering from relations (relation id → unit → bag) as Juju's do
// with --format=json: shell scripts whose answers are written in them.
func fakeRelationTools(t *testing.T, relations map[string]map[string]map[string]string) {
	t.Helper()
	dir := t.TempDir()
	quote := func(v any) string {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return "'" + strings.ReplaceAll(string(data), "'", `'\''`) + "'"
	}
	ids := slices.Sorted(maps.Keys(relations))
	// relation-list -r <id> --format=json; relation-get -r <id> --format=json [--app] - <unit or app>.
	list := "case \"$2\" in\n"
	get := "for last; do :; done\ncase \" $* \" in *\" --app \"*) echo '{}'; exit 0 ;; esac\ncase \"$2 $last\" in\n"
	for _, id := range ids {
		units := slices.Sorted(maps.Keys(relations[id]))
		list += fmt.Sprintf("%s) echo %s ;;\n", id, quote(units))
		for _, unit := range units {
			get += fmt.Sprintf("\"%s %s\") echo %s ;;\n", id, unit, quote(relations[id][unit]))
		}
	}
	unknown := "*) echo 'ERROR relation not found' >&2; exit 2 ;;\nesac"
	scripts := map[string]string{
		"relation-ids":  "echo " + quote(ids), // every id given is of debug-ssh
		"relation-list": list + unknown,
		"relation-get":  get + unknown,
	}
	for tool, body := range scripts {
		if err := os.WriteFile(filepath.Join(dir, tool), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// The relation's units' servers, sorted, once each; a unit that has
// published nothing is left out quietly, one whose data breaks a rule with
// a warning naming it and the problem, and none of it blocks the unit.
func TestTmateServersFromTheRelation(t *testing.T) {
	fakeRelationTools(t, map[string]map[string]map[string]string{
		"debug-ssh:5": {
			"tmate/0": tmateBag("10.0.0.2", "10022"),
			"tmate/1": tmateBag("10.0.0.1", "10022"),
			"tmate/2": {"ingress-address": "10.9.9.9"}, // nothing published yet
			"tmate/3": tmateBag("10.0.0.3", "0"),
			"tmate/4": tmateBag("10.0.0.2", "10022"), // tmate/0's address
		},
		"debug-ssh:9": {"other-tmate/0": tmateBag("tmate.example.com", "22")},
	})
	var logs bytes.Buffer
	c := testCharm(t, map[string]string{"JUJU_DISPATCH_PATH": "hooks/debug-ssh-relation-changed", "JUJU_RELATION_ID": "debug-ssh:5"})
	c.Tools, c.Log = &Tools{}, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	got, err := c.tmateServers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	server := func(host string, port int) config.TmateServer {
		return config.TmateServer{Host: host, Port: port, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}
	}
	want := []config.TmateServer{server("10.0.0.1", 10022), server("10.0.0.2", 10022), server("tmate.example.com", 22)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("servers %+v, want %+v", got, want)
	}
	for _, line := range []string{
		`level=WARN msg="leaving out a tmate server whose relation data is not valid (the tmate-ssh-server unit's to fix)" relation=debug-ssh:5 remote-unit=tmate/3 problem="port \"0\" is not a TCP port (1-65535)"`,
		`level=WARN msg="leaving out a tmate server of an address another unit has published already" relation=debug-ssh:5 remote-unit=tmate/4 address=10.0.0.2:10022`,
		`level=DEBUG msg="the tmate server has published nothing yet" relation=debug-ssh:5 remote-unit=tmate/2`,
	} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("the log lacks %s:\n%s", line, logs.String())
		}
	}

	// In the manager's config, by the config file's own rules.
	s, err := ParseSettings(with(map[string]any{"runner-type": "container"}))
	if err != nil {
		t.Fatal(err)
	}
	s.TmateServers = got
	f, err := managerConfig(s, testModel, "github-runner/0", "/var/lib/github-runner/github-runner-0", Proxy{})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatalf("the charm wrote a config the service refuses: %v", err)
	}
	if !reflect.DeepEqual(f.Runner.TmateServers, want) {
		t.Errorf("the manager's servers %+v, want %+v", f.Runner.TmateServers, want)
	}

	// The departing unit is gone in its -relation-departed hook.
	c.Getenv = envWith(envWith(c.Getenv, "JUJU_DISPATCH_PATH", "hooks/debug-ssh-relation-departed"), "JUJU_DEPARTING_UNIT", "tmate/1")
	if got, err := c.tmateServers(context.Background()); err != nil || !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("servers while tmate/1 departs %+v, %v; want %+v", got, err, want[1:])
	}
}

// A server added, removed or changed drains the idle runners before the
// manager gets the new list, never the busy ones.
func TestDrainBeforeTmateChanges(t *testing.T) {
	a := config.TmateServer{Host: "10.0.0.1", Port: 10022, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}
	b := a
	b.Host = "10.0.0.2"
	moved := a
	moved.Port = 10023
	rekeyed := a
	rekeyed.ED25519Fingerprint = "SHA256:" + strings.Repeat("A", 43)
	file := func(servers ...config.TmateServer) *config.File {
		return &config.File{GitHub: config.GitHub{Path: "o/r", Token: "t", Group: "default"}, LXD: &config.LXD{}, Runner: config.RunnerImage{TmateServers: servers}}
	}
	for _, tc := range []struct {
		name     string
		old, new *config.File
		drain    bool
	}{
		{"none", file(), file(), false},
		{"the same", file(a, b), file(a, b), false},
		{"the first added", file(), file(a), true},
		{"one added", file(a), file(a, b), true},
		{"one removed", file(a, b), file(b), true},
		{"the last removed", file(a), file(), true},
		{"a port changed", file(a), file(moved), true},
		{"a host key changed", file(a), file(rekeyed), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if drain, busyToo := drainBefore(tc.old, tc.new); drain != tc.drain || busyToo {
				t.Errorf("drain %v busy too %v, want %v false", drain, busyToo, tc.drain)
			}
		})
	}
}
