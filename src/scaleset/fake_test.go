package scaleset

// Tests against the fake GitHub's scale-set service (tests/fakegithub):
// the real client and listener over HTTP, and the fake runner application
// running the jobs.

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	gh "github.com/actions/scaleset"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// fastTiming paces the retries for tests; the defaults wait minutes.
var fastTiming = Timing{
	Retries: -1, Call: 20 * time.Second, Close: 5 * time.Second,
	Conflict: 100 * time.Millisecond, ConflictPatience: 500 * time.Millisecond, ConflictSlow: 200 * time.Millisecond,
	BackoffMin: 50 * time.Millisecond, BackoffMax: 500 * time.Millisecond,
}

func newFakeService(t *testing.T, opts fakegithub.Options) *fakegithub.Server {
	t.Helper()
	if opts.ScaleSetLongPoll == 0 {
		opts.ScaleSetLongPoll = 200 * time.Millisecond
	}
	return fakegithub.NewTest(t, opts)
}

func newFakeSet(t *testing.T, fake *fakegithub.Server, mod ...func(*Config)) *Set {
	t.Helper()
	cfg := Config{APIURL: fake.URL(), Path: "org", Token: fakegithub.DefaultToken, Option: "linux", Labels: []string{"x64", "gpu"},
		Identity: testIdentity, Timing: fastTiming}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// theSet is the one scale set of the fake's org.
func theSet(t *testing.T, fake *fakegithub.Server) fakegithub.ScaleSet {
	t.Helper()
	sets := fake.ScaleSets("org")
	if len(sets) != 1 {
		t.Fatalf("%d scale sets, want 1: %+v", len(sets), sets)
	}
	return sets[0]
}

// eventually polls cond until it holds or the test's patience ends.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFakeEnsureCreatesThenFinds(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	s := newFakeSet(t, fake)
	for range 2 {
		if err := s.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	set := theSet(t, fake)
	if set.Name != s.Name() || !slices.Equal(set.Labels, []string{"linux", "x64", "gpu"}) || set.RunnerGroupID != 1 {
		t.Errorf("scale set %+v", set)
	}
	if n := fake.Count(fakegithub.ScaleSetCreate); n != 1 {
		t.Errorf("%d creates, want 1", n)
	}
	if p := s.Problem(); p != "" {
		t.Errorf("problem %q", p)
	}
}

func TestFakeEnsureInRunnerGroup(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	group := fake.AddRunnerGroup("org", "big")
	s := newFakeSet(t, fake, func(c *Config) { c.Group = "big" })
	if err := s.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if set := theSet(t, fake); set.RunnerGroupID != group {
		t.Errorf("scale set in group %d, want %d", set.RunnerGroupID, group)
	}
}

func TestFakeGHES(t *testing.T) {
	t.Run("3.8 has no scale sets", func(t *testing.T) {
		fake := newFakeService(t, fakegithub.Options{GHESVersion: "3.8"})
		s := newFakeSet(t, fake)
		if err := s.Ensure(context.Background()); err == nil {
			t.Fatal("Ensure succeeded")
		}
		want := "this GitHub Enterprise Server does not support runner scale sets (they need 3.9 or later): unset runner-scale-set to use classic runners"
		if s.Problem() != want {
			t.Errorf("problem %q, want %q", s.Problem(), want)
		}
		// The engine reports a failed create's error: the same words.
		if _, _, err := s.Register(context.Background(), "r-1"); err == nil || err.Error() != want || !errors.Is(err, ErrUnsupported) {
			t.Errorf("Register: %v, want %q (ErrUnsupported)", err, want)
		}
	})
	t.Run("3.17 drops labels", func(t *testing.T) {
		fake := newFakeService(t, fakegithub.Options{GHESVersion: "3.17"})
		s := newFakeSet(t, fake)
		if err := s.Ensure(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Like GHES, the fake keeps the set's name as its one label.
		want := "GitHub Enterprise Server dropped the runner labels linux, x64, gpu of scale set " + s.Name() + ": more than one label on a scale set needs GHES 3.18 or later with the feature flag DistributedTask.AllowRunnerScaleSetCustomLabels (on by default from 3.21); until then jobs reach these runners with runs-on: " + s.Name()
		if s.Problem() != want {
			t.Errorf("problem %q, want %q", s.Problem(), want)
		}
	})
	t.Run("3.18 keeps them", func(t *testing.T) {
		fake := newFakeService(t, fakegithub.Options{GHESVersion: "3.18"})
		s := newFakeSet(t, fake)
		if err := s.Ensure(context.Background()); err != nil || s.Problem() != "" {
			t.Errorf("Ensure: %v, problem %q", err, s.Problem())
		}
	})
}

func TestFakeRegister(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	s := newFakeSet(t, fake)
	id, jit, err := s.Register(context.Background(), "github-runner-abc-2-00000001")
	if err != nil || id == 0 || jit == "" {
		t.Fatalf("Register = %d, %q, %v", id, jit, err)
	}
	if r, ok := fake.Runner(id); !ok || r.Name != "github-runner-abc-2-00000001" {
		t.Fatalf("runner %d: %+v, %v", id, r, ok)
	}
	// The same name again (a create whose answer was lost): the stale
	// registration goes, a new one comes.
	again, _, err := s.Register(context.Background(), "github-runner-abc-2-00000001")
	if err != nil || again == id {
		t.Fatalf("Register again = %d, %v (first %d)", again, err, id)
	}
	if _, ok := fake.Runner(id); ok {
		t.Errorf("stale runner %d kept", id)
	}
}

// recorder is a listener.Scaler recording what it is told.
type recorder struct {
	mu        sync.Mutex
	desired   []int
	started   []string
	completed []string
	results   []string
}

func (r *recorder) HandleDesiredRunnerCount(_ context.Context, count int) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.desired = append(r.desired, count)
	return count, nil
}

func (r *recorder) HandleJobStarted(_ context.Context, j *gh.JobStarted) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, j.RunnerName)
	return nil
}

