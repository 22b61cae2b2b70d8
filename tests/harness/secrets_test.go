package harness_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/tests/harness"
)

// secret-get keeps Juju 3.6's contract (jujuc secret-get.go, apiserver
// secretsmanager getSecretContent/getConsumedRevision): Juju's texts for a
// secret not granted, a missing secret and a missing key (exit 1), usage
// errors exit 2, and revision pinning: the first read pins the latest
// revision, --peek reads the latest once, --refresh moves the pin.
func TestSecretGetContract(t *testing.T) {
	u := harness.New(t, harness.Options{})
	uri := u.AddSecret(map[string]string{"token": "abc", "user": "bot"})
	if !regexp.MustCompile(`^secret:[0-9a-v]{20}$`).MatchString(uri) {
		t.Fatalf("AddSecret URI %q is not a Juju secret URI", uri)
	}
	id := strings.TrimPrefix(uri, "secret:")
	other := u.AddSecret(map[string]string{"k": "v"})
	u.RemoveSecret(other)

	runToolCases(t, u, []toolCase{
		{name: "not granted", argv: []string{"secret-get", uri}, code: 1, stderrHas: "ERROR permission denied\n"},
	})
	if got := u.TrackedRevision(uri); got != 0 {
		t.Fatalf("a refused read pinned revision %d", got)
	}
	u.GrantSecret(uri)
	runToolCases(t, u, []toolCase{
		{argv: []string{"secret-get", uri, "--format=json"}, stdout: `{"token":"abc","user":"bot"}` + "\n"},
		{argv: []string{"secret-get", uri}, stdout: "token: abc\nuser: bot\n"},
		{argv: []string{"secret-get", uri, "token"}, stdout: "abc\n"},
		{argv: []string{"secret-get", uri, "token", "--format", "json"}, stdout: `"abc"` + "\n"},
		{argv: []string{"secret-get", uri, "token#base64"}, stdout: "YWJj\n"},
		{name: "bare id", argv: []string{"secret-get", id, "user"}, stdout: "bot\n"},
		{name: "model-qualified URI", argv: []string{"secret-get", "secret://" + harness.DefaultModel + "/" + id, "user"}, stdout: "bot\n"},
		{argv: []string{"secret-get", uri, "nope"}, code: 1, stderrHas: `ERROR secret key value "nope" not found` + "\n"},
		{name: "removed", argv: []string{"secret-get", other}, code: 1, stderrHas: `ERROR secret "` + other + `" not found` + "\n"},
		{name: "never existed", argv: []string{"secret-get", "secret:d0000000000000000000"}, code: 1, stderrHas: `ERROR secret "secret:d0000000000000000000" not found` + "\n"},
		{argv: []string{"secret-get", "foo"}, code: 2, stderrHas: `ERROR secret URI "foo" not valid` + "\n"},
		{argv: []string{"secret-get", "http:" + id}, code: 2, stderrHas: `ERROR secret URI "http:` + id + `" not valid`},
		{argv: []string{"secret-get"}, code: 2, stderrHas: "ERROR require either a secret URI or label\n"},
		{argv: []string{"secret-get", uri, "--peek", "--refresh"}, code: 2, stderrHas: "ERROR specify one of --peek or --refresh but not both\n"},
		{argv: []string{"secret-get", uri, "token", "user"}, code: 2, stderrHas: `ERROR unrecognized args: ["user"]`},
		{argv: []string{"secret-get", uri, "--format=smart"}, code: 2, stderrHas: `ERROR invalid value "smart" for option --format`},
		{argv: []string{"secret-get", "--label", "unknown"}, code: 1, stderrHas: `ERROR consumer label "unknown" not found` + "\n"},
		{name: "label set", argv: []string{"secret-get", uri, "--label", "tok", "user"}, stdout: "bot\n"},
		{name: "read by label", argv: []string{"secret-get", "--label", "tok", "--format=json"}, stdout: `{"token":"abc","user":"bot"}` + "\n"},
		// As in Juju, the first argument is always the URI: with --label alone
		// a key cannot be given.
		{name: "label and key", argv: []string{"secret-get", "--label", "tok", "token"}, code: 2, stderrHas: `ERROR secret URI "token" not valid`},
	})
	if got := u.TrackedRevision(uri); got != 1 {
		t.Fatalf("tracked revision %d, want 1", got)
	}

	// A new revision: the unit reads its pinned one until it refreshes.
	r := u.UpdateSecret(uri, map[string]string{"token": "def", "user": "bot"})
	runs := u.Hooks()
	last := runs[len(runs)-1]
	if last.Name != "secret-changed" || last.Env["JUJU_SECRET_ID"] != uri || last.Env["JUJU_SECRET_LABEL"] != "tok" || last.Code != r.Code {
		t.Errorf("UpdateSecret ran %+v (result %+v), want secret-changed with JUJU_SECRET_ID=%s", last, r, uri)
	}
	if _, ok := last.Env["JUJU_RELATION_ID"]; ok {
		t.Errorf("secret-changed has a relation context: %+v", last)
	}
	changed := harness.ExecHook{Hook: "secret-changed", SecretURI: uri}
	runToolCases(t, u, []toolCase{
		{name: "pinned", hook: changed, argv: []string{"secret-get", uri, "token"}, stdout: "abc\n"},
		{name: "peek", hook: changed, argv: []string{"secret-get", uri, "token", "--peek"}, stdout: "def\n"},
		{name: "still pinned after peek", hook: changed, argv: []string{"secret-get", uri, "token"}, stdout: "abc\n"},
	})
	if got := u.TrackedRevision(uri); got != 1 {
		t.Fatalf("--peek moved the pin to %d", got)
	}
	runToolCases(t, u, []toolCase{
		{name: "refresh", hook: changed, argv: []string{"secret-get", uri, "token", "--refresh"}, stdout: "def\n"},
		{name: "pinned to the refreshed revision", hook: changed, argv: []string{"secret-get", uri, "token"}, stdout: "def\n"},
	})
	if got := u.TrackedRevision(uri); got != 2 {
		t.Fatalf("tracked revision after --refresh %d, want 2", got)
	}

	u.RevokeSecret(uri)
	runToolCases(t, u, []toolCase{{name: "revoked", argv: []string{"secret-get", uri}, code: 1, stderrHas: "ERROR permission denied\n"}})
	if r := u.UpdateSecret(uri, map[string]string{"token": "ghi"}); r != (harness.HookResult{}) || len(u.Hooks()) != len(runs) {
		t.Errorf("a secret the application may no longer read fired secret-changed: %+v", r)
	}
}

