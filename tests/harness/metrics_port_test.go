package harness_test

import (
	"net"
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

// metricsPortOf is the port in the unit's manager config, checked to
// answer as the unit's manager.
func metricsPortOf(t *testing.T, u *harness.Unit) int {
	t.Helper()
	f, err := config.Read(filepath.Join(u.StateDir(), "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if f.MetricsPort == 0 {
		t.Fatalf("%s has no metrics port", u.Name)
	}
	var unit string
	eventually(t, u.Name+"'s metrics on its port", func() bool {
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://127.0.0.1:" + strconv.Itoa(f.MetricsPort) + api.PathMetrics)
		if err != nil {
			return false
		}
		resp.Body.Close()
		unit = resp.Header.Get(api.UnitHeader)
		return resp.StatusCode == http.StatusOK && unit == u.Name
	})
	return f.MetricsPort
}

// Two units on one machine (two applications' unit 0, one state root)
// get two ports and serve on them; a re-configure keeps the port; a kept
// port another process took while the unit was away (the second unit's,
// before its deploy) is chosen again, and the unit says so.
func TestMetricsPortsOfUnitsOnOneMachine(t *testing.T) {
	cfg, _ := withFakeGitHub(t)
	root, err := os.MkdirTemp("", "gr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	a := harness.New(t, harness.Options{App: "github-runner", Leader: true, StateRoot: root})
	a.SetConfig(cfg)
	a.Deploy()
	pa := metricsPortOf(t, a)
	if r := a.Configure(map[string]any{"reconcile-interval": 7}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	if again := metricsPortOf(t, a); again != pa {
		t.Errorf("a re-configure moved the port from %d to %d", pa, again)
	}

	squatter, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	taken := squatter.Addr().(*net.TCPAddr).Port
	b := harness.New(t, harness.Options{App: "github-runner-arm", Leader: true, StateRoot: root})
	if err := os.MkdirAll(b.StateDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.StateDir(), "metrics-port"), []byte(strconv.Itoa(taken)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.SetConfig(cfg)
	b.Deploy()
	pb := metricsPortOf(t, b)
	if pb == taken || pb == pa {
		t.Errorf("the second unit serves on %d (taken %d, the first unit's %d)", pb, taken, pa)
	}
	said := false
	for _, l := range b.Logs() {
		said = said || strings.Contains(l.Message, "another process took the metrics port; choosing another") && strings.Contains(l.Message, strconv.Itoa(taken))
	}
	if !said {
		t.Errorf("the unit's log does not say port %d was taken: %v", taken, b.Logs())
	}
	if again := metricsPortOf(t, a); again != pa {
		t.Errorf("the first unit's port moved from %d to %d", pa, again)
	}
}
