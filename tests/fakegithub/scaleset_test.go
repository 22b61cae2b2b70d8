package fakegithub_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/actions/scaleset"
	"github.com/actions/scaleset/listener"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// The conformance of the scale-set service: the real client and listener
// of github.com/actions/scaleset, end to end against the fake.

const testOrg = "canonical"

func newScaleSetClient(t *testing.T, srv *fakegithub.Server, scope string) *scaleset.Client {
	t.Helper()
	client, err := scaleset.NewClientWithPersonalAccessToken(scaleset.NewClientWithPersonalAccessTokenConfig{
		GitHubConfigURL:     srv.URL() + "/" + scope,
		PersonalAccessToken: fakegithub.DefaultToken,
		SystemInfo:          scaleset.SystemInfo{System: "fakegithub-test", Subsystem: "conformance"},
	}, scaleset.WithRetryMax(1), scaleset.WithRetryWaitMax(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return client
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createScaleSet makes a scale set in the default group and checks what
// the service echoes.
func createScaleSet(t *testing.T, ctx context.Context, client *scaleset.Client, name string, labels ...string) *scaleset.RunnerScaleSet {
	t.Helper()
	group, err := client.GetRunnerGroupByName(ctx, scaleset.DefaultRunnerGroup)
	if err != nil {
		t.Fatal(err)
	}
	if group.ID != 1 || !group.IsDefault {
		t.Fatalf("default runner group %+v, want id 1", group)
	}
	existing, err := client.GetRunnerScaleSet(ctx, group.ID, name)
	if err != nil || existing != nil {
		t.Fatalf("scale set %s before creation: %+v, %v", name, existing, err)
	}
	want := &scaleset.RunnerScaleSet{
		Name:          name,
		RunnerGroupID: group.ID,
		RunnerSetting: scaleset.RunnerSetting{DisableUpdate: true},
	}
	for _, l := range labels {
		want.Labels = append(want.Labels, scaleset.Label{Name: l})
	}
	created, err := client.CreateRunnerScaleSet(ctx, want)
	if err != nil {
		t.Fatal(err)
	}
	if created.ID == 0 || created.Name != name || created.RunnerGroupName != "Default" || created.Statistics == nil ||
		created.CreatedOn.IsZero() || !created.RunnerSetting.DisableUpdate {
		t.Fatalf("created scale set %+v", created)
	}
	byName, err := client.GetRunnerScaleSet(ctx, group.ID, name)
	if err != nil || byName == nil || byName.ID != created.ID {
		t.Fatalf("scale set by name: %+v, %v", byName, err)
	}
	byID, err := client.GetRunnerScaleSetByID(ctx, created.ID)
	if err != nil || byID == nil || byID.Name != name {
		t.Fatalf("scale set by id: %+v, %v", byID, err)
	}
	return created
}

func labelNames(labels []scaleset.Label) []string {
	var names []string
	for _, l := range labels {
		if l.Type != "System" {
			return append(names, "bad type "+l.Type)
		}
		names = append(names, l.Name)
	}
	return names
}

// testScaler records what the listener hands it.
type testScaler struct {
	mu        sync.Mutex
	desired   []int
	started   []*scaleset.JobStarted
	completed []*scaleset.JobCompleted
	changed   chan struct{}
}

func newTestScaler() *testScaler { return &testScaler{changed: make(chan struct{}, 1000)} }

func (s *testScaler) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *testScaler) HandleJobStarted(ctx context.Context, job *scaleset.JobStarted) error {
	s.mu.Lock()
	s.started = append(s.started, job)
	s.mu.Unlock()
	s.poke()
	return nil
}

func (s *testScaler) HandleJobCompleted(ctx context.Context, job *scaleset.JobCompleted) error {
	s.mu.Lock()
	s.completed = append(s.completed, job)
	s.mu.Unlock()
	s.poke()
	return nil
}

func (s *testScaler) HandleDesiredRunnerCount(ctx context.Context, count int) (int, error) {
	s.mu.Lock()
	s.desired = append(s.desired, count)
	s.mu.Unlock()
	s.poke()
	return count, nil
}

// waitFor waits until cond holds on the scaler's records.
func (s *testScaler) waitFor(t *testing.T, ctx context.Context, what string, cond func(s *testScaler) bool) {
	t.Helper()
	for {
		s.mu.Lock()
		ok := cond(s)
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("waiting for %s: %v; desired %v, %d started, %d completed", what, ctx.Err(), s.desired, len(s.started), len(s.completed))
		}
	}
}

func lastDesired(want int) func(*testScaler) bool {
	return func(s *testScaler) bool { return len(s.desired) > 0 && s.desired[len(s.desired)-1] == want }
}

// runListener runs the real listener on a session until the test ends.
func runListener(t *testing.T, ctx context.Context, session *scaleset.MessageSessionClient, setID, maxRunners int) (*testScaler, <-chan error) {
	t.Helper()
	l, err := listener.New(session, listener.Config{ScaleSetID: setID, MaxRunners: maxRunners})
	if err != nil {
		t.Fatal(err)
	}
	scaler := newTestScaler()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, scaler) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return scaler, done
}

