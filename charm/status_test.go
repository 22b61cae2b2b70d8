package charm

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// The manager's last words, as its slog text handler and main write them,
// give the sentence the unit is Blocked with.
func TestExitError(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	log.Info("github-runner-manager starting", "unit", "github-runner/0")
	log.Error("github-runner-manager stopped", "error", errors.New(`cannot listen on /var/lib/github-runner/x/manager.socket: listen unix: bind: invalid argument "x"`))
	exited := strings.Split(strings.TrimSpace(buf.String()), "\n")
	buf.Reset()
	log.Info("github-runner-manager stopped")
	stopped := strings.Split(strings.TrimSpace(buf.String()), "\n")

	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{"slog error", exited, `cannot listen on /var/lib/github-runner/x/manager.socket: listen unix: bind: invalid argument "x"`},
		{"config unreadable", []string{"error: cannot read /x/config.yaml: permission denied"}, "cannot read /x/config.yaml: permission denied"},
		{"panic", []string{"panic: runtime error: index out of range", "", "goroutine 1 [running]:", "main.main()", "\t/src/main.go:10 +0x1d"}, "it crashed: runtime error: index out of range"},
		{"stopped normally after a failed run", append(exited, stopped...), ""},
		{"nothing", nil, ""},
	}
	for _, test := range tests {
		if got := exitError(test.lines); got != test.want {
			t.Errorf("%s: %q, want %q", test.name, got, test.want)
		}
	}
}
