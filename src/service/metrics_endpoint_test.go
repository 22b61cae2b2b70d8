package service

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/logfile"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// freePort is a TCP port nobody listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// documentedMetrics are the names in the README's metrics table.
func documentedMetrics(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(data), "\n### Metrics\n")
	section, _, _ = strings.Cut(section, "\n### ")
	var names []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\| (?:gauge|counter|histogram) \\|").FindAllStringSubmatch(section, -1) {
		names = append(names, m[1])
	}
	if len(names) < 20 {
		t.Fatalf("the README documents %d metrics", len(names))
	}
	return names
}

// scrapeTCP is GET /metrics on 127.0.0.1:port: its body and its unit
// header, or an error.
func scrapeTCP(port int) (string, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + api.PathMetrics)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", "", &net.AddrError{Err: resp.Status}
	}
	return string(body), resp.Header.Get(api.UnitHeader), err
}

func scrapeSocket(t *testing.T, socket string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	resp, err := c.Get("http://unit" + api.PathMetrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// The service serves /metrics on its localhost port as on its socket,
// with every documented metric, and writes its events log where the
// config says.
func TestMetricsOverTCP(t *testing.T) {
	fake := fakegithub.NewTest(t, fakegithub.Options{})
	port := freePort(t)
	events := filepath.Join(t.TempDir(), "log", "github-runner-metrics", "github-runner-0.log")
	f, ctx, _ := runScaleSetUnit(t, fake, managertest.NewCloud(), func(f *config.File) { f.MetricsPort, f.EventsLog = port, events })
	var body, unit string
	waitUntil(t, "the metrics on the TCP port", func() bool {
		var err error
		body, unit, err = scrapeTCP(port)
		return err == nil
	})
	if unit != f.Unit {
		t.Errorf("the endpoint says it is %q's, want %q", unit, f.Unit)
	}
	for _, name := range documentedMetrics(t) {
		if !regexp.MustCompile(`(?m)^` + name + `(_bucket|_count)?[{ ]`).MatchString(body) {
			t.Errorf("the TCP scrape has no %s", name)
		}
	}
	if socket := scrapeSocket(t, f.SocketPath()); !strings.Contains(socket, "expected_runners_count{") {
		t.Errorf("the socket's /metrics lacks expected_runners_count:\n%s", socket)
	}
	client := api.NewClient(f.SocketPath(), 10*time.Second)
	waitUntil(t, "the first cycle's reconciliation event", func() bool {
		data, _ := os.ReadFile(events)
		return strings.Contains(string(data), `"event":"reconciliation"`)
	})
	if info, err := os.Stat(events); err != nil || info.Mode().Perm() != logfile.Mode {
		t.Errorf("events log: %v, %v; want mode %o", info, err, logfile.Mode)
	}
	if _, err := os.Stat(filepath.Join(f.StateDir, "events.log")); !os.IsNotExist(err) {
		t.Errorf("an events log in the state directory too: %v", err)
	}
	if r, err := client.Runners(ctx); err != nil || strings.Contains(r.Problem, "metrics") {
		t.Errorf("report %+v, %v; want no metrics problem", r, err)
	}
}

// A port another process holds is the unit's problem, in words, and the
// manager goes on (no exit, no restart loop); once the port is free it
// serves there.
func TestMetricsPortTaken(t *testing.T) {
	defer func(d time.Duration) { metricsRetry = d }(metricsRetry)
	metricsRetry = 100 * time.Millisecond
	squatter, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := squatter.Addr().(*net.TCPAddr).Port
	fake := fakegithub.NewTest(t, fakegithub.Options{})
	f, ctx, r := runScaleSetUnit(t, fake, managertest.NewCloud(), func(f *config.File) { f.MetricsPort = port })
	client := api.NewClient(f.SocketPath(), 10*time.Second)
	want := "cannot serve the metrics on 127.0.0.1:" + strconv.Itoa(port) + ": another process holds the port"
	waitUntil(t, "the taken port in the report", func() bool {
		report, err := client.Runners(ctx)
		return err == nil && strings.Contains(report.Problem, want) && !report.Blocking
	})
	select {
	case <-r.done:
		t.Fatalf("the manager stopped: %v", r.err)
	default:
	}
	squatter.Close()
	waitUntil(t, "the metrics once the port is free", func() bool {
		_, unit, err := scrapeTCP(port)
		return err == nil && unit == f.Unit
	})
	waitUntil(t, "the problem cleared", func() bool {
		report, err := client.Runners(ctx)
		return err == nil && !strings.Contains(report.Problem, "metrics")
	})
}
