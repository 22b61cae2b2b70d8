package faults

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"syscall"
	"testing"
	"time"

	lxdclient "github.com/canonical/lxd/client"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// Shortened cleanup clocks: the engine's are 20 and 23 minutes.
const (
	creationTimeout = 15 * time.Second
	offlineTimeout  = 10 * time.Second
)

// managerService is the real github-runner-manager binary, run by hand from a
// config file (as README's "Running the manager without Juju" does), for
// the rules whose clocks the charm has no option for: the config file's
// timeouts are set to seconds.
type managerService struct {
	t      *testing.T
	lxd    lxdclient.InstanceServer
	github *fakegithub.Server
	client *api.Client
	socket string
	id     runner.Identity
	log    string
}

func startService(t *testing.T) *managerService {
	t.Helper()
	c := lxdtest.Connect(t)
	bridge := lxdtest.BridgeIP(t, c)
	port := stack.FreePort(t)
	fake, err := fakegithub.New(fakegithub.Options{
		AdvertiseURL: fmt.Sprintf("http://%s:%d", bridge, port),
		Tokens:       []fakegithub.Token{{Value: token, Scope: stack.Repo}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })

	binary := buildManager(t)
	var b [3]byte
	rand.Read(b[:])
	app := "fltsvc" + hex.EncodeToString(b[:])
	// Short: the socket's path must fit 108 bytes.
	stateDir, err := os.MkdirTemp("", "gr-svc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(stateDir) })
	id := runner.Identity{Model: harness.DefaultModel, App: app, Unit: 0}
	f := &config.File{
		Unit: id.UnitName(), Model: id.Model, StateDir: stateDir, Runners: 2, ReconcileInterval: time.Hour,
		GitHub:   config.GitHub{Path: stack.Repo, APIURL: fake.URL(), Token: token, Group: "default", Labels: []string{label}},
		LXD:      &config.LXD{Type: "container", BaseImage: lxdtest.BaseImageAlias, CPU: 1, Memory: 256 << 20, Disk: 1 << 30},
		Timeouts: config.Timeouts{Creation: creationTimeout, Offline: offlineTimeout},
	}
	configPath := filepath.Join(stateDir, "config.yaml")
	if err := f.Write(configPath); err != nil {
		t.Fatal(err)
	}
	s := &managerService{t: t, lxd: c, github: fake, id: id, socket: filepath.Join(stateDir, api.SocketName),
		log: filepath.Join(stateDir, "manager.log")}
	s.client = api.NewClient(s.socket, 2*time.Minute)
	logFile, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "--config", configPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	t.Cleanup(func() { lxdtest.DeleteAll(c, id.Prefix()+"-") })
	t.Cleanup(func() {
		// Drain everything, then SIGTERM, as the charm's stop hook does.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s.client.Drain(ctx, true)
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			out, _ := os.ReadFile(s.log)
			t.Logf("manager log:\n%s", out)
		}
	})
	stack.WaitFor(t, time.Minute, "the manager answers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.client.Health(ctx) == nil
	})
	return s
}

// buildManager builds github-runner-manager once per test binary.
func buildManager(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	dir := t.TempDir()
	binary := filepath.Join(dir, "github-runner-manager")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", binary, "./src/cmd/github-runner-manager")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot build the manager: %v\n%s", err, out)
	}
	return binary
}

func (s *managerService) reconcile() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := s.client.Reconcile(ctx); err != nil {
		s.t.Fatalf("reconcile: %v", err)
	}
}

func (s *managerService) state() (online int, instances, runners []string) {
	s.t.Helper()
	names, err := s.lxd.GetInstanceNames("container")
	if err != nil {
		s.t.Fatal(err)
	}
	for _, name := range names {
		if s.id.Generation(name) == runner.Current {
			instances = append(instances, name)
		}
	}
	for _, r := range s.github.Runners(stack.Repo) {
		if s.id.Generation(r.Name) == runner.Current {
			runners = append(runners, r.Name)
			if r.Status == "online" {
				online++
			}
		}
	}
	sort.Strings(instances)
	sort.Strings(runners)
	return online, instances, runners
}

// converge reconciles until n runners are online, matched one to one.
func (s *managerService) converge(n int) {
	s.t.Helper()
	stack.WaitFor(s.t, 2*time.Minute, fmt.Sprintf("%d runners online", n), func() bool {
		s.reconcile()
		online, instances, runners := s.state()
		return online == n && len(runners) == n && slices.Equal(instances, runners)
	})
}

func (s *managerService) removed(reason string) float64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	text, err := s.metrics(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return stack.MetricIn(text, fmt.Sprintf(`deleted_runners_total{reason="%s"}`, reason))
}