// secret-changed fires only for a secret the unit tracks, that is, one it
// has read (Juju keeps a consumer record from the first secret-get).
func TestUpdateSecretNotifiesOnlyTrackingUnits(t *testing.T) {
	u := harness.New(t, harness.Options{})
	uri := u.AddSecret(map[string]string{"token": "abc"})
	u.GrantSecret(uri)
	before := len(u.Hooks())
	if r := u.UpdateSecret(uri, map[string]string{"token": "def"}); r != (harness.HookResult{}) || len(u.Hooks()) != before {
		t.Fatalf("an unread secret fired secret-changed: %+v", u.Hooks()[before:])
	}
	if got := u.TrackedRevision(uri); got != 0 {
		t.Fatalf("unread secret tracked at %d", got)
	}
	// The first read pins the latest revision, whatever it is.
	runToolCases(t, u, []toolCase{{argv: []string{"secret-get", uri, "token"}, stdout: "def\n"}})
	if got := u.TrackedRevision(uri); got != 2 {
		t.Fatalf("first read pinned %d, want 2", got)
	}
	u.UpdateSecret(uri, map[string]string{"token": "ghi"})
	if runs := u.Hooks(); len(runs) != before+1 || runs[before].Name != "secret-changed" || runs[before].Env["JUJU_SECRET_ID"] != uri {
		t.Fatalf("hooks after updating a tracked secret: %+v", runs[before:])
	}
}
