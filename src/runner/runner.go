// Package runner says what a runner is: how runners of one unit are named,
// which metadata an instance carries so a fresh manager can rebuild its view
// from the cloud alone, and the states a runner goes through.
package runner

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
)

// MaxNameLength is LXD's limit on instance names (a hostname label); Nova
// allows more, but one rule for both clouds keeps names portable.
const MaxNameLength = 63

// suffixLength is the random part of a name: 12 hex digits, 48 bits.
const suffixLength = 12

// Prefix is what every runner of one unit is named with: "<app>-<unit>".
// Two units, even on one machine, never share a prefix.
func Prefix(app string, unit int) string {
	return fmt.Sprintf("%s-%d", app, unit)
}

// CheckPrefix says whether names made from prefix fit the clouds' rules.
func CheckPrefix(prefix string) error {
	if max := MaxNameLength - 1 - suffixLength; len(prefix) > max {
		return fmt.Errorf("runner names %q-<id> would be longer than %d characters: use an application name of at most %d characters", prefix, MaxNameLength, max-2)
	}
	if !namePattern.MatchString(prefix + "-000000000000") {
		return fmt.Errorf("runner names %q-<id> would not be valid host names: use letters, digits and '-' in the application name", prefix)
	}
	return nil
}

var namePattern = regexp.MustCompile(`^[a-zA-Z](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$`)

// NewName returns a fresh runner name under prefix.
func NewName(prefix string) string {
	var b [suffixLength / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("cannot read random bytes: " + err.Error())
	}
	return prefix + "-" + hex.EncodeToString(b[:])
}

// HasPrefix tells whether name is a runner of the unit with prefix. It
// checks the whole shape, so unit "app-1" never claims runners of "app-10".
func HasPrefix(name, prefix string) bool {
	suffix, ok := strings.CutPrefix(name, prefix+"-")
	if !ok || len(suffix) != suffixLength {
		return false
	}
	_, err := hex.DecodeString(suffix)
	return err == nil && strings.ToLower(suffix) == suffix
}

// Metadata keys every runner instance carries (LXD user.* config keys,
// Nova server metadata).
const (
	MetaUnit      = "github-runner-unit"
	MetaRunnerID  = "github-runner-id"
	MetaCreatedAt = "github-runner-created-at" // RFC 3339, UTC
)

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
	// Stopped: the instance is stopped or broken; an ephemeral runner's
	// instance powers itself off after its job.
	Stopped State = "stopped"
	// NoRunner: an instance GitHub has no runner for, after the creation timeout.
	NoRunner State = "instance-without-runner"
	// NoInstance: a GitHub runner with no instance behind it.
	NoInstance State = "runner-without-instance"
)