func (s *managerService) metrics(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "curl", "-sS", "--fail", "--unix-socket", s.socket, "http://manager"+api.PathMetrics).Output()
	if err != nil {
		return "", fmt.Errorf("cannot read the manager's metrics: %v", err)
	}
	return string(out), nil
}

// removedWithin reconciles until the named runner is gone from both LXD and
// GitHub, and fails unless that took at least notBefore and at most limit.
func (s *managerService) removedWithin(name string, notBefore, limit time.Duration) {
	s.t.Helper()
	start := time.Now()
	stack.WaitFor(s.t, limit, name+" is removed", func() bool {
		s.reconcile()
		_, instances, runners := s.state()
		return !slices.Contains(instances, name) && !slices.Contains(runners, name)
	})
	if took := time.Since(start); took < notBefore {
		s.t.Errorf("%s was removed after %v, before its rule's %v", name, took.Round(time.Second), notBefore)
	}
}

// TestCleanupRules checks the cleanup rules whose clocks are minutes long
// in production, with the real service binary, real LXD and the fake
// GitHub, and the config file's timeouts cut to seconds: a runner stuck
// offline, an instance whose runner never registers, and a runner GitHub
// shows busy after its instance is gone. Each goes by its rule, no sooner,
// and is counted under its reason in GET /metrics. About 1.5 minutes.
func TestCleanupRules(t *testing.T) {
	s := startService(t)
	s.converge(2)

	t.Log("a runner seen online, then offline: removed after the offline timeout")
	_, _, runners := s.state()
	stuck := runners[0]
	id := s.runnerID(stuck)
	if err := s.github.SetRunnerStatus(id, false); err != nil {
		t.Fatal(err)
	}
	s.removedWithin(stuck, offlineTimeout-3*time.Second, offlineTimeout+time.Minute)
	if got := s.removed(string(runner.Offline)); got != 1 {
		t.Errorf(`removed{reason="offline"} = %v, want 1`, got)
	}
	s.converge(2)

	t.Log("an instance whose runner never registers: removed after the creation timeout")
	orphan := s.id.NewName()
	lxdtest.Launch(t, s.lxd, orphan, lxdtest.BaseImageAlias, map[string]string{
		"user." + runner.MetaCreatedAt: time.Now().UTC().Format(time.RFC3339),
		"user." + runner.MetaModel:     s.id.Model,
		"user." + runner.MetaUnit:      s.id.UnitName(),
	})
	s.reconcile()
	if _, instances, _ := s.state(); !slices.Contains(instances, orphan) {
		t.Fatalf("the unregistered instance %s went before its creation timeout", orphan)
	}
	s.removedWithin(orphan, creationTimeout-5*time.Second, creationTimeout+time.Minute)
	if got := s.removed(string(runner.NoRunner)); got != 1 {
		t.Errorf(`removed{reason=%q} = %v, want 1`, runner.NoRunner, got)
	}
	s.converge(2)

	t.Log("a runner GitHub shows busy whose instance is gone: kept while busy, removed once GitHub lets go")
	_, _, runners = s.state()
	busy := runners[0]
	busyID := s.runnerID(busy)
	if _, err := s.github.AssignJob(busyID, fakegithub.JobSpec{Sleep: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if err := lxdtest.DeleteInstance(s.lxd, busy); err != nil {
		t.Fatal(err)
	}
	before := s.removed(string(runner.NoInstance))
	s.reconcile()
	s.reconcile()
	if _, _, runners := s.state(); !slices.Contains(runners, busy) {
		t.Fatalf("the busy runner's record %s was removed while GitHub shows it busy", busy)
	}
	if got := s.removed(string(runner.NoInstance)); got != before {
		t.Errorf("a runner GitHub refused to remove was counted as removed: %v, was %v", got, before)
	}
	// GitHub notices the runner is gone and fails its job, but keeps the
	// record, offline (ephemeral runners usually vanish; not always).
	if err := s.github.SetRunnerBusy(busyID, false); err != nil {
		t.Fatal(err)
	}
	if err := s.github.SetRunnerStatus(busyID, false); err != nil {
		t.Fatal(err)
	}
	s.removedWithin(busy, 0, time.Minute)
	if got := s.removed(string(runner.NoInstance)); got != before+1 {
		t.Errorf(`removed{reason=%q} = %v, want %v`, runner.NoInstance, got, before+1)
	}
	s.converge(2)
}

func (s *managerService) runnerID(name string) int64 {
	s.t.Helper()
	for _, r := range s.github.Runners(stack.Repo) {
		if r.Name == name {
			return r.ID
		}
	}
	s.t.Fatalf("GitHub has no runner %s", name)
	return 0
}
