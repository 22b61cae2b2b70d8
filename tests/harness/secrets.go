package harness

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// secret is a user secret (`juju add-secret`) of the model, as the
// controller holds it.
type secret struct {
	id        string
	revisions []map[string]string // revision N is revisions[N-1]
	granted   bool                // `juju grant-secret <secret> <app>`
	removed   bool
}

// consumer is this unit's consumer record of a secret: the revision it is
// pinned to (Juju's CurrentRevision) and its label. Juju creates it on the
// unit's first secret-get of the secret; it is what makes a new revision
// fire secret-changed.
type consumer struct {
	revision int
	label    string
}

type secretWorld struct {
	byID     map[string]*secret
	consumed map[string]*consumer // by secret id
}

// secretID is Juju's secret id: an xid, 20 characters of [0-9a-v].
var secretID = regexp.MustCompile(`^[0-9a-z]{20}$`)

// parseSecretURI accepts what core/secrets.ParseURI does: "secret:<id>",
// "secret://<model-uuid>/<id>" or a bare id.
func parseSecretURI(s string) (string, bool) {
	rest := s
	if scheme, after, ok := strings.Cut(s, ":"); ok {
		if scheme != "secret" {
			return "", false
		}
		rest = after
		if strings.HasPrefix(rest, "//") {
			_, id, ok := strings.Cut(strings.TrimPrefix(rest, "//"), "/")
			if !ok {
				return "", false
			}
			rest = id
		}
	}
	return rest, secretID.MatchString(rest)
}

var xidEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// AddSecret is `juju add-secret`: a user secret at revision 1, not granted
// to the application. It returns its URI, "secret:<id>".
func (u *Unit) AddSecret(content map[string]string) string {
	u.t.Helper()
	if len(content) == 0 {
		u.t.Fatal("juju add-secret would refuse: a secret needs at least one key")
	}
	var b [12]byte
	rand.Read(b[:])
	id := xidEncoding.EncodeToString(b[:])
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.secrets.byID == nil {
		u.secrets.byID = map[string]*secret{}
		u.secrets.consumed = map[string]*consumer{}
	}
	u.secrets.byID[id] = &secret{id: id, revisions: []map[string]string{copyBag(content)}}
	return "secret:" + id
}

func (u *Unit) userSecret(uri string) *secret {
	u.t.Helper()
	id, ok := parseSecretURI(uri)
	u.mu.Lock()
	s := u.secrets.byID[id]
	u.mu.Unlock()
	if !ok || s == nil || s.removed {
		u.t.Fatalf("the model has no secret %q", uri)
	}
	return s
}

// GrantSecret is `juju grant-secret <uri> <app>`.
func (u *Unit) GrantSecret(uri string) {
	u.t.Helper()
	s := u.userSecret(uri)
	u.mu.Lock()
	s.granted = true
	u.mu.Unlock()
}

// RevokeSecret is `juju revoke-secret <uri> <app>`.
func (u *Unit) RevokeSecret(uri string) {
	u.t.Helper()
	s := u.userSecret(uri)
	u.mu.Lock()
	s.granted = false
	u.mu.Unlock()
}

// UpdateSecret is `juju update-secret <uri> k=v …`: a new revision. If this
// unit tracks the secret (it has read it, so Juju keeps a consumer record
// for it) and may read it, secret-changed runs with JUJU_SECRET_ID=uri; its
// result is returned, or a zero HookResult if no hook ran.
func (u *Unit) UpdateSecret(uri string, content map[string]string) HookResult {
	u.t.Helper()
	if len(content) == 0 {
		u.t.Fatal("juju update-secret would refuse: a secret needs at least one key")
	}
	s := u.userSecret(uri)
	u.mu.Lock()
	s.revisions = append(s.revisions, copyBag(content))
	c := u.secrets.consumed[s.id]
	notify := c != nil && s.granted
	label := ""
	if c != nil {
		label = c.label
	}
	u.mu.Unlock()
	if !notify {
		return HookResult{}
	}
	ctx := &hookContext{id: u.contextID("secret-changed"), secretURI: "secret:" + s.id, secretLabel: label}
	return u.runHook("secret-changed", ctx)
}

// RemoveSecret is `juju remove-secret <uri>`: every revision goes.
func (u *Unit) RemoveSecret(uri string) {
	u.t.Helper()
	s := u.userSecret(uri)
	u.mu.Lock()
	s.removed = true
	delete(u.secrets.consumed, s.id)
	u.mu.Unlock()
}

// TrackedRevision is the revision this unit is pinned to; 0 if it never
// read the secret.
func (u *Unit) TrackedRevision(uri string) int {
	u.t.Helper()
	s := u.userSecret(uri)
	u.mu.Lock()
	defer u.mu.Unlock()
	if c := u.secrets.consumed[s.id]; c != nil {
		return c.revision
	}
	return 0
}

// secret-get <ID> [key[#base64]] [--label L] [--peek|--refresh] [--format yaml|json]
//
// As Juju 3.6 (jujuc secret-get.go, apiserver secretsmanager getSecretContent,
// getConsumedRevision): a missing secret is `secret "<uri>" not found`, one
// not granted `permission denied`, a missing key `secret key value "k" not
// found` (exit 1). The first read of any kind creates the consumer record
// pinned to the latest revision; --refresh moves the pin to the latest;
// --peek reads the latest without moving it.
func secretGet(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	args := p.args
	id, label := "", p.flags["label"]
	if len(args) > 0 {
		var ok bool
		if id, ok = parseSecretURI(args[0]); !ok {
			return nil, usagef("secret URI %q not valid", args[0])
		}
		args = args[1:]
	}
	if id == "" && label == "" {
		return nil, usagef("require either a secret URI or label")
	}
	peek, refresh := p.has("peek"), p.has("refresh")
	if peek && refresh {
		return nil, usagef("specify one of --peek or --refresh but not both")
	}
	key := ""
	if len(args) > 0 {
		key, args = args[0], args[1:]
	}
	if len(args) > 0 {
		return nil, usagef("unrecognized args: %q", args)
	}
	switch p.flags["format"] {
	case "", "yaml", "json":
	default:
		f := p.flags["format"]
		return nil, usagef("invalid value %q for option --format: unknown format %q", f, f)
	}
	if p.flags["format"] == "" {
		p.flags["format"] = "yaml"
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	if id == "" {
		for sid, c := range u.secrets.consumed {
			if c.label == label {
				id = sid
			}
		}
		if id == "" {
			return nil, fmt.Errorf("consumer label %q not found", label)
		}
	}
	s := u.secrets.byID[id]
	if s == nil || s.removed {
		return nil, fmt.Errorf("secret %q not found", "secret:"+id)
	}
	if !s.granted {
		return nil, errors.New("permission denied")
	}
	latest := len(s.revisions)
	c := u.secrets.consumed[id]
	if c == nil {
		c = &consumer{}
		u.secrets.consumed[id] = c
		refresh = true
	}
	revision := c.revision
	if refresh || peek {
		revision = latest
	}
	if refresh {
		c.revision = latest
	}
	if label != "" {
		c.label = label
	}
	content := s.revisions[revision-1]
	if key == "" {
		return output(p, copyBag(content))
	}
	name, asBase64 := strings.CutSuffix(key, "#base64")
	value, ok := content[name]
	if !ok {
		return nil, fmt.Errorf("secret key value %q not found", name)
	}
	if asBase64 {
		value = base64.StdEncoding.EncodeToString([]byte(value))
	}
	return output(p, value)
}
