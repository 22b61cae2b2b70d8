package harness_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/harness"
)

// logFiles are the unit's manager log and events log: under the log root
// the harness gives the charm (GITHUB_RUNNER_LOG_ROOT, /var/log in Juju).
func logFiles(u *harness.Unit) (managerLog, eventsLog string) {
	root, name := filepath.Join(u.StateRoot, "log"), strings.ReplaceAll(u.Name, "/", "-")+".log"
	return filepath.Join(root, "github-runner-manager", name), filepath.Join(root, "github-runner-metrics", name)
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(data)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
	}
}

// The manager logs to its file under the log root as well as to Pebble;
// runner-manager-log-level applies at once without restarting it: debug
// lines appear after DEBUG and not before, and stop after INFO; a bad
// value blocks the unit naming the option. The events log is under the
// log root, the TCP metrics answer on the port the charm chose, and
// neither log holds the token.
func TestManagerLogsAndLogLevel(t *testing.T) {
	cfg, _ := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(cfg)
	u.Deploy()
	pid := u.ManagerPID()
	if pid == 0 {
		t.Fatalf("no manager after deploy\n%s", u.ServiceLogs())
	}
	managerLog, eventsLog := logFiles(u)
	reconcile := func() {
		t.Helper()
		if r := u.Action("reconcile-runners", nil); r.Status != "completed" {
			t.Fatalf("reconcile-runners: %+v", r)
		}
	}
	eventually(t, "the manager's log file", func() bool { return strings.Contains(read(t, managerLog), "github-runner-manager starting") })
	if !strings.Contains(u.ServiceLogs(), "github-runner-manager starting") {
		t.Errorf("Pebble's log lacks the manager's lines:\n%s", u.ServiceLogs())
	}
	reconcile()
	if strings.Contains(read(t, managerLog), "level=DEBUG") {
		t.Fatalf("debug lines at the default level:\n%s", read(t, managerLog))
	}

	if r := u.Configure(map[string]any{"runner-manager-log-level": "DEBUG"}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	if s := u.Status(); s.Status == "blocked" {
		t.Fatalf("status %+v", s)
	}
	reconcile()
	eventually(t, "debug lines after DEBUG", func() bool {
		return strings.Contains(read(t, managerLog), `level=DEBUG msg="reconcile cycle starting"`)
	})
	if !strings.Contains(read(t, managerLog), `msg="log level changed" from=INFO to=DEBUG`) {
		t.Error("the log does not say the level changed")
	}
	if now := u.ManagerPID(); now != pid {
		t.Errorf("the manager was restarted for a log level (pid %d → %d)", pid, now)
	}

	if r := u.Configure(map[string]any{"runner-manager-log-level": "INFO"}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	eventually(t, "the level back to INFO", func() bool {
		return strings.Contains(read(t, managerLog), `msg="log level changed" from=DEBUG to=INFO`)
	})
	debugLines := strings.Count(read(t, managerLog), "level=DEBUG")
	reconcile()
	if n := strings.Count(read(t, managerLog), "level=DEBUG"); n != debugLines {
		t.Errorf("%d debug lines after INFO", n-debugLines)
	}

	if r := u.Configure(map[string]any{"runner-manager-log-level": "VERBOSE"}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "runner-manager-log-level must be DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL") {
		t.Errorf("status %+v, want blocked naming runner-manager-log-level", s)
	}
	if r := u.Configure(map[string]any{"runner-manager-log-level": "warning"}); r.Code != 0 || u.Status().Status == "blocked" {
		t.Fatalf("config-changed to warning: %s, status %+v", r.Stderr, u.Status())
	}

	eventually(t, "the events log", func() bool { return strings.Contains(read(t, eventsLog), `"event":"reconciliation"`) })
	for _, path := range []string{managerLog, eventsLog} {
		if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o640 {
			t.Errorf("%s: %v, %v; want mode 0640", path, info, err)
		}
	}
	if _, err := os.Stat(filepath.Join(u.StateDir(), "events.log")); !os.IsNotExist(err) {
		t.Errorf("an events log in the state directory: %v", err)
	}
	assertNoSecret(t, u, read(t, managerLog), read(t, eventsLog))

	f, err := config.Read(filepath.Join(u.StateDir(), "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if f.MetricsPort == 0 {
		t.Fatal("no metrics port in the manager's config")
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://127.0.0.1:" + strconv.Itoa(f.MetricsPort) + api.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(api.UnitHeader) != u.Name {
		t.Errorf("GET /metrics on the port: %s, unit %q", resp.Status, resp.Header.Get(api.UnitHeader))
	}
	if now := u.ManagerPID(); now != pid {
		t.Errorf("the manager was restarted (pid %d → %d)", pid, now)
	}
}
