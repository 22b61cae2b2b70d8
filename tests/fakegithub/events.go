package fakegithub

import (
	"embed"
	"encoding/json"
	"path"
	"strings"
	"testing"
)

// recordedEvents are webhook payloads of the events a job can run for, as
// GitHub sends them (and its runner writes them for GITHUB_EVENT_PATH):
// testdata/events/<event>-<case>.json, e.g. pull_request-fork-none.json, a
// pull request from a fork by an author of author_association NONE.
//
//go:embed testdata/events/*.json
var recordedEvents embed.FS

// RecordedEvents names the recorded payloads ("pull_request-fork-none").
func RecordedEvents() []string {
	entries, err := recordedEvents.ReadDir("testdata/events")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	return names
}

// RecordedEvent is a recorded payload and the name of its event (the name
// up to its first "-"), as a JobSpec's Event and EventPayload.
func RecordedEvent(tb testing.TB, name string) (event string, payload json.RawMessage) {
	tb.Helper()
	data, err := recordedEvents.ReadFile(path.Join("testdata/events", name+".json"))
	if err != nil {
		tb.Fatalf("no recorded event %q: %v", name, err)
	}
	if !json.Valid(data) {
		tb.Fatalf("recorded event %q is not JSON", name)
	}
	event, _, _ = strings.Cut(name, "-")
	return event, json.RawMessage(data)
}

// WithEvent is spec running for the recorded event name.
func (spec JobSpec) WithEvent(tb testing.TB, name string) JobSpec {
	tb.Helper()
	spec.Event, spec.EventPayload = RecordedEvent(tb, name)
	return spec
}
