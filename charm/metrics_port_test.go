package charm

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/service/api"
)

// portCharm is a charm of unit with its state under root, logging to log.
func portCharm(root, unit string, log *bytes.Buffer, env map[string]string) *Charm {
	return &Charm{
		Unit: unit, StateDir: filepath.Join(root, strings.ReplaceAll(unit, "/", "-")),
		Log:    slog.New(slog.NewTextHandler(log, nil)),
		Getenv: func(key string) string { return env[key] },
	}
}

func choose(t *testing.T, c *Charm) int {
	t.Helper()
	port, err := c.chooseMetricsPort(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if port < metricsPortBase || port >= metricsPortBase+metricsPortRange {
		t.Fatalf("port %d is out of %d–%d", port, metricsPortBase, metricsPortBase+metricsPortRange-1)
	}
	return port
}

// serveAs listens on port as the manager of unit does (its metrics
// endpoint's header), or as some other process when unit is "".
func serveAs(t *testing.T, port int, unit string) {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if unit != "" {
			w.Header().Set(api.UnitHeader, unit)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// Two units on one machine (two applications' unit 0) get two ports,
// whether the first one's manager listens yet or not; each keeps its own
// across configurations, listening or not.
func TestMetricsPortPerUnitAndKept(t *testing.T) {
	root := t.TempDir()
	var log bytes.Buffer
	a, b := portCharm(root, "github-runner/0", &log, nil), portCharm(root, "github-runner-arm/0", &log, nil)
	pa := choose(t, a)
	pb := choose(t, b) // a's manager does not listen yet
	if pa == pb {
		t.Fatalf("both units got port %d", pa)
	}
	if again := choose(t, a); again != pa {
		t.Errorf("a re-configure moved the port from %d to %d", pa, again)
	}
	serveAs(t, pa, a.Unit) // a's manager listens there now
	if again := choose(t, a); again != pa {
		t.Errorf("a re-configure with the manager listening moved the port from %d to %d", pa, again)
	}
	if a.metricsPortLost(context.Background()) {
		t.Error("the unit's own manager's port is said lost")
	}
	if again := choose(t, b); again != pb {
		t.Errorf("b's port moved from %d to %d", pb, again)
	}
	if data, err := os.ReadFile(filepath.Join(a.StateDir, metricsPortFile)); err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(pa) {
		t.Errorf("the kept port is %q, %v; want %d", data, err, pa)
	}
	if strings.Contains(log.String(), "choosing another") {
		t.Errorf("the log says a port was re-chosen:\n%s", log.String())
	}
}

// A kept port another process or another unit's manager holds now is
// chosen again, and the log says so.
func TestMetricsPortTakenIsChosenAgain(t *testing.T) {
	for _, holder := range []string{"", "github-runner-arm/0"} {
		t.Run("held by "+map[string]string{"": "another process"}[holder]+holder, func(t *testing.T) {
			var log bytes.Buffer
			c := portCharm(t.TempDir(), "github-runner/3", &log, nil)
			kept := choose(t, c)
			serveAs(t, kept, holder)
			if !c.metricsPortLost(context.Background()) {
				t.Error("the taken port is not said lost (update-status would keep it)")
			}
			again := choose(t, c)
			if again == kept {
				t.Fatalf("the taken port %d was kept", kept)
			}
			if !strings.Contains(log.String(), "another process took the metrics port; choosing another") || !strings.Contains(log.String(), "port="+strconv.Itoa(kept)) {
				t.Errorf("the log does not say the port was taken:\n%s", log.String())
			}
			if got := c.keptMetricsPort(); got != again {
				t.Errorf("kept %d, want the new %d", got, again)
			}
		})
	}
}

// A port another unit's state keeps is never chosen, even when nothing
// listens on it, and a unit that finds its own kept port in another
// unit's state gives it up.
func TestMetricsPortOfAnotherUnitSkipped(t *testing.T) {
	root := t.TempDir()
	var log bytes.Buffer
	a := portCharm(root, "github-runner/0", &log, nil)
	pa := choose(t, a)
	b := portCharm(root, "other/0", &log, nil)
	if err := b.keepMetricsPort(pa); err != nil { // as a unit whose state says the same port
		t.Fatal(err)
	}
	if !a.metricsPortLost(context.Background()) {
		t.Error("a port another unit keeps is not said lost")
	}
	if again := choose(t, a); again == pa {
		t.Errorf("the port %d another unit keeps was kept", pa)
	}
}

// The charm puts the manager's log and events log under the log root, a
// file each per unit, and the port it chose in the config.
func TestSetObservability(t *testing.T) {
	var log bytes.Buffer
	c := portCharm(t.TempDir(), "github-runner/2", &log, map[string]string{logRootEnv: "/tmp/logs"})
	var f config.File
	c.setObservability(context.Background(), &f)
	if f.LogFile != "/tmp/logs/github-runner-manager/github-runner-2.log" || f.EventsLog != "/tmp/logs/github-runner-metrics/github-runner-2.log" {
		t.Errorf("log files %q and %q", f.LogFile, f.EventsLog)
	}
	if f.MetricsPort != c.keptMetricsPort() || f.MetricsPort == 0 {
		t.Errorf("metrics port %d, kept %d", f.MetricsPort, c.keptMetricsPort())
	}
	c.Getenv = func(string) string { return "" }
	c.setObservability(context.Background(), &f)
	if !strings.HasPrefix(f.LogFile, "/var/log/github-runner-manager/") {
		t.Errorf("log file %q without a log root", f.LogFile)
	}
}

// A new log level alone restarts nothing: the layer's hash leaves it out
// and the charm tells the manager instead; any other change restarts.
func TestLogLevelAloneRestartsNothing(t *testing.T) {
	base := config.File{Unit: "github-runner/0", Model: testModel, StateDir: "/s", Runners: 1, ReconcileInterval: 300e9,
		GitHub: config.GitHub{Path: "org", APIURL: "https://api.github.com", Token: "ghp_x", Group: "default"},
		LXD:    &config.LXD{Type: "container", BaseImage: "noble", CPU: 1, Memory: 1 << 30, Disk: 1 << 30}}
	debug, more := base, base
	debug.LogLevel = "DEBUG"
	more.Runners = 2
	hash := func(f config.File) string {
		data, err := yaml.Marshal(&f)
		if err != nil {
			t.Fatal(err)
		}
		return string(restartHash(data))
	}
	if hash(base) != hash(debug) {
		t.Error("the log level changes the restart hash")
	}
	if hash(base) == hash(more) {
		t.Error("the runners do not change the restart hash")
	}
	if !onlyLogLevelChanged(&base, &debug) || onlyLogLevelChanged(&base, &more) || onlyLogLevelChanged(nil, &debug) || onlyLogLevelChanged(&base, &base) {
		t.Error("onlyLogLevelChanged is wrong")
	}
	moreDebug := more
	moreDebug.LogLevel = "DEBUG"
	if onlyLogLevelChanged(&base, &moreDebug) {
		t.Error("a change of the level and more is taken for the level alone")
	}
}
