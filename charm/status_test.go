package charm

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/service/api"
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

// The status names what the manager's report puts first: a problem for the
// operator, then an image build in progress (how long so far), then any
// other problem, then the runners.
func TestStatusFromReport(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		report  api.RunnersReport
		status  Status
		message string
	}{
		{"blocking problem", api.RunnersReport{Problem: "the GitHub token is invalid", Blocking: true, PreparingSince: now.Add(-time.Minute)}, Blocked, "the GitHub token is invalid"},
		{"build in progress", api.RunnersReport{Expected: 2, AsOf: now, PreparingSince: now.Add(-3*time.Minute - 10*time.Second)}, Maintenance, "preparing the runner image (3m so far)"},
		{"base image download", api.RunnersReport{Expected: 2, AsOf: now, PreparingSince: now.Add(-70 * time.Second), Preparing: "downloading base image noble (ubuntu:24.04): rootfs: 42% (3.2MB/s)"},
			Maintenance, "preparing the runner image (1m so far): downloading base image noble (ubuntu:24.04): rootfs: 42% (3.2MB/s)"},
		{"build retried", api.RunnersReport{Expected: 2, AsOf: now, PreparingSince: now.Add(-12 * time.Second), Problem: "cannot build the runner image: cloud-init failed"},
			Maintenance, "preparing the runner image (12s so far); the cycle before: cannot build the runner image: cloud-init failed"},
		{"build failed", api.RunnersReport{Expected: 2, AsOf: now, Problem: "cannot build the runner image: cloud-init failed"}, Maintenance, "cannot build the runner image: cloud-init failed"},
		{"first cycle", api.RunnersReport{Expected: 2}, Waiting, "waiting for the runner manager's first reconcile cycle"},
		{"runners coming", api.RunnersReport{Expected: 2, Online: 1, AsOf: now}, Waiting, "1 of 2 runners online: 1 idle, 0 busy"},
		{"all online", api.RunnersReport{Expected: 2, Online: 2, Busy: 1, AsOf: now}, Active, "2 runners: 1 idle, 1 busy"},
		{"on demand", api.RunnersReport{Expected: 1, Desired: 3, Max: 4, OnDemand: true, Online: 3, Busy: 2, AsOf: now}, Active, "3 runners (1–4 on demand): 2 busy, 1 idle"},
		{"on demand without a cap", api.RunnersReport{OnDemand: true, Desired: 2, Online: 2, Busy: 2, AsOf: now}, Active, "2 runners (0 or more on demand): 2 busy, 0 idle"},
		{"on demand, busy above the base", api.RunnersReport{Expected: 1, Desired: 4, Max: 4, OnDemand: true, Online: 3, Busy: 3, AsOf: now}, Active, "3 runners (1–4 on demand): 3 busy, 0 idle"},
		{"slow pool", api.RunnersReport{Expected: 2, Online: 2, AsOf: now, Note: "runner starts are slow: dir"}, Active, "2 runners: 2 idle, 0 busy; runner starts are slow: dir"},
		{"slow pool, runners coming", api.RunnersReport{Expected: 2, Online: 1, AsOf: now, Note: "runner starts are slow: dir"}, Waiting, "1 of 2 runners online: 1 idle, 0 busy; runner starts are slow: dir"},
		{"slow pool behind a problem", api.RunnersReport{Expected: 2, AsOf: now, Problem: "LXD is unreachable", Note: "runner starts are slow: dir"}, Maintenance, "LXD is unreachable"},
		{"warm pool coming", api.RunnersReport{Expected: 2, Desired: 2, Max: 4, OnDemand: true, Online: 1, AsOf: now}, Waiting, "1 of 2 runners online (2–4 on demand): 0 busy, 1 idle"},
	}
	for _, test := range tests {
		if status, message := statusFromReport(test.report); status != test.status || message != test.message {
			t.Errorf("%s: %s %q, want %s %q", test.name, status, message, test.status, test.message)
		}
	}
}
