// Package e2e runs the packed charm end to end, for real: the Juju hook
// harness runs dispatch, the charm starts a real Pebble, Pebble runs the real
// github-runner-manager, which builds a runner image and starts runners on
// the real LXD daemon; the runners register at the fake GitHub and run jobs.
package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	lxdclient "github.com/canonical/lxd/client"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m))
}

const (
	repo  = "canonical/runners"
	token = "ghp_E2E_RECOGNISABLE_TOKEN_0123456789"
)

type bed struct {
	t      *testing.T
	lxd    lxdclient.InstanceServer
	github *fakegithub.Server
	unit   *harness.Unit
	prefix string
}

func newBed(t *testing.T) *bed {
	c := lxdtest.Connect(t)
	bridge := lxdtest.BridgeIP(t, c)
	port := freePort(t)
	// The manager reaches the API on loopback; runners reach the broker and
	// downloads on the bridge.
	fake, err := fakegithub.New(fakegithub.Options{
		AdvertiseURL: fmt.Sprintf("http://%s:%d", bridge, port),
		Tokens:       []fakegithub.Token{{Value: token, Scope: repo}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })

	var b [3]byte
	rand.Read(b[:])
	app := "e2e" + hex.EncodeToString(b[:])
	u := harness.New(t, harness.Options{App: app, Leader: true})
	bd := &bed{t: t, lxd: c, github: fake, unit: u, prefix: app + "-0"}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager logs:\n%s", u.ServiceLogs())
		}
	})
	// Registered after the harness's own cleanup, so it runs before it:
	// whatever happens, nothing of the prefix may be left in LXD.
	t.Cleanup(func() { lxdtest.DeleteAll(c, bd.prefix+"-") })
	u.SetConfig(map[string]any{
		"path": repo, "token": token, "github-api-url": fake.URL(), "labels": "e2e",
		"runner-type": "container", "base-image": lxdtest.BaseImageAlias,
		"virtual-machines": 3, "vm-cpu": 1, "vm-memory": "256MiB", "vm-disk": "1GiB",
	})
	return bd
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// reconcile runs the reconcile-runners action, as an operator would.
func (b *bed) reconcile() {
	b.t.Helper()
	if r := b.unit.Action("reconcile-runners", nil); r.Status != "completed" {
		b.t.Fatalf("reconcile-runners: %+v", r)
	}
}

// converge reconciles until exactly n of this unit's runners are online and
// the instances match GitHub's runners one to one.
func (b *bed) converge(n int) {
	b.t.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		b.reconcile()
		online, instances, runners := b.state()
		if online == n && slices.Equal(instances, runners) && len(runners) == n {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("no convergence to %d runners: %d online, instances %v, runners %v", n, online, instances, runners)
		}
		time.Sleep(3 * time.Second)
	}
}

