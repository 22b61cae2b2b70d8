package charm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Status is a workload status a charm may set. Juju accepts only these four
// from status-set; error, unknown and terminated belong to Juju itself.
type Status string

const (
	Maintenance Status = "maintenance"
	Blocked     Status = "blocked"
	Waiting     Status = "waiting"
	Active      Status = "active"
)

// Tools runs Juju's hook tools (config-get, status-set, …) by bare name
// through PATH, as Juju puts its tools directory first in the hook's PATH.
// The tools find the unit agent through JUJU_AGENT_SOCKET_ADDRESS and
// JUJU_CONTEXT_ID, which the child inherits from the hook's environment.
type Tools struct {
	// Timeout bounds each tool call; the agent answers in milliseconds, so a
	// tool that hangs means the agent is gone and the hook should fail.
	Timeout time.Duration
}

// DefaultToolTimeout is the bound on one hook tool call.
const DefaultToolTimeout = 30 * time.Second

func (t *Tools) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	return t.runInput(ctx, nil, name, args...)
}

// ConfigGet returns every config option, unset ones as nil. Numbers come
// back as json.Number, so an int option never turns into a float.
func (t *Tools) ConfigGet(ctx context.Context) (map[string]any, error) {
	out, err := t.run(ctx, "config-get", "--all", "--format=json")
	if err != nil {
		return nil, err
	}
	return decodeJSONMap("config-get", out)
}

// ActionGet returns the action's parameters, with Juju's defaults inserted.
func (t *Tools) ActionGet(ctx context.Context) (map[string]any, error) {
	out, err := t.run(ctx, "action-get", "--format=json")
	if err != nil {
		return nil, err
	}
	return decodeJSONMap("action-get", out)
}

func decodeJSONMap(tool string, out []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("cannot decode %s output: %w", tool, err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// StatusSet sets this unit's workload status at once (not at hook end).
func (t *Tools) StatusSet(ctx context.Context, status Status, message string) error {
	_, err := t.run(ctx, "status-set", string(status), "--", message)
	return err
}

// actionKeySegment is the rule Juju applies to each dot-separated segment of
// an action-set key.
var actionKeySegment = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)

var reservedActionKeys = map[string]bool{"stdout": true, "stdout-encoding": true, "stderr": true, "stderr-encoding": true}

// ActionSet records action results. Keys are checked against Juju's rules
// first, so a bad key is a clear programming error rather than a failed task.
func (t *Tools) ActionSet(ctx context.Context, results map[string]string) error {
	keys := make([]string, 0, len(results))
	for key := range results {
		if err := checkActionKey(key); err != nil {
			return err
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil
	}
	sort.Strings(keys)
	args := make([]string, 0, len(keys))
	for _, key := range keys {
		args = append(args, key+"="+results[key])
	}
	_, err := t.run(ctx, "action-set", args...)
	return err
}

func checkActionKey(key string) error {
	if reservedActionKeys[key] {
		return fmt.Errorf("cannot set action result %q: the key is reserved by Juju", key)
	}
	for _, segment := range strings.Split(key, ".") {
		if !actionKeySegment.MatchString(segment) {
			return fmt.Errorf("cannot set action result %q: keys must be lower-case letters, digits and '-'", key)
		}
	}
	return nil
}

// ActionFail marks the running action failed with message.
func (t *Tools) ActionFail(ctx context.Context, message string) error {
	_, err := t.run(ctx, "action-fail", "--", message)
	return err
}

// ActionLog records progress of the running action, shown by `juju run`
// as it goes. Progress is best effort: a failure is not the action's.
func (t *Tools) ActionLog(ctx context.Context, message string) error {
	_, err := t.run(ctx, "action-log", "--", message)
	return err
}

// Log writes to the unit's log as seen by `juju debug-log`. level is one of
// Juju's: DEBUG, INFO, WARNING, ERROR.
func (t *Tools) Log(ctx context.Context, level, message string) error {
	_, err := t.run(ctx, "juju-log", "--log-level", level, "--", message)
	return err
}

// IsLeader tells whether this unit is the application's leader.
func (t *Tools) IsLeader(ctx context.Context) (bool, error) {
	out, err := t.run(ctx, "is-leader", "--format=json")
	if err != nil {
		return false, err
	}
	var leader bool
	if err := json.Unmarshal(out, &leader); err != nil {
		return false, fmt.Errorf("cannot decode is-leader output: %w", err)
	}
	return leader, nil
}

// ApplicationVersionSet sets the version `juju status` shows.
func (t *Tools) ApplicationVersionSet(ctx context.Context, version string) error {
	_, err := t.run(ctx, "application-version-set", "--", version)
	return err
}
