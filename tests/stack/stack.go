// Package stack is the whole product on one machine, for tests that drive
// it from outside: the fake GitHub (on 0.0.0.0, advertised on the LXD
// bridge so runners reach it), one unit of the packed charm under the Juju
// hook harness, the real Pebble and github-runner-manager the charm starts,
// and the real LXD daemon the runners live in. tests/e2e, tests/faults and
// tests/chaos share it; two beds may share one fake GitHub (Options.Server)
// as two deployments of one organisation.
//
// A package using it needs harness.Main in its TestMain.
package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	lxdapi "github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// Repo is the repository every bed's runners register with.
const Repo = "canonical/runners"

// Options shape a bed.
type Options struct {
	// Name starts the application's name, which a random suffix completes
	// (e.g. "e2e" gives "e2e3fa9c1", whose unit's prefix is
	// "e2e3fa9c1-<model tag>-0").
	Name string
	// Token is the GitHub token the fake accepts and the charm is given.
	Token string
	// Label is the runners' one extra label, which jobs ask for.
	Label string
	// Runners is virtual-machines.
	Runners int
	// Config is more charm config, over the bed's defaults.
	Config map[string]any
	// GitHub are more options of the fake GitHub (Tokens and AdvertiseURL
	// are the bed's).
	GitHub fakegithub.Options
	// Server, when set, is another bed's fake GitHub (its Bed.GitHub) to
	// share: this bed adds its token to it instead of starting one, and
	// GitHub is ignored. Two beds on one server are two deployments against
	// one organisation; the bed that started the server stops it, so make
	// the sharing bed after it.
	Server *fakegithub.Server
	// TokenScope is what Token may reach (default Repo); an organisation
	// ("canonical") lets path move between its repositories.
	TokenScope string
	// App is the application's whole name, instead of Name and a random
	// suffix: two beds of one application name in two models (Model).
	App string
	// Model is the unit's model UUID (default harness.DefaultModel).
	Model string
	// Base, Max and ScaleSet are base-virtual-machines,
	// max-total-virtual-machines and runner-scale-set; each is set only
	// when not zero (Runners is then usually 0).
	Base, Max int
	ScaleSet  string
	// Number is the unit's number: a second unit of one application
	// (same App, Server shared) is Number 1, not the leader.
	Number int
}

// Bed is one unit of the charm against real LXD and the fake GitHub.
type Bed struct {
	T      testing.TB
	LXD    lxdclient.InstanceServer
	GitHub *fakegithub.Server
	Unit   *harness.Unit
	// Prefix is the unit's runner name prefix; its runners are Prefix-….
	Prefix string
	Label  string
	Token  string
}

// New sets up a bed and configures the unit, without deploying it. Its
// cleanup removes the unit (stop, remove: Pebble and the manager end) and
// then anything of its prefix still in LXD.
func New(t testing.TB, opts Options) *Bed {
	t.Helper()
	c := lxdtest.Connect(t)
	token := fakegithub.Token{Value: opts.Token, Scope: opts.TokenScope}
	if token.Scope == "" {
		token.Scope = Repo
	}
	fake := opts.Server
	if fake != nil {
		fake.AddToken(token)
	} else {
		fake = startGitHub(t, c, opts.GitHub, token)
	}

	app := opts.App
	if app == "" {
		var b [3]byte
		rand.Read(b[:])
		app = opts.Name + hex.EncodeToString(b[:])
	}
	model := opts.Model
	if model == "" {
		model = harness.DefaultModel
	}
	prefix := runner.Identity{Model: model, App: app, Unit: opts.Number}.Prefix()
	// Registered before the harness's own cleanup, so it runs after the
	// unit's removal (a manager still running would make more): whatever
	// happens, nothing of the prefix is left in LXD, runner images included.
	t.Cleanup(func() { lxdtest.DeleteAll(c, prefix+"-") })
	u := harness.New(t, harness.Options{App: app, Number: opts.Number, Leader: opts.Number == 0, Model: model})
	bed := &Bed{T: t, LXD: c, GitHub: fake, Unit: u, Prefix: prefix, Label: opts.Label, Token: opts.Token}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("manager logs:\n%s", u.ServiceLogs())
		}
	})
	config := map[string]any{
		"path": Repo, "token": opts.Token, "github-api-url": fake.URL(), "labels": opts.Label,
		"runner-type": "container", "base-image": lxdtest.BaseImageAlias,
		"virtual-machines": opts.Runners, "vm-cpu": 1, "vm-memory": "256MiB", "vm-disk": "1GiB",
	}
	scaling(config, opts)
	for k, v := range opts.Config {
		config[k] = v
	}
	u.SetConfig(config)
	return bed
}