func (r *recorder) HandleJobCompleted(_ context.Context, j *gh.JobCompleted) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.completed = append(r.completed, j.RunnerName)
	r.results = append(r.results, j.Result)
	return nil
}

func (r *recorder) lastDesired() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.desired) == 0 {
		return -1
	}
	return r.desired[len(r.desired)-1]
}

func (r *recorder) sawCompleted(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.completed, name)
}

// listen runs s.Listen until the returned stop is called, which waits for
// it to return.
func listen(t *testing.T, s *Set, r *recorder) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Listen(ctx, r, nil)
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("Listen did not return within 20s of its context's end")
		}
	}
	t.Cleanup(stop)
	return stop
}

func sessionOwner(fake *fakegithub.Server) string {
	sets := fake.ScaleSets("org")
	if len(sets) != 1 {
		return ""
	}
	return sets[0].SessionOwner
}

// Listen hands the desired counts and the job events of a job run by the
// fake runner application to the scaler, tells GitHub the capacity, and
// closes its session on stop.
func TestFakeListenDemandAndJobs(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	s := newFakeSet(t, fake, func(c *Config) { c.MaxRunners = 3 })
	r := &recorder{}
	stop := listen(t, s, r)
	eventually(t, "the session", func() bool { return sessionOwner(fake) == s.owner })
	eventually(t, "the initial desired count", func() bool { return r.lastDesired() == 0 })

	if _, err := fake.QueueJob("org", []string{"linux", "gpu"}, fakegithub.JobSpec{Sleep: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one assigned job", func() bool { return r.lastDesired() == 1 })
	if set := theSet(t, fake); set.MaxCapacity != 3 {
		t.Errorf("capacity %d, want 3", set.MaxCapacity)
	}
	s.SetMaxRunners(5)
	eventually(t, "the new capacity", func() bool { return theSet(t, fake).MaxCapacity == 5 })

	name := "github-runner-abc-2-0000000a"
	_, jit, err := s.Register(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	runner := runRunner(t, fake, jit)
	eventually(t, "the job's completion", func() bool { return r.sawCompleted(name) })
	r.mu.Lock()
	started, results := slices.Clone(r.started), slices.Clone(r.results)
	r.mu.Unlock()
	if !slices.Equal(started, []string{name}) || !slices.Equal(results, []string{fakegithub.ResultSucceeded}) {
		t.Errorf("started %v, results %v; runner output:\n%s", started, results, runner.output())
	}
	eventually(t, "no assigned job", func() bool { return r.lastDesired() == 0 })

	stop()
	if owner := sessionOwner(fake); owner != "" {
		t.Errorf("session of %q left after stop", owner)
	}
}

// A session a crashed manager left (409) is asked for again until it
// expires; the problem says so meanwhile, and goes once Listen has it.
func TestFakeListenSessionConflict(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{ScaleSetSessionExpiry: 2 * time.Second})
	crashed := newFakeSet(t, fake)
	if err := crashed.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The crashed manager's session: opened, never polled, never closed.
	if _, err := crashed.client.MessageSessionClient(context.Background(), int(crashed.id.Load()), "crashed"); err != nil {
		t.Fatal(err)
	}
	s := newFakeSet(t, fake)
	r := &recorder{}
	listen(t, s, r)
	eventually(t, "the conflict's problem", func() bool { return strings.Contains(s.Problem(), "another listener holds the message session") })
	if owner := sessionOwner(fake); owner != "crashed" {
		t.Fatalf("session owner %q before the expiry", owner)
	}
	eventually(t, "the session after the expiry", func() bool { return sessionOwner(fake) == s.owner })
	eventually(t, "the problem's end", func() bool { return s.Problem() == "" })
}

// Sessions the service ended, and a scale set GitHub deleted, are opened
// and made again.
func TestFakeListenRecovers(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	s := newFakeSet(t, fake)
	r := &recorder{}
	listen(t, s, r)
	eventually(t, "the session", func() bool { return sessionOwner(fake) == s.owner })

	fake.ExpireSessions()
	eventually(t, "the session's end", func() bool { return sessionOwner(fake) == "" })
	eventually(t, "a new session", func() bool { return sessionOwner(fake) == s.owner })

	old := theSet(t, fake).ID
	if err := fake.DeleteScaleSet(old); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the set made again, listened to", func() bool {
		sets := fake.ScaleSets("org")
		return len(sets) == 1 && sets[0].ID != old && sets[0].SessionOwner == s.owner && sets[0].Name == s.Name()
	})
	if _, err := fake.QueueJob("org", []string{"linux"}, fakegithub.JobSpec{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "demand from the new set", func() bool { return r.lastDesired() == 1 })
	if p := s.Problem(); p != "" {
		t.Errorf("problem %q", p)
	}
}

// lockedBuffer is output written by another goroutine or process.
type lockedBuffer struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *lockedBuffer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.Write(p)
}

