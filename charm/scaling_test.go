package charm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hookTools puts config-get (answering raw), status-set (recording its
// arguments) and relation-ids (no relations) on PATH, as Juju's agent does
// for a hook.
func hookTools(t *testing.T, raw map[string]any) (statusFile string) {
	t.Helper()
	dir := t.TempDir()
	config, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	configFile, statusFile := filepath.Join(dir, "config.json"), filepath.Join(dir, "status")
	if err := os.WriteFile(configFile, config, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, script := range map[string]string{
		"config-get":   "#!/bin/sh\ncat " + configFile + "\n",
		"status-set":   "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + statusFile + "\n",
		"relation-ids": "#!/bin/sh\necho '[]'\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return statusFile
}

// Counting runners both ways, or a cap below the base, blocks the unit
// and the hook succeeds: the message names the options.
func TestConfigChangedBlocksOnRunnerCounts(t *testing.T) {
	tests := []struct {
		name    string
		changes map[string]any
		want    string
	}{
		{"virtual-machines and base", map[string]any{"virtual-machines": json.Number("2"), "base-virtual-machines": json.Number("2"), "runner-scale-set": "linux"},
			"invalid config: set either virtual-machines or base-virtual-machines/max-total-virtual-machines, not both"},
		{"cap below the base", map[string]any{"virtual-machines": json.Number("0"), "base-virtual-machines": json.Number("3"), "max-total-virtual-machines": json.Number("2")},
			"invalid config: max-total-virtual-machines must be 0 (no cap) or at least the base of 3 runners, not 2"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			statusFile := hookTools(t, with(test.changes))
			c := testCharm(t, nil)
			c.Tools = &Tools{}
			if err := c.Handle(context.Background(), Event{Kind: HookEvent, Name: "config-changed"}); err != nil {
				t.Fatalf("config-changed failed: %v", err)
			}
			status, err := os.ReadFile(statusFile)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(status)), "\n")
			if len(lines) != 3 || lines[0] != "blocked" || !strings.HasPrefix(lines[2], test.want) {
				t.Errorf("status-set %q, want blocked -- %q", lines, test.want)
			}
		})
	}
}