// state is what LXD and GitHub hold of this unit.
func (b *bed) state() (online int, instances, runners []string) {
	b.t.Helper()
	names, err := b.lxd.GetInstanceNames("container")
	if err != nil {
		b.t.Fatal(err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, b.prefix+"-") && !strings.Contains(name, "-img-") {
			instances = append(instances, name)
		}
	}
	for _, r := range b.github.Runners(repo) {
		if strings.HasPrefix(r.Name, b.prefix+"-") {
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

func (b *bed) runnerNames() []string {
	_, _, runners := b.state()
	return runners
}

func (b *bed) assign(spec fakegithub.JobSpec) fakegithub.Job {
	b.t.Helper()
	job, err := b.github.AssignJobToAny(repo, []string{"e2e"}, spec)
	if err != nil {
		b.t.Fatalf("cannot assign a job: %v", err)
	}
	return job
}

func (b *bed) waitJob(id int64) fakegithub.Job {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, err := b.github.WaitJob(ctx, id)
	if err != nil {
		b.t.Fatalf("job %d did not finish: %v", id, err)
	}
	return job
}

// managerPID finds the running manager of this unit.
func (b *bed) managerPID() int {
	b.t.Helper()
	entries, _ := os.ReadDir("/proc")
	config := filepath.Join(b.unit.StateDir(), "config.yaml")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 2 && strings.HasSuffix(args[0], "github-runner-manager") && slices.Contains(args, config) && !slices.Contains(args, "health") {
			return pid
		}
	}
	return 0
}

func TestRunnersEndToEnd(t *testing.T) {
	b := newBed(t)
	b.unit.Deploy()
	b.converge(3)
	if s := b.unit.Status(); s.Status == "blocked" {
		t.Fatalf("status = %+v", s)
	}

	t.Log("two jobs run; their runners are replaced")
	first := b.runnerNames()
	jobs := []fakegithub.Job{b.assign(fakegithub.JobSpec{Command: "echo done"}), b.assign(fakegithub.JobSpec{Command: "true"})}
	for _, j := range jobs {
		if done := b.waitJob(j.ID); done.ExitCode != 0 {
			t.Errorf("job %d: %+v", j.ID, done)
		}
	}
	b.converge(3)
	if kept := intersect(first, b.runnerNames()); len(kept) != 1 {
		t.Errorf("after two jobs, %d of the first runners remain, want 1", len(kept))
	}
	b.unit.Hook("update-status")
	if s := b.unit.Status(); s != (harness.Status{Status: "active", Message: "3 runners: 3 idle, 0 busy"}) {
		t.Errorf("status = %+v", s)
	}

	t.Log("flush-runners replaces idle runners and leaves the busy one")
	busy := b.assign(fakegithub.JobSpec{Sleep: 10 * time.Minute})
	r := b.unit.Action("flush-runners", nil)
	if r.Status != "completed" || r.Results["removed"] != "2" {
		t.Fatalf("flush-runners: %+v", r)
	}
	if !slices.Contains(b.runnerNames(), busy.RunnerName) {
		t.Fatalf("the busy runner %s was flushed", busy.RunnerName)
	}
	b.converge(3)

	t.Log("flush-runners flush-busy=true replaces every runner")
	before := b.runnerNames()
	r = b.unit.Action("flush-runners", map[string]any{"flush-busy": true})
	if r.Status != "completed" || r.Results["removed"] != "3" {
		t.Fatalf("flush-runners flush-busy=true: %+v", r)
	}
	// GitHub notices the busy runner's instance is gone, fails its job and
	// drops the ephemeral runner; until then it refuses to delete it.
	b.github.CompleteJob(busy.ID, 1)
	b.converge(3)
	if kept := intersect(before, b.runnerNames()); len(kept) != 0 {
		t.Errorf("runners survived a busy flush: %v", kept)
	}

	t.Log("a labels change replaces the runners with new labels")
	before = b.runnerNames()
	if r := b.unit.Configure(map[string]any{"labels": "e2e,fresh"}); r.Code != 0 {
		t.Fatalf("config-changed: %s", r.Stderr)
	}
	b.converge(3)
	if kept := intersect(before, b.runnerNames()); len(kept) != 0 {
		t.Errorf("runners with the old labels survived: %v", kept)
	}
	for _, runner := range b.github.Runners(repo) {
		if !hasLabel(runner, "fresh") {
			t.Errorf("runner %s lacks the new label: %+v", runner.Name, runner.Labels)
		}
	}

	t.Log("the manager killed while creating runners is restarted and nothing leaks")
	// A busy flush removes all three runners and creates three more; the
	// manager dies somewhere in the middle of that.
	flushed := make(chan harness.ActionResult, 1)
	go func() { flushed <- b.unit.Action("flush-runners", map[string]any{"flush-busy": true}) }()
	time.Sleep(3 * time.Second)
	if pid := b.managerPID(); pid == 0 {
		t.Fatal("cannot find the manager process")
	} else if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if r := <-flushed; r.Status != "failed" {
		t.Logf("the flush finished before the kill: %+v", r)
	}
	waitFor(t, time.Minute, "Pebble restarts the manager", func() bool { return b.managerPID() != 0 })
	b.converge(3)

	t.Log("a revoked token blocks the unit, names the token and deletes nothing")
	before = b.runnerNames()
	b.github.RemoveToken(token)
	b.unit.Action("reconcile-runners", nil)
	b.unit.Hook("update-status")
	if s := b.unit.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "token") {
		t.Errorf("status with a revoked token = %+v", s)
	}
	if _, instances, _ := b.state(); !slices.Equal(instances, before) {
		t.Errorf("instances changed while GitHub refused the token: %v, were %v", instances, before)
	}
	b.github.AddToken(fakegithub.Token{Value: token, Scope: repo})

	t.Log("remove leaves no instance and no GitHub runner of the unit")
	if r := b.unit.Hook("stop"); r.Code != 0 {
		t.Fatalf("stop: %s", r.Stderr)
	}
	if r := b.unit.Hook("remove"); r.Code != 0 {
		t.Fatalf("remove: %s", r.Stderr)
	}
	if _, instances, runners := b.state(); len(instances) != 0 || len(runners) != 0 {
		t.Errorf("left after remove: instances %v, runners %v", instances, runners)
	}
	for _, s := range b.unit.StatusHistory() {
		if strings.Contains(s.Message, token) {
			t.Errorf("the token leaked into status %q", s.Message)
		}
	}
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

func hasLabel(r fakegithub.Runner, name string) bool {
	for _, l := range r.Labels {
		if l.Name == name {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.After(limit)
	for !ok() {
		select {
		case <-deadline:
			t.Fatalf("timed out: %s", what)
		case <-time.After(500 * time.Millisecond):
		}
	}
}