func (r *lockedBuffer) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// runRunner installs the fake's runner application and starts it with a
// JIT configuration, with busybox's tools, as a runner instance has them.
func runRunner(t *testing.T, fake *fakegithub.Server, jit string) *lockedBuffer {
	t.Helper()
	path := fakegithub.BusyboxPath(t)
	tarball, err := fakegithub.RunnerTarball(fake.RunnerVersion(), "x64")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	archive := filepath.Join(t.TempDir(), "runner.tar.gz")
	if err := os.WriteFile(archive, tarball, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xzf", archive, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("cannot unpack the runner: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(path, "sh"), filepath.Join(dir, "run.sh"), "--jitconfig", jit)
	cmd.Env = []string{"PATH=" + path, "HOME=" + dir, "RUNNER_ALLOW_RUNASROOT=1"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = r, r
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	return r
}

// A broker that keeps failing is the problem once it lasted, and no
// longer once a poll is answered.
func TestFakeListenBrokerOutage(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	s := newFakeSet(t, fake)
	if err := fake.InjectFault(fakegithub.Fault{Endpoint: fakegithub.ScaleSetMessageGet, Kind: fakegithub.ServerError, Status: 503}); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	listen(t, s, r)
	eventually(t, "the outage's problem", func() bool {
		return strings.Contains(s.Problem(), "the listener of runner scale set "+s.Name()+" keeps failing")
	})
	fake.ClearFaults()
	eventually(t, "the problem's end", func() bool { return s.Problem() == "" })
	if _, err := fake.QueueJob("org", []string{"linux"}, fakegithub.JobSpec{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "demand after the outage", func() bool { return r.lastDesired() == 1 })
}

// A create after GitHub deleted the set makes the set again and registers
// the runner in it.
func TestFakeRegisterAfterTheSetWasDeleted(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	s := newFakeSet(t, fake)
	if err := s.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	old := theSet(t, fake).ID
	if err := fake.DeleteScaleSet(old); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Register(context.Background(), "github-runner-abc-2-0000000b"); err != nil {
		t.Fatal(err)
	}
	if set := theSet(t, fake); set.ID == old || set.Statistics.TotalRegisteredRunners != 1 {
		t.Errorf("scale set %+v after the deletion of %d", set, old)
	}
}

// The labels option changed since the set was made: Ensure gives the set
// the new labels.
func TestFakeEnsureUpdatesLabels(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{})
	if err := newFakeSet(t, fake).Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := newFakeSet(t, fake, func(c *Config) { c.Labels = []string{"arm64"} })
	if err := s.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if set := theSet(t, fake); !slices.Equal(set.Labels, []string{"linux", "arm64"}) {
		t.Errorf("labels %v, want [linux arm64]", set.Labels)
	}
}

// The listener's line for every poll stays out of the service's log at
// its default level.
func TestFakeListenLogsQuietly(t *testing.T) {
	fake := newFakeService(t, fakegithub.Options{ScaleSetLongPoll: 50 * time.Millisecond})
	logs := &lockedBuffer{}
	s := newFakeSet(t, fake, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(logs, nil)) })
	r := &recorder{}
	stop := listen(t, s, r)
	eventually(t, "a few polls", func() bool { return fake.Count(fakegithub.ScaleSetMessageGet) >= 3 })
	stop()
	if out := logs.output(); strings.Contains(out, "Getting next message") || !strings.Contains(out, "listening to the runner scale set") {
		t.Errorf("log:\n%s", out)
	}
}
