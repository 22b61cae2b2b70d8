package charm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	pebble "github.com/canonical/pebble/client"
	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/service/api"
)

// The metrics port of a unit is the Python charm's: 55555 plus the unit's
// number, or the next free one of the 100 from there (wrapping), chosen
// once and kept in the unit's state (metricsPortFile), so that the scrape
// job the charm publishes does not move. Two units on one machine (of two
// applications, both unit 0) never get the same port: a port another
// unit's state directory keeps is skipped, whether its manager listens
// yet or not (Juju runs one hook at a time on a machine, so two units
// never choose at once).
const (
	metricsPortBase  = 55555
	metricsPortRange = 100
	metricsPortFile  = "metrics-port"
)

// DefaultLogRoot is where the manager's log and the events log go, in a
// directory each: the COS agent tails /var/log/**/*log.
const DefaultLogRoot = "/var/log"

// logRootEnv overrides DefaultLogRoot. Juju never sets it; the hook
// harness does, so tests do not write to /var/log.
const logRootEnv = "GITHUB_RUNNER_LOG_ROOT"

// portProbeTimeout bounds asking a port who listens there.
const portProbeTimeout = 2 * time.Second

// setObservability sets where the manager of next logs, writes its events
// and serves its metrics. A unit that finds no free port runs without the
// TCP metrics (the socket still serves them), and says so.
func (c *Charm) setObservability(ctx context.Context, next *config.File) {
	root := c.Getenv(logRootEnv)
	if root == "" {
		root = DefaultLogRoot
	}
	name := strings.ReplaceAll(c.Unit, "/", "-") + ".log"
	next.LogFile = filepath.Join(root, "github-runner-manager", name)
	next.EventsLog = filepath.Join(root, "github-runner-metrics", name)
	port, err := c.chooseMetricsPort(ctx)
	if err != nil {
		c.Log.Warn("the manager serves its metrics on its socket only", "error", err)
	}
	next.MetricsPort = port
}

// chooseMetricsPort is the unit's metrics port: the one it kept, unless another
// process or unit holds it now (then another is chosen, and the log says
// so), or a free one, which it keeps.
func (c *Charm) chooseMetricsPort(ctx context.Context) (int, error) {
	claimed := c.otherUnitsPorts()
	kept := c.keptMetricsPort()
	if kept != 0 {
		switch other, taken := claimed[kept]; {
		case taken:
			c.Log.Warn("the metrics port is kept by another unit on this machine; choosing another", "port", kept, "other", other)
		case c.portUsable(ctx, kept):
			return kept, nil
		default:
			c.Log.Warn("another process took the metrics port; choosing another", "port", kept)
		}
	}
	start := 0
	if _, n, ok := strings.Cut(c.Unit, "/"); ok {
		start, _ = strconv.Atoi(n)
	}
	for i := range metricsPortRange {
		port := metricsPortBase + (start+i)%metricsPortRange
		if _, taken := claimed[port]; taken || port == kept || !portFree(port) {
			continue
		}
		if err := c.keepMetricsPort(port); err != nil {
			return 0, err
		}
		if kept != 0 {
			c.Log.Info("the metrics port changed: the cos-agent relation data says so", "from", kept, "to", port)
		}
		return port, nil
	}
	return 0, fmt.Errorf("cannot find a free TCP port for the metrics in %d–%d", metricsPortBase, metricsPortBase+metricsPortRange-1)
}

// metricsPortLost tells whether the port the unit keeps is held by
// another process or unit now (update-status chooses another then).
func (c *Charm) metricsPortLost(ctx context.Context) bool {
	kept := c.keptMetricsPort()
	if kept == 0 {
		return false
	}
	if _, taken := c.otherUnitsPorts()[kept]; taken {
		return true
	}
	return !c.portUsable(ctx, kept)
}

func (c *Charm) keptMetricsPort() int {
	return readPort(filepath.Join(c.StateDir, metricsPortFile))
}

func readPort(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	port, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || port <= 0 || port > 65535 {
		return 0
	}
	return port
}

func (c *Charm) keepMetricsPort(port int) error {
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return fmt.Errorf("cannot keep the metrics port: %w", err)
	}
	path := filepath.Join(c.StateDir, metricsPortFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o600); err != nil {
		return fmt.Errorf("cannot keep the metrics port: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot keep the metrics port: %w", err)
	}
	return nil
}

// otherUnitsPorts are the ports the other units' state directories on
// this machine keep, and whose they are.
func (c *Charm) otherUnitsPorts() map[int]string {
	ports := map[int]string{}
	root := filepath.Dir(c.StateDir)
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		dir := filepath.Join(root, e.Name())
		if !e.IsDir() || dir == c.StateDir {
			continue
		}
		if port := readPort(filepath.Join(dir, metricsPortFile)); port != 0 {
			ports[port] = e.Name()
		}
	}
	return ports
}

// portUsable tells whether the unit's manager can serve on port: it is
// free, or this unit's manager serves there already.
func (c *Charm) portUsable(ctx context.Context, port int) bool {
	return portFree(port) || c.servesMetrics(ctx, port)
}

// portFree tells whether nothing listens on 127.0.0.1:port.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// servesMetrics tells whether this unit's manager answers on port.
func (c *Charm) servesMetrics(ctx context.Context, port int) bool {
	ctx, cancel := context.WithTimeout(ctx, portProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(port))+api.PathMetrics, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.Header.Get(api.UnitHeader) == c.Unit
}

// onlyLogLevelChanged tells whether two configs differ in their log level
// alone: the charm then tells the running manager (Reload) rather than
// restart it.
func onlyLogLevelChanged(previous, next *config.File) bool {
	if previous == nil || previous.LogLevel == next.LogLevel {
		return false
	}
	same := *previous
	same.LogLevel = next.LogLevel
	return sameConfig(&same, next)
}

// restartHash is the part of a config file's content whose change
// restarts the manager: all of it but the log level, which the manager
// re-reads at SIGHUP (see Reload). Content that does not parse is hashed
// whole.
func restartHash(content []byte) []byte {
	f, err := config.Parse(content)
	if err != nil {
		return content
	}
	f.LogLevel = ""
	data, err := yaml.Marshal(f)
	if err != nil {
		return content
	}
	return data
}

// Reload tells the running manager to re-read its config file's log level
// (SIGHUP, through Pebble).
func (s *Supervisor) Reload(ctx context.Context) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	_, err = bounded(ctx, func() (struct{}, error) {
		return struct{}{}, c.SendSignal(&pebble.SendSignalOptions{Signal: "SIGHUP", Services: []string{serviceName}})
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("cannot tell the manager its new log level: %w", err)
	}
	return err
}
