package charm

import (
	"fmt"
	"strings"
)

// EventKind tells hooks from actions.
type EventKind int

const (
	HookEvent EventKind = iota
	ActionEvent
)

// Event is what Juju asked the charm to handle.
type Event struct {
	Kind EventKind
	Name string // hook name ("config-changed") or action name ("flush-runners")
}

func (e Event) String() string {
	if e.Kind == ActionEvent {
		return "action " + e.Name
	}
	return "hook " + e.Name
}

// EventFromEnv reads the event from JUJU_DISPATCH_PATH, which Juju sets for
// every dispatch: "hooks/<hook>" or "actions/<action>". JUJU_HOOK_NAME is not
// used because Juju leaves it empty for actions.
func EventFromEnv(getenv func(string) string) (Event, error) {
	path := getenv("JUJU_DISPATCH_PATH")
	dir, name, ok := strings.Cut(path, "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return Event{}, fmt.Errorf("cannot tell the event: JUJU_DISPATCH_PATH is %q, want hooks/<name> or actions/<name> (dispatch is meant to be run by Juju)", path)
	}
	switch dir {
	case "hooks":
		return Event{Kind: HookEvent, Name: name}, nil
	case "actions":
		return Event{Kind: ActionEvent, Name: name}, nil
	}
	return Event{}, fmt.Errorf("cannot tell the event: JUJU_DISPATCH_PATH is %q, want hooks/<name> or actions/<name>", path)
}