// scaling sets the demand options that opts names.
func scaling(config map[string]any, opts Options) {
	if opts.Base != 0 {
		config["base-virtual-machines"] = opts.Base
	}
	if opts.Max != 0 {
		config["max-total-virtual-machines"] = opts.Max
	}
	if opts.ScaleSet != "" {
		config["runner-scale-set"] = opts.ScaleSet
	}
}

// startGitHub serves a fake GitHub for the bed until the test ends. The
// manager reaches the API on loopback; runners reach the broker and
// downloads on the bridge.
func startGitHub(t testing.TB, c lxdclient.InstanceServer, opts fakegithub.Options, token fakegithub.Token) *fakegithub.Server {
	t.Helper()
	port := FreePort(t)
	opts.AdvertiseURL = fmt.Sprintf("http://%s:%d", lxdtest.BridgeIP(t, c), port)
	opts.Tokens = []fakegithub.Token{token}
	fake, err := fakegithub.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.Start(fmt.Sprintf("0.0.0.0:%d", port)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	return fake
}

// FreePort is a TCP port free on every address right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Reconcile runs the reconcile-runners action, as an operator would.
func (b *Bed) Reconcile() {
	b.T.Helper()
	if r := b.Unit.Action("reconcile-runners", nil); r.Status != "completed" {
		b.T.Fatalf("reconcile-runners: %+v", r)
	}
}

// Converge reconciles until exactly n of this unit's runners are online and
// the instances match GitHub's runners one to one.
func (b *Bed) Converge(n int) {
	b.T.Helper()
	deadline := time.Now().Add(4 * time.Minute)
	for {
		b.Reconcile()
		online, instances, runners := b.State()
		if online == n && slices.Equal(instances, runners) && len(runners) == n {
			// One more cycle, with nothing to do, so that the manager's
			// last view (what status and check-runners report) is this one.
			b.Reconcile()
			return
		}
		if time.Now().After(deadline) {
			b.T.Fatalf("no convergence to %d runners: %d online, instances %v, runners %v", n, online, instances, runners)
		}
		time.Sleep(3 * time.Second)
	}
}

// State is what LXD and GitHub hold of this unit: runner instances (the
// image builder's are not runners) and GitHub runners of every scope (the
// unit's path may have changed), sorted by name.
func (b *Bed) State() (online int, instances, runners []string) {
	b.T.Helper()
	online, instances, runners, err := b.TryState()
	if err != nil {
		b.T.Fatal(err)
	}
	return online, instances, runners
}

// TryState is State for when LXD may be down.
func (b *Bed) TryState() (online int, instances, runners []string, err error) {
	names, err := b.LXD.GetInstanceNames("container")
	if err != nil {
		return 0, nil, nil, fmt.Errorf("cannot list LXD instances: %w", err)
	}
	for _, name := range names {
		if strings.HasPrefix(name, b.Prefix+"-") && !strings.Contains(name, "-img-") {
			instances = append(instances, name)
		}
	}
	for _, r := range b.GitHub.Runners("") {
		if strings.HasPrefix(r.Name, b.Prefix+"-") {
			runners = append(runners, r.Name)
			if r.Status == "online" {
				online++
			}
		}
	}
	sort.Strings(instances)
	sort.Strings(runners)
	return online, instances, runners, nil
}

// RunnerNames are the unit's runners at GitHub, sorted.
func (b *Bed) RunnerNames() []string {
	_, _, runners := b.State()
	return runners
}

// Assign gives a job to any idle runner with the bed's label.
func (b *Bed) Assign(spec fakegithub.JobSpec) fakegithub.Job {
	b.T.Helper()
	job, err := b.GitHub.AssignJobToAny(Repo, []string{b.Label}, spec)
	if err != nil {
		b.T.Fatalf("cannot assign a job: %v", err)
	}
	return job
}

// WaitJob waits up to two minutes for a job to end.
func (b *Bed) WaitJob(id int64) fakegithub.Job {
	b.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job, err := b.GitHub.WaitJob(ctx, id)
	if err != nil {
		b.T.Fatalf("job %d did not finish: %v", id, err)
	}
	return job
}

// QueueJob queues a workflow job asking for the bed's label, as a push
// does: a scale set with the label, or an idle runner with it, takes it.
func (b *Bed) QueueJob(spec fakegithub.JobSpec) fakegithub.Job {
	b.T.Helper()
	job, err := b.GitHub.QueueJob(Repo, []string{b.Label}, spec)
	if err != nil {
		b.T.Fatalf("cannot queue a job: %v", err)
	}
	return job
}

// Instances are the unit's runner instances in LXD (not its image
// builders), sorted.
func (b *Bed) Instances() []string {
	b.T.Helper()
	_, instances, _ := b.State()
	return instances
}

// RunnerImage is the LXD alias of the unit's runner image ("" if none
// yet), which a raw launch compares with.
func (b *Bed) RunnerImage() string {
	b.T.Helper()
	aliases, err := b.LXD.GetImageAliases()
	if err != nil {
		b.T.Fatalf("cannot list LXD image aliases: %v", err)
	}
	for _, a := range aliases {
		if strings.HasPrefix(a.Name, b.Prefix+"-image-") {
			return a.Name
		}
	}
	return ""
}

// ConfigPath is the manager's config file.
func (b *Bed) ConfigPath() string { return filepath.Join(b.Unit.StateDir(), "config.yaml") }

// ManagerPID finds the running manager of this unit, or 0.
func (b *Bed) ManagerPID() int { return b.Unit.ManagerPID() }

// Socket is the manager's unix socket.
func (b *Bed) Socket() string { return filepath.Join(b.Unit.StateDir(), api.SocketName) }

// Metrics is the manager's GET /metrics, Prometheus text.
func (b *Bed) Metrics() string {
	b.T.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", b.Socket())
		},
	}}
	resp, err := client.Get("http://manager" + api.PathMetrics)
	if err != nil {
		b.T.Fatalf("cannot read the manager's metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.T.Fatalf("cannot read the manager's metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// Metric is the value of the manager's metric samples that match sample,
// summed, e.g. Metric(`deleted_runners_total{reason="stopped"}`), or 0
// when it has none.
func (b *Bed) Metric(sample string) float64 {
	b.T.Helper()
	return MetricIn(b.Metrics(), sample)
}

// MetricIn is the sum of the samples in Prometheus text of sample's name
// that carry every label sample gives (a name alone sums every series of
// it: deleted_runners_total is every removal, whatever its reason).
func MetricIn(text, sample string) float64 {
	name, labels, _ := strings.Cut(sample, "{")
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		key, value, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		keyName, keyLabels, _ := strings.Cut(key, "{")
		if keyName != name || !containsLabels(keyLabels, labels) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

func containsLabels(have, want string) bool {
	for _, l := range strings.Split(strings.TrimSuffix(want, "}"), ",") {
		if l != "" && !strings.Contains(have, l) {
			return false
		}
	}
	return true
}

// Intersect is the elements of a also in b.
func Intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// HasLabel tells whether a runner carries a label.
func HasLabel(r fakegithub.Runner, name string) bool {
	for _, l := range r.Labels {
		if l.Name == name {
			return true
		}
	}
	return false
}

// WaitFor polls ok every half second for up to limit.
func WaitFor(t testing.TB, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	if !Poll(limit, ok) {
		t.Fatalf("timed out after %v: %s", limit, what)
	}
}

// Poll polls ok every half second for up to limit and tells whether it
// became true.
func Poll(limit time.Duration, ok func() bool) bool {
	deadline := time.After(limit)
	for !ok() {
		select {
		case <-deadline:
			return ok()
		case <-time.After(500 * time.Millisecond):
		}
	}
	return true
}

// Peak samples count every 200 ms until the test or benchmark ends; the
// function returned gives the most seen at once (a failed count is not a
// sample).
func Peak(tb testing.TB, count func() (int, error)) func() int {
	var mu sync.Mutex
	most := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if n, err := count(); err == nil {
				mu.Lock()
				most = max(most, n)
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	tb.Cleanup(func() { cancel(); <-done })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return most
	}
}

// PeakInstances is Peak of the unit's runner instances in LXD that run
// (not stopped): what max-total-virtual-machines caps.
func (b *Bed) PeakInstances(tb testing.TB) func() int {
	return Peak(tb, func() (int, error) {
		all, err := b.LXD.GetInstances(lxdapi.InstanceTypeContainer)
		n := 0
		for _, inst := range all {
			if strings.HasPrefix(inst.Name, b.Prefix+"-") && !strings.Contains(inst.Name, "-img-") && inst.StatusCode != lxdapi.Stopped {
				n++
			}
		}
		return n, err
	})
}
