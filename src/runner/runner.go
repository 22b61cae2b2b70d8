// Package runner says what a runner is: whose it is (the deployment's
// identity, carried in every name and in every instance's metadata), how
// runners of one unit are named, which metadata an instance carries so a
// fresh manager can rebuild its view from the cloud alone, and the states a
// runner goes through.
package runner

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
)

// MaxNameLength is LXD's limit on instance names (a hostname label); Nova
// allows more and GitHub 64, but one rule for all keeps names portable.
const MaxNameLength = 63

const (
	// suffixLength is the random part of a name: 8 hex digits, 32 bits,
	// unique among one unit's few hundred runners at most.
	suffixLength = 8
	// legacySuffixLength is the random part of names made before model
	// tags (github-runner-0-0123456789ab). The lengths differ, so no name
	// of one shape can be read as the other's.
	legacySuffixLength = 12
	// modelTagLength is the model's part of a name: 6 hex digits of a hash
	// of the model's UUID.
	modelTagLength = 6
	// pythonMIDSuffixLength is the random part of the names Canonical's
	// Python charm gave runners until its runner manager was split out
	// (secrets.token_hex(12)); its later names have 12 hex digits, as
	// legacySuffixLength, some after an "r-" or "n-" infix.
	pythonMIDSuffixLength = 24
)

// Identity is who owns a runner: one unit of one application in one Juju
// model. Two models may each deploy github-runner/0 against one
// organisation, one LXD host or one OpenStack project: the model's tag in
// every name and the whole identity in every instance's metadata keep
// their runners apart.
type Identity struct {
	Model string // the model's UUID, JUJU_MODEL_UUID
	App   string
	Unit  int
}

// ParseIdentity reads a model UUID and a unit name ("app/3").
func ParseIdentity(model, unit string) (Identity, error) {
	app, num, ok := strings.Cut(unit, "/")
	n, err := strconv.Atoi(num)
	if !ok || app == "" || err != nil || n < 0 {
		return Identity{}, fmt.Errorf("cannot read the unit name %q: it must look like app/0", unit)
	}
	if model == "" {
		return Identity{}, fmt.Errorf("cannot identify unit %s: the model UUID is missing", unit)
	}
	return Identity{Model: model, App: app, Unit: n}, nil
}

// UnitName is the Juju unit name, "app/3": the value of MetaUnit.
func (id Identity) UnitName() string { return fmt.Sprintf("%s/%d", id.App, id.Unit) }

// ModelTag is the model's part of every name: short, and the same for
// every unit of the model.
func (id Identity) ModelTag() string {
	sum := sha256.Sum256([]byte(id.Model))
	return hex.EncodeToString(sum[:])[:modelTagLength]
}

// Prefix is what every runner of the unit is named with:
// "<app>-<model tag>-<unit>". Two units, of one model or of two, never
// share a prefix (but for a hash collision, which the metadata check on
// the cloud side still catches).
func (id Identity) Prefix() string {
	return fmt.Sprintf("%s-%s-%d", id.App, id.ModelTag(), id.Unit)
}

// LegacyPrefix is the prefix of runners made before model tags,
// "<app>-<unit>": the same in every model, so such names alone never prove
// a runner is this unit's.
func (id Identity) LegacyPrefix() string { return fmt.Sprintf("%s-%d", id.App, id.Unit) }

// Check says whether names made for the identity fit the clouds' rules.
func (id Identity) Check() error {
	prefix := id.Prefix()
	if max := MaxNameLength - 1 - suffixLength; len(prefix) > max {
		appMax := max - (len(prefix) - len(id.App))
		return fmt.Errorf("runner names %q-<id> would be longer than %d characters: use an application name of at most %d characters", prefix, MaxNameLength, appMax)
	}
	if !namePattern.MatchString(prefix + "-" + strings.Repeat("0", suffixLength)) {
		return fmt.Errorf("runner names %q-<id> would not be valid host names: use letters, digits and '-' in the application name", prefix)
	}
	return nil
}