func TestScaleSetListenerEndToEnd(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: time.Second})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set := createScaleSet(t, ctx, client, "linux-0", "linux-0", "jammy")
	if got := labelNames(set.Labels); !slices.Equal(got, []string{"linux-0", "jammy"}) {
		t.Errorf("labels %v", got)
	}

	session, err := client.MessageSessionClient(ctx, set.ID, "unit-0")
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close(context.Background())
	if s := session.Session(); s.Statistics == nil || s.MessageQueueURL == "" || s.RunnerScaleSet == nil || s.RunnerScaleSet.ID != set.ID {
		t.Fatalf("session %+v", s)
	}
	_, err = client.MessageSessionClient(ctx, set.ID, "unit-1")
	if err == nil || !strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "RunnerScaleSetSessionConflictException") {
		t.Fatalf("second session: %v, want a 409 conflict", err)
	}
	sets := srv.ScaleSets(testOrg)
	if len(sets) != 1 || sets[0].SessionOwner != "unit-0" || !slices.Equal(sets[0].Labels, []string{"linux-0", "jammy"}) {
		t.Fatalf("ScaleSets %+v", sets)
	}

	scaler, done := runListener(t, ctx, session, set.ID, 3)
	scaler.waitFor(t, ctx, "the initial desired count", lastDesired(0))

	job, err := srv.QueueJob(testOrg+"/repo", []string{"jammy"}, fakegithub.JobSpec{Name: "build", Command: "echo built", Workflow: "build.yml"})
	if err != nil {
		t.Fatal(err)
	}
	scaler.waitFor(t, ctx, "one assigned job", lastDesired(1))
	if got := srv.ScaleSets(testOrg)[0].Statistics; got.TotalAssignedJobs != 1 || got.TotalRunningJobs != 0 {
		t.Errorf("statistics %+v, want 1 assigned", got)
	}

	jit, err := client.GenerateJitRunnerConfig(ctx, &scaleset.RunnerScaleSetJitRunnerSetting{Name: "runner-1"}, set.ID)
	if err != nil {
		t.Fatal(err)
	}
	if jit.Runner == nil || jit.Runner.Name != "runner-1" || jit.Runner.RunnerScaleSetID != set.ID || jit.EncodedJITConfig == "" {
		t.Fatalf("JIT config %+v", jit)
	}
	if _, err := client.GenerateJitRunnerConfig(ctx, &scaleset.RunnerScaleSetJitRunnerSetting{Name: "runner-1"}, set.ID); !errors.Is(err, scaleset.RunnerExistsError) {
		t.Errorf("a second JIT config of the same name: %v, want RunnerExistsError", err)
	}
	runner, ok := srv.Runner(int64(jit.Runner.ID))
	if !ok || runner.Status != fakegithub.StatusOffline || runner.Scope != testOrg || !runner.Ephemeral {
		t.Fatalf("JIT runner %+v", runner)
	}
	var names []string
	for _, l := range runner.Labels {
		names = append(names, l.Name)
	}
	if !slices.Equal(names, []string{"linux-0", "jammy"}) {
		t.Errorf("JIT runner labels %v, want the scale set's", names)
	}
	if ref, err := client.GetRunnerByName(ctx, "runner-1"); err != nil || ref == nil || ref.ID != jit.Runner.ID {
		t.Errorf("runner by name: %+v, %v", ref, err)
	}

	// The fake runner application runs the job, unchanged.
	path := os.Getenv("PATH")
	dir := installRunner(t, srv, path)
	proc := startScript(t, dir, path, "run.sh", "--jitconfig", jit.EncodedJITConfig)
	scaler.waitFor(t, ctx, "JobStarted", func(s *testScaler) bool { return len(s.started) == 1 })
	scaler.waitFor(t, ctx, "JobCompleted", func(s *testScaler) bool { return len(s.completed) == 1 })
	scaler.waitFor(t, ctx, "no assigned job", lastDesired(0))

	started, completed := scaler.started[0], scaler.completed[0]
	if started.RunnerName != "runner-1" || started.RunnerID != jit.Runner.ID || started.RepositoryName != "repo" ||
		started.OwnerName != testOrg || started.JobDisplayName != "build" || !slices.Equal(started.RequestLabels, []string{"jammy"}) ||
		started.JobWorkflowRef != testOrg+"/repo/.github/workflows/build.yml@refs/heads/main" || started.EventName != "push" ||
		started.QueueTime.IsZero() || started.ScaleSetAssignTime.IsZero() || started.RunnerAssignTime.IsZero() ||
		!started.FinishTime.IsZero() || started.JobID == "" || started.RunnerRequestID == 0 {
		t.Errorf("JobStarted %+v", started)
	}
	if completed.Result != "succeeded" || completed.RunnerName != "runner-1" || completed.FinishTime.IsZero() || completed.JobID != started.JobID {
		t.Errorf("JobCompleted %+v", completed)
	}
	job, err = srv.WaitJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Result != fakegithub.ResultSucceeded || job.Output != "built\n" || job.ScaleSetID != int64(set.ID) || job.RunnerName != "runner-1" ||
		job.StartedAt.Before(job.AssignedAt) || job.AssignedAt.Before(job.QueuedAt) || job.FinishedAt.Before(job.StartedAt) {
		t.Errorf("job %+v", job)
	}
	if code := proc.wait(t, 10*time.Second); code != 0 {
		t.Errorf("run.sh exited %d; output:\n%s", code, proc.output)
	}
	if _, exists := srv.Runner(runner.ID); exists {
		t.Error("the ephemeral runner outlived its job")
	}
	if err := client.RemoveRunner(ctx, int64(runner.ID)); err != nil {
		t.Errorf("removing a runner already gone: %v, want 204", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the listener stopped: %v", err)
	default:
	}
	if got := srv.Count(fakegithub.ScaleSetMessageDelete); got < 3 {
		t.Errorf("%d messages acknowledged, want at least 3 (assigned, started, completed)", got)
	}
}
