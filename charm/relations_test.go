package charm

import (
	"errors"
	"maps"
	"os/exec"
	"slices"
	"testing"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestLiveRelationIDs(t *testing.T) {
	ids := []string{"cos-agent:7", "cos-agent:3"}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"config-changed", map[string]string{"JUJU_DISPATCH_PATH": "hooks/config-changed"}, []string{"cos-agent:3", "cos-agent:7"}},
		{"broken leaves out its relation", map[string]string{"JUJU_DISPATCH_PATH": "hooks/cos-agent-relation-broken", "JUJU_RELATION_ID": "cos-agent:3"}, []string{"cos-agent:7"}},
		{"changed keeps its relation", map[string]string{"JUJU_DISPATCH_PATH": "hooks/cos-agent-relation-changed", "JUJU_RELATION_ID": "cos-agent:3"}, []string{"cos-agent:3", "cos-agent:7"}},
		{"departed keeps its relation", map[string]string{"JUJU_DISPATCH_PATH": "hooks/cos-agent-relation-departed", "JUJU_RELATION_ID": "cos-agent:3", "JUJU_DEPARTING_UNIT": "agent/0"}, []string{"cos-agent:3", "cos-agent:7"}},
		{"another endpoint broken", map[string]string{"JUJU_DISPATCH_PATH": "hooks/image-relation-broken", "JUJU_RELATION_ID": "image:1"}, []string{"cos-agent:3", "cos-agent:7"}},
		{"action", map[string]string{"JUJU_DISPATCH_PATH": "actions/check-runners", "JUJU_RELATION_ID": "cos-agent:3"}, []string{"cos-agent:3", "cos-agent:7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := liveRelationIDs(slices.Clone(ids), env(tc.env)); !slices.Equal(got, tc.want) {
				t.Errorf("liveRelationIDs = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLiveUnits(t *testing.T) {
	units := []string{"agent/1", "agent/0"}
	for _, tc := range []struct {
		name string
		id   string
		env  map[string]string
		want []string
	}{
		{"departed leaves out the departing unit", "cos-agent:3", map[string]string{"JUJU_DISPATCH_PATH": "hooks/cos-agent-relation-departed", "JUJU_RELATION_ID": "cos-agent:3", "JUJU_DEPARTING_UNIT": "agent/0"}, []string{"agent/1"}},
		{"departed of another relation", "cos-agent:7", map[string]string{"JUJU_DISPATCH_PATH": "hooks/cos-agent-relation-departed", "JUJU_RELATION_ID": "cos-agent:3", "JUJU_DEPARTING_UNIT": "agent/0"}, []string{"agent/0", "agent/1"}},
		{"changed", "cos-agent:3", map[string]string{"JUJU_DISPATCH_PATH": "hooks/cos-agent-relation-changed", "JUJU_RELATION_ID": "cos-agent:3", "JUJU_REMOTE_UNIT": "agent/0"}, []string{"agent/0", "agent/1"}},
		{"update-status", "cos-agent:3", map[string]string{"JUJU_DISPATCH_PATH": "hooks/update-status"}, []string{"agent/0", "agent/1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := liveUnits(tc.id, slices.Clone(units), env(tc.env)); !slices.Equal(got, tc.want) {
				t.Errorf("liveUnits = %v, want %v", got, tc.want)
			}
		})
	}
}

// secret-get's failures as Juju 3.6 prints them (the tool adds "ERROR ").
func TestSecretError(t *testing.T) {
	exit1 := &exec.ExitError{}
	for _, tc := range []struct {
		stderr string
		want   error
	}{
		{`secret "secret:d0b0rl7mp25c7b4m8oh0" not found`, ErrSecretNotFound},
		{`consumer label "token" not found`, ErrSecretNotFound},
		{`permission denied`, ErrSecretNotGranted},
		{`secret key value "token" not found`, nil},
		{`secret URI "x" not valid`, nil},
		{`connection refused`, nil},
	} {
		t.Run(tc.stderr, func(t *testing.T) {
			err := secretError("secret:d0b0rl7mp25c7b4m8oh0", &toolError{tool: "secret-get", stderr: tc.stderr, err: exit1})
			for _, sentinel := range []error{ErrSecretNotFound, ErrSecretNotGranted} {
				if errors.Is(err, sentinel) != (sentinel == tc.want) {
					t.Errorf("errors.Is(%v, %v) = %v", err, sentinel, !(sentinel == tc.want))
				}
			}
			var te *toolError
			if !errors.As(err, &te) && tc.want == nil {
				t.Errorf("%v does not keep the tool error", err)
			}
		})
	}
}

func TestDecodeStringMap(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want map[string]string
		ok   bool
	}{
		{`{"a":"1","b":""}` + "\n", map[string]string{"a": "1", "b": ""}, true},
		{"null\n", map[string]string{}, true},
		{`{}`, map[string]string{}, true},
		{`{"a":1}`, nil, false},
		{`["a"]`, nil, false},
	} {
		got, err := decodeStringMap("relation-get", []byte(tc.out))
		if (err == nil) != tc.ok {
			t.Errorf("decodeStringMap(%q) error = %v, want ok=%v", tc.out, err, tc.ok)
			continue
		}
		if tc.ok && !maps.Equal(got, tc.want) {
			t.Errorf("decodeStringMap(%q) = %v, want %v", tc.out, got, tc.want)
		}
	}
}