var namePattern = regexp.MustCompile(`^[a-zA-Z](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

// NewName returns a fresh runner name of the identity.
func (id Identity) NewName() string {
	var b [suffixLength / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("cannot read random bytes: " + err.Error())
	}
	return id.Prefix() + "-" + hex.EncodeToString(b[:])
}

// Generation is which naming a runner name is of.
type Generation int

const (
	NotOurs Generation = iota
	Current            // <app>-<model tag>-<unit>-<8 hex>
	Legacy             // <app>-<unit>-<12 hex>, before model tags
	// PythonCharm: <app>-<unit>-<24 hex> or <app>-<unit>-{r,n}-<12 hex>,
	// names only Canonical's Python charm gave. (Its <app>-<unit>-<12 hex>
	// names are Legacy's shape: only metadata tells the two apart, see
	// FromPythonCharm.)
	PythonCharm
)

// Generation tells whether name is one of the identity's runners, and of
// which naming. It checks the whole shape, so unit "app/1" never claims
// runners of "app/10".
func (id Identity) Generation(name string) Generation {
	d := id.derived()
	switch {
	case hasSuffix(name, d.prefix, suffixLength):
		return Current
	case hasSuffix(name, d.legacyPrefix, legacySuffixLength):
		return Legacy
	case hasSuffix(name, d.legacyPrefix, pythonMIDSuffixLength),
		hasSuffix(name, d.legacyPrefix+"r-", legacySuffixLength),
		hasSuffix(name, d.legacyPrefix+"n-", legacySuffixLength):
		return PythonCharm
	}
	return NotOurs
}

// FromPythonCharm tells whether an instance named name with owner in its
// metadata may be one Canonical's Python charm made for this unit before
// `juju refresh --switch` to this charm: a name it gives the unit's
// runners ("<app>-<unit>-" and 24 hex digits, 12 after an "r-" or "n-"
// infix, or 12 alone) and none of this charm's metadata, which it never
// wrote. Such names carry no model, so this alone never proves the
// instance is the unit's: another model's unit of the same name on the
// same cloud names its runners alike. The engine takes one as the unit's
// only once GitHub lists its runner, by name, in the unit's own scope
// (see manager.Join).
func (id Identity) FromPythonCharm(name string, owner Owner) bool {
	if owner != (Owner{}) {
		return false
	}
	switch id.Generation(name) {
	case Legacy, PythonCharm:
		return true
	}
	return false
}

// derived is what Generation and OwnsInstance need of an identity. They
// run for every runner and instance of every cycle, and a model tag is a
// SHA-256, so it is worked out once.
type derived struct {
	id                   Identity
	prefix, legacyPrefix string // each with its "-"
	unit                 string // UnitName
}

// lastDerived is the last identity's: a manager has one.
var lastDerived atomic.Pointer[derived]

func (id Identity) derived() *derived {
	if d := lastDerived.Load(); d != nil && d.id == id {
		return d
	}
	d := &derived{id: id, prefix: id.Prefix() + "-", legacyPrefix: id.LegacyPrefix() + "-", unit: id.UnitName()}
	lastDerived.Store(d)
	return d
}

// Owner is who an instance's metadata says it belongs to.
type Owner struct {
	Model string // MetaModel; empty on instances made before model tags
	Unit  string // MetaUnit, "app/3"
}

// Owner is what the identity writes in its instances' metadata.
func (id Identity) Owner() Owner { return Owner{Model: id.Model, Unit: id.UnitName()} }

// OwnsInstance tells whether an instance named name with owner in its
// metadata is the identity's. Both must agree: a name of this unit's shape
// whose metadata names another model or unit is not ours, nor one whose
// metadata was lost.
func (id Identity) OwnsInstance(name string, owner Owner) bool {
	switch id.Generation(name) {
	case Current:
		return owner == Owner{Model: id.Model, Unit: id.derived().unit}
	case Legacy:
		return owner == Owner{Unit: id.derived().unit}
	}
	return false
}

// hasSuffix tells whether name is prefix (with its "-") and length hex
// digits.
func hasSuffix(name, prefix string, length int) bool {
	suffix, ok := strings.CutPrefix(name, prefix)
	if !ok || len(suffix) != length {
		return false
	}
	for _, c := range []byte(suffix) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Scope is where a runner is registered: a GitHub API and an organisation
// or repository on it. A runner can be asked about only in its scope, so
// every instance records the scope it was registered in.
type Scope struct {
	APIURL string // "https://api.github.com"
	Path   string // "my-org" or "owner/repo"
}

// NewScope returns the scope of path on the API at apiURL.
func NewScope(apiURL, path string) Scope {
	return Scope{APIURL: strings.TrimRight(apiURL, "/"), Path: path}
}

// String is the scope as MetaScope holds it: "path@api-url".
func (s Scope) String() string { return s.Path + "@" + s.APIURL }

// IsZero tells whether the scope is unknown (instances made before scopes
// were recorded).
func (s Scope) IsZero() bool { return s == Scope{} }

// ParseScope reads a MetaScope value; ok is false for a missing or
// malformed one.
func ParseScope(v string) (s Scope, ok bool) {
	path, url, found := strings.Cut(v, "@")
	if !found || path == "" || url == "" {
		return Scope{}, false
	}
	return NewScope(url, path), true
}

// Metadata keys every runner instance carries (LXD user.* config keys,
// Nova server metadata).
const (
	MetaModel     = "github-runner-model" // the model's UUID
	MetaUnit      = "github-runner-unit"  // "app/3"
	MetaRunnerID  = "github-runner-id"
	MetaScope     = "github-runner-scope"      // Scope.String()
	MetaCreatedAt = "github-runner-created-at" // RFC 3339, UTC
)

// Meta is the metadata an instance of the identity, registered as runner
// id in scope, is created with (but the creation time, which the cloud
// stamps).
func (id Identity) Meta(runnerID int64, scope Scope) map[string]string {
	return map[string]string{
		MetaModel:    id.Model,
		MetaUnit:     id.UnitName(),
		MetaRunnerID: strconv.FormatInt(runnerID, 10),
		MetaScope:    scope.String(),
	}
}

// State is where a runner is in its life, as the manager sees it by joining
// the cloud's instances with GitHub's runners.
type State string

const (
	// Creating: the instance runs but its runner has not come online yet.
	Creating State = "creating"
	// Idle: online at GitHub, waiting for a job.
	Idle State = "idle"
	// Busy: running a job.
	Busy State = "busy"
	// Offline: GitHub shows the runner offline although it was online
	// before, or it never came online within the creation timeout.
	Offline State = "offline"
	// Stopped: the instance is stopped; an ephemeral runner's instance
	// powers itself off after its job. The one final instance state.
	Stopped State = "stopped"
	// Unresponsive: the instance is frozen, paused, suspended or in an
	// unknown or error state. It may come back, and its runner may be
	// running a job, so it is kept (a busy one for a long limit).
	Unresponsive State = "unresponsive"
	// Retiring: registered in another scope (path, API URL) or named
	// before model tags: it finishes its job, if it has one, and goes.
	Retiring State = "retiring"
	// NoRunner: an instance GitHub does not list a runner for, after the
	// creation timeout. It goes once GitHub, asked about its runner id,
	// says the runner is gone.
	NoRunner State = "instance-without-runner"
	// NoInstance: a GitHub runner with no instance behind it.
	NoInstance State = "runner-without-instance"
)
