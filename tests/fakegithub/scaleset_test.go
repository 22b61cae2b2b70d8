package fakegithub_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
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
	finished := make(chan struct{})
	go func() {
		done <- l.Run(ctx, scaler)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
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

// newSession creates a scale set and a session on it.
func newSession(t *testing.T, ctx context.Context, client *scaleset.Client, name string, labels ...string) (*scaleset.RunnerScaleSet, *scaleset.MessageSessionClient) {
	t.Helper()
	set := createScaleSet(t, ctx, client, name, labels...)
	session, err := client.MessageSessionClient(ctx, set.ID, name+"-owner")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { session.Close(context.Background()) })
	return set, session
}

func jobIDs[M any](messages []M, id func(M) string) []string {
	var ids []string
	for _, m := range messages {
		ids = append(ids, id(m))
	}
	return ids
}

// A backlog comes 50 job messages at a time, each message with the
// statistics of its delivery; a message not deleted comes again, with the
// same id, until it is; lastMessageId skips the ones already seen.
func TestScaleSetQueueBatchesAndRedelivers(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	_, session := newSession(t, ctx, client, "batch")

	// The first poll tells the service the capacity; nothing is queued yet.
	if msg, err := session.GetMessage(ctx, 0, 100); err != nil || msg != nil {
		t.Fatalf("empty queue: %+v, %v, want 202", msg, err)
	}
	for range 120 {
		if _, err := srv.QueueJob(testOrg, []string{"batch"}, fakegithub.JobSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := session.GetMessage(ctx, 0, 100)
	if err != nil || first == nil {
		t.Fatalf("first message: %+v, %v", first, err)
	}
	if n := len(first.JobAssignedMessages); n != 50 {
		t.Errorf("first message carries %d job messages, want 50", n)
	}
	if got := first.Statistics.TotalAssignedJobs; got != 100 {
		t.Errorf("assigned %d with a capacity of 100", got)
	}
	again, err := session.GetMessage(ctx, 0, 100)
	if err != nil || again == nil || again.MessageID != first.MessageID || len(again.JobAssignedMessages) != 50 {
		t.Fatalf("an unacknowledged message came back as %+v, %v", again, err)
	}
	second, err := session.GetMessage(ctx, first.MessageID, 100)
	if err != nil || second == nil || second.MessageID <= first.MessageID || len(second.JobAssignedMessages) != 50 {
		t.Fatalf("after lastMessageId: %+v, %v", second, err)
	}
	if slices.Equal(jobIDs(first.JobAssignedMessages, func(m *scaleset.JobAssigned) string { return m.JobID }),
		jobIDs(second.JobAssignedMessages, func(m *scaleset.JobAssigned) string { return m.JobID })) {
		t.Error("the second message repeats the first's jobs")
	}
	if err := session.DeleteMessage(ctx, first.MessageID); err != nil {
		t.Fatal(err)
	}
	oldest, err := session.GetMessage(ctx, 0, 100)
	if err != nil || oldest == nil || oldest.MessageID != second.MessageID {
		t.Fatalf("after deleting the first, the oldest is %+v, %v; want message %d", oldest, err, second.MessageID)
	}
	if err := session.DeleteMessage(ctx, second.MessageID); err != nil {
		t.Fatal(err)
	}
	if msg, err := session.GetMessage(ctx, second.MessageID, 100); err != nil || msg != nil {
		t.Fatalf("with the backlog over capacity: %+v, %v, want 202", msg, err)
	}

	// A larger capacity lets the service assign the 20 waiting jobs.
	msg, err := session.GetMessage(ctx, second.MessageID, 120)
	if err != nil || msg == nil || len(msg.JobAssignedMessages) != 20 || msg.Statistics.TotalAssignedJobs != 120 {
		t.Fatalf("after raising the capacity: %+v, %v", msg, err)
	}
	if got := srv.ScaleSetMessages(srv.ScaleSets(testOrg)[0].ID); got != 3 {
		t.Errorf("ScaleSetMessages %d, want 3", got)
	}
}

// Sessions: a second one is refused, one nobody polls expires, one that
// expired cannot be refreshed (the listener's poll then fails), and a
// deleted one is gone.
func TestScaleSetSessions(t *testing.T) {
	const expiry = 300 * time.Millisecond
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond, ScaleSetSessionExpiry: expiry})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set := createScaleSet(t, ctx, client, "sessions")

	first, err := client.MessageSessionClient(ctx, set.ID, "crashed")
	if err != nil {
		t.Fatal(err)
	}
	// Polling keeps a session alive past the expiry.
	for deadline := time.Now().Add(2 * expiry); time.Now().Before(deadline); {
		if _, err := first.GetMessage(ctx, 0, 1); err != nil {
			t.Fatalf("a polled session: %v", err)
		}
	}
	if _, err := client.MessageSessionClient(ctx, set.ID, "restarted"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("a second session: %v, want 409", err)
	}
	// The owner crashed: nobody polls, the session expires.
	for srv.ScaleSets(testOrg)[0].SessionOwner != "" {
		select {
		case <-ctx.Done():
			t.Fatal("the unpolled session never expired")
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := first.GetMessage(ctx, 0, 1); err == nil {
		t.Error("an expired session polled without an error")
	}
	if err := first.Close(ctx); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("closing an expired session: %v, want 400 RunnerScaleSetSessionExpiredException", err)
	}
	second, err := client.MessageSessionClient(ctx, set.ID, "restarted")
	if err != nil {
		t.Fatalf("a session after the expiry: %v", err)
	}
	if got := srv.ScaleSets(testOrg)[0].SessionOwner; got != "restarted" {
		t.Errorf("session owner %q", got)
	}

	// ExpireSessions ends it at once; the listener's poll fails.
	_, done := runListener(t, ctx, second, set.ID, 1)
	srv.ExpireSessions()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "refresh") {
			t.Errorf("the listener ended with %v, want a failed refresh", err)
		}
	case <-ctx.Done():
		t.Fatal("the listener kept polling an expired session")
	}

	third, err := client.MessageSessionClient(ctx, set.ID, "third")
	if err != nil {
		t.Fatal(err)
	}
	if err := third.Close(ctx); err != nil {
		t.Fatalf("closing a session: %v", err)
	}
	if got := srv.ScaleSets(testOrg)[0].SessionOwner; got != "" {
		t.Errorf("closed session still owned by %q", got)
	}
}

// GitHub deletes an inactive scale set: a session on it is refused with
// RunnerScaleSetNotFoundException, and its jobs go to another set.
func TestScaleSetDeletedByGitHub(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set, session := newSession(t, ctx, client, "doomed", "doomed", "shared")
	if _, err := session.GetMessage(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	job, _ := srv.QueueJob(testOrg, []string{"shared"}, fakegithub.JobSpec{})
	if got, _ := srv.Job(job.ID); got.ScaleSetID != int64(set.ID) {
		t.Fatalf("job %+v, want it on scale set %d", got, set.ID)
	}

	if err := srv.DeleteScaleSet(int64(set.ID)); err != nil {
		t.Fatal(err)
	}
	_, err := client.MessageSessionClient(ctx, set.ID, "again")
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "RunnerScaleSetNotFoundException") {
		t.Fatalf("a session on a deleted scale set: %v", err)
	}
	if got, err := client.GetRunnerScaleSet(ctx, 1, "doomed"); err != nil || got != nil {
		t.Errorf("the deleted set by name: %+v, %v", got, err)
	}
	if got, _ := srv.Job(job.ID); got.ScaleSetID != 0 || got.State != fakegithub.JobQueued {
		t.Errorf("the deleted set's job %+v, want it waiting again", got)
	}

	other, otherSession := newSession(t, ctx, client, "survivor", "survivor", "shared")
	if _, err := otherSession.GetMessage(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	if got, _ := srv.Job(job.ID); got.ScaleSetID != int64(other.ID) {
		t.Errorf("job %+v, want it on the new scale set %d", got, other.ID)
	}
	if err := client.DeleteRunnerScaleSet(ctx, other.ID); err != nil {
		t.Errorf("DeleteRunnerScaleSet: %v", err)
	}
	if len(srv.ScaleSets("")) != 0 {
		t.Errorf("scale sets left: %+v", srv.ScaleSets(""))
	}
}

// GHES offers jobs (JobAvailable); the listener acquires them and only
// then are they assigned.
func TestScaleSetGHESAcquire(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 200 * time.Millisecond, ScaleSetMode: fakegithub.ScaleSetModeGHES})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set, session := newSession(t, ctx, client, "ghes")
	if _, err := session.GetMessage(ctx, 0, 2); err != nil {
		t.Fatal(err)
	}
	job, _ := srv.QueueJob(testOrg+"/repo", []string{"ghes"}, fakegithub.JobSpec{})
	msg, err := session.GetMessage(ctx, 0, 2)
	if err != nil || msg == nil || len(msg.JobAvailableMessages) != 1 || len(msg.JobAssignedMessages) != 0 {
		t.Fatalf("message %+v, %v, want one JobAvailable", msg, err)
	}
	if msg.Statistics.TotalAvailableJobs != 1 || msg.Statistics.TotalAssignedJobs != 0 {
		t.Errorf("statistics before acquiring %+v", msg.Statistics)
	}
	available := msg.JobAvailableMessages[0]
	if available.AcquireJobURL == "" || available.RunnerRequestID != job.ID || !available.ScaleSetAssignTime.IsZero() {
		t.Errorf("JobAvailable %+v", available)
	}
	if err := session.DeleteMessage(ctx, msg.MessageID); err != nil {
		t.Fatal(err)
	}
	acquired, err := session.AcquireJobs(ctx, []int64{available.RunnerRequestID, 999})
	if err != nil || !slices.Equal(acquired, []int64{job.ID}) {
		t.Fatalf("acquired %v, %v; want only %d", acquired, err, job.ID)
	}
	msg, err = session.GetMessage(ctx, msg.MessageID, 2)
	if err != nil || msg == nil || len(msg.JobAssignedMessages) != 1 || msg.Statistics.TotalAssignedJobs != 1 {
		t.Fatalf("after acquiring: %+v, %v", msg, err)
	}
	session.DeleteMessage(ctx, msg.MessageID)

	// Through the listener: it acquires what is offered.
	session.Close(ctx)
	session, err = client.MessageSessionClient(ctx, set.ID, "listener")
	if err != nil {
		t.Fatal(err)
	}
	scaler, _ := runListener(t, ctx, session, set.ID, 2)
	scaler.waitFor(t, ctx, "the first job", lastDesired(1))
	srv.QueueJob(testOrg+"/repo", []string{"ghes"}, fakegithub.JobSpec{})
	scaler.waitFor(t, ctx, "the acquired second job", lastDesired(2))
	if got := srv.Count(fakegithub.ScaleSetAcquireJobs); got != 2 {
		t.Errorf("%d acquire calls, want 2", got)
	}
}

// GHES versions: before 3.9 no scale sets; before 3.18 one label only.
func TestScaleSetGHESVersions(t *testing.T) {
	ctx := testContext(t, time.Minute)
	old := fakegithub.NewTest(t, fakegithub.Options{GHESVersion: "3.8"})
	if _, err := newScaleSetClient(t, old, testOrg).GetRunnerGroupByName(ctx, "default"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("GHES 3.8: %v, want 404 from runner-registration", err)
	}

	srv := fakegithub.NewTest(t, fakegithub.Options{GHESVersion: "3.17"})
	client := newScaleSetClient(t, srv, testOrg)
	set := createScaleSet(t, ctx, client, "few", "few", "jammy", "large")
	if got := labelNames(set.Labels); !slices.Equal(got, []string{"few"}) {
		t.Errorf("GHES 3.17 kept labels %v, want the name alone", got)
	}

	if _, err := fakegithub.New(fakegithub.Options{GHESVersion: "three"}); err == nil {
		t.Error("accepted an invalid GHES version")
	}
	if _, err := fakegithub.New(fakegithub.Options{ScaleSetMode: "azure"}); err == nil {
		t.Error("accepted an unknown scale-set mode")
	}
}

// A job no runner picks up is canceled and assigned again, three times,
// then ends canceled.
func TestScaleSetReassignsAJobNobodyTakes(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond, ScaleSetAssignTimeout: 50 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	_, session := newSession(t, ctx, client, "slow")
	session.GetMessage(ctx, 0, 1)
	job, _ := srv.QueueJob(testOrg, []string{"slow"}, fakegithub.JobSpec{})
	job, err := srv.WaitJob(ctx, job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Result != fakegithub.ResultCanceled || job.Attempts != 4 {
		t.Errorf("job %+v, want canceled after 4 attempts", job)
	}
	var assigned, canceled int
	var last int
	for {
		msg, err := session.GetMessage(ctx, last, 1)
		if err != nil {
			t.Fatal(err)
		}
		if msg == nil {
			break
		}
		last = msg.MessageID
		session.DeleteMessage(ctx, msg.MessageID)
		assigned += len(msg.JobAssignedMessages)
		for _, c := range msg.JobCompletedMessages {
			if c.Result == "canceled" && c.RunnerName == "" {
				canceled++
			}
		}
		if msg.Statistics.TotalAssignedJobs != 0 {
			t.Errorf("statistics %+v after the job ended", msg.Statistics)
		}
	}
	if assigned != 4 || canceled != 4 {
		t.Errorf("%d JobAssigned and %d canceled JobCompleted, want 4 and 4", assigned, canceled)
	}
}

// Jobs without a matching scale set go to classic runners, or wait for
// one; two scale sets with the same labels share the jobs.
func TestQueueJobPlacement(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond})
	ctx := testContext(t, time.Minute)

	classic, _ := srv.AddRunner(testOrg+"/repo", fakegithub.RunnerSpec{Name: "classic", Labels: []string{"old"}, Online: true})
	job, err := srv.QueueJob(testOrg+"/repo", []string{"self-hosted", "old"}, fakegithub.JobSpec{})
	if err != nil || job.RunnerID != classic.ID || job.AssignedAt.IsZero() {
		t.Fatalf("job %+v, %v; want it on the idle classic runner", job, err)
	}
	waiting, _ := srv.QueueJob(testOrg+"/repo", []string{"old"}, fakegithub.JobSpec{})
	if waiting.RunnerID != 0 || waiting.State != fakegithub.JobQueued {
		t.Fatalf("job %+v, want it waiting", waiting)
	}
	srv.CompleteJob(job.ID, 0)
	second, _ := srv.AddRunner(testOrg+"/repo", fakegithub.RunnerSpec{Name: "second", Labels: []string{"old"}, Online: true})
	if got, _ := srv.Job(waiting.ID); got.RunnerID != classic.ID && got.RunnerID != second.ID {
		t.Errorf("job %+v, want it on a runner that went idle or came", got)
	}

	client := newScaleSetClient(t, srv, testOrg)
	a, sessionA := newSession(t, ctx, client, "unit-a", "unit-a", "shared")
	b, sessionB := newSession(t, ctx, client, "unit-b", "unit-b", "shared")
	sessionA.GetMessage(ctx, 0, 2)
	sessionB.GetMessage(ctx, 0, 2)
	bySet := map[int64]int{}
	for range 4 {
		job, _ := srv.QueueJob(testOrg+"/web", []string{"shared"}, fakegithub.JobSpec{})
		job, _ = srv.Job(job.ID)
		bySet[job.ScaleSetID]++
	}
	if bySet[int64(a.ID)] != 2 || bySet[int64(b.ID)] != 2 {
		t.Errorf("jobs per scale set %v, want 2 each (capacity 2)", bySet)
	}
	extra, _ := srv.QueueJob(testOrg+"/web", []string{"shared"}, fakegithub.JobSpec{})
	if got, _ := srv.Job(extra.ID); got.ScaleSetID != 0 {
		t.Errorf("a job beyond every set's capacity went to %d", got.ScaleSetID)
	}
	// More capacity: the waiting job goes first, then the new one.
	only, _ := srv.QueueJob(testOrg+"/web", []string{"unit-b"}, fakegithub.JobSpec{})
	sessionB.GetMessage(ctx, 0, 4)
	for _, id := range []int64{extra.ID, only.ID} {
		if got, _ := srv.Job(id); got.ScaleSetID != int64(b.ID) {
			t.Errorf("job %d went to %d, want unit-b (%d)", id, got.ScaleSetID, b.ID)
		}
	}
	for _, set := range srv.ScaleSets(testOrg) {
		if want := map[int64]int{int64(a.ID): 2, int64(b.ID): 4}[set.ID]; set.Statistics.TotalAssignedJobs != want {
			t.Errorf("scale set %s: %d assigned, want %d", set.Name, set.Statistics.TotalAssignedJobs, want)
		}
	}
}

// The agents of the service: by id, by name, removal (refused while the
// runner has a job).
func TestScaleSetAgents(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set := createScaleSet(t, ctx, client, "agents")
	jit, err := client.GenerateJitRunnerConfig(ctx, &scaleset.RunnerScaleSetJitRunnerSetting{Name: "agent-1"}, set.ID)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fakegithub.DecodeJITConfig(jit.EncodedJITConfig)
	if err != nil || cfg.RunnerID != int64(jit.Runner.ID) || cfg.RunnerName != "agent-1" || !cfg.Ephemeral || cfg.ServerURL != srv.URL() {
		t.Fatalf("JIT config %+v, %v", cfg, err)
	}
	got, err := client.GetRunner(ctx, jit.Runner.ID)
	if err != nil || got.Name != "agent-1" || got.RunnerScaleSetID != set.ID {
		t.Errorf("GetRunner: %+v, %v", got, err)
	}
	if _, err := client.GetRunner(ctx, 9999); !errors.Is(err, scaleset.RunnerNotFoundError) {
		t.Errorf("GetRunner of a missing runner: %v", err)
	}
	if got, err := client.GetRunnerByName(ctx, "nobody"); err != nil || got != nil {
		t.Errorf("GetRunnerByName of a missing runner: %+v, %v", got, err)
	}
	if err := srv.SetRunnerBusy(int64(jit.Runner.ID), true); err != nil {
		t.Fatal(err)
	}
	if err := client.RemoveRunner(ctx, int64(jit.Runner.ID)); !errors.Is(err, scaleset.JobStillRunningError) {
		t.Errorf("removing a busy runner: %v, want JobStillRunningError", err)
	}
	srv.SetRunnerBusy(int64(jit.Runner.ID), false)
	if err := client.RemoveRunner(ctx, int64(jit.Runner.ID)); err != nil {
		t.Errorf("removing an idle runner: %v", err)
	}
	if len(srv.Runners(testOrg)) != 0 {
		t.Errorf("runners left: %+v", srv.Runners(testOrg))
	}
}

func rawRequest(t *testing.T, method, url, authorization, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, data
}

// The wire, without the client: the bootstrap's shapes, the admin token's
// JWT, the service's routing and its error bodies.
func TestScaleSetWire(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetTokenLifetime: 10 * time.Minute})
	resp, data := request(t, srv, "POST", "/api/v3/orgs/"+testOrg+"/actions/runners/registration-token", fakegithub.DefaultToken, "")
	if resp.StatusCode != 201 {
		t.Fatalf("registration token: %d %s", resp.StatusCode, data)
	}
	regToken := decode[struct{ Token string }](t, data).Token
	body := `{"url":"` + srv.URL() + "/" + testOrg + `","runner_event":"register"}`

	for _, tc := range []struct {
		name, auth, body string
		status           int
	}{
		{"bearer instead of RemoteAuth", "Bearer " + regToken, body, 401},
		{"unknown registration token", "RemoteAuth NOPE", body, 401},
		{"another scope", "RemoteAuth " + regToken, `{"url":"` + srv.URL() + `/other","runner_event":"register"}`, 404},
	} {
		if resp, data := rawRequest(t, "POST", srv.URL()+"/api/v3/actions/runner-registration", tc.auth, tc.body); resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, data, tc.status)
		}
	}
	resp, data = rawRequest(t, "POST", srv.URL()+"/api/v3/actions/runner-registration", "RemoteAuth "+regToken, body)
	if resp.StatusCode != 201 {
		t.Fatalf("runner-registration: %d %s", resp.StatusCode, data)
	}
	admin := decode[struct{ URL, Token string }](t, data)
	if !strings.HasPrefix(admin.URL, srv.URL()+"/") || !strings.HasSuffix(admin.URL, "/") {
		t.Errorf("service URL %q", admin.URL)
	}
	parts := strings.Split(admin.Token, ".")
	if len(parts) != 3 {
		t.Fatalf("admin token is not a JWT: %d parts", len(parts))
	}
	header, _ := base64.RawURLEncoding.DecodeString(parts[0])
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	exp := decode[struct{ Exp int64 }](t, claims).Exp
	if alg := decode[struct{ Alg string }](t, header).Alg; alg != "HS256" {
		t.Errorf("alg %q", alg)
	}
	if left := time.Until(time.Unix(exp, 0)); left < 9*time.Minute || left > 11*time.Minute {
		t.Errorf("admin token expires in %v, want the configured 10m", left)
	}

	bearerAdmin := "Bearer " + admin.Token
	for _, tc := range []struct {
		name, method, path, auth string
		status                   int
		typeName                 string
	}{
		{"no token", "GET", "_apis/runtime/runnerscalesets?api-version=6.0-preview", "", 401, "VssUnauthorizedException"},
		{"the PAT", "GET", "_apis/runtime/runnerscalesets", "Bearer " + fakegithub.DefaultToken, 401, "VssUnauthorizedException"},
		{"groups, slash before the query", "GET", "_apis/runtime/runnergroups/?groupName=Default&api-version=6.0-preview", bearerAdmin, 200, ""},
		{"trailing slash", "GET", "_apis/runtime/runnerscalesets/", bearerAdmin, 200, ""},
		{"missing scale set", "GET", "_apis/runtime/runnerscalesets/99", bearerAdmin, 404, "RunnerScaleSetNotFoundException"},
		{"missing agent", "GET", "_apis/distributedtask/pools/0/agents/99", bearerAdmin, 404, "AgentNotFoundException"},
		{"unknown path", "GET", "_apis/nothing", bearerAdmin, 404, ""},
	} {
		resp, data := rawRequest(t, tc.method, admin.URL+tc.path, tc.auth, "")
		if resp.StatusCode != tc.status {
			t.Errorf("%s: %d %s, want %d", tc.name, resp.StatusCode, data, tc.status)
			continue
		}
		if tc.typeName == "" {
			continue
		}
		got := decode[struct{ TypeName, Message string }](t, data)
		if !strings.Contains(got.TypeName, tc.typeName) || got.Message == "" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: error %s (%s), want typeName %s", tc.name, data, resp.Header.Get("Content-Type"), tc.typeName)
		}
	}
}

// Faults work on the scale-set endpoints, which Counts counts.
func TestScaleSetFaultsAndCounts(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	if err := srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.ScaleSetCreate, Kind: fakegithub.ServerError, Status: 503, Times: 1}); err != nil {
		t.Fatal(err)
	}
	client := newScaleSetClient(t, srv, testOrg)
	set := createScaleSet(t, ctx, client, "faulty")
	if got := srv.Count(fakegithub.ScaleSetCreate); got != 2 {
		t.Errorf("%d create requests, want 2 (a 503, then the retry)", got)
	}
	if got := srv.Count(fakegithub.RunnerRegistration); got != 1 {
		t.Errorf("%d bootstraps, want 1 (the admin token is reused)", got)
	}
	session, err := client.MessageSessionClient(ctx, set.ID, "owner")
	if err != nil {
		t.Fatal(err)
	}
	srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.ScaleSetMessageGet, Kind: fakegithub.ServerError, Times: 2})
	if _, err := session.GetMessage(ctx, 0, 1); err == nil {
		t.Error("a poll through two 500s succeeded with one retry")
	}
	if _, err := session.GetMessage(ctx, 0, 1); err != nil {
		t.Errorf("a poll after the faults: %v", err)
	}
	// A broker incident: 200 with nothing in it.
	if err := srv.InjectFault(fakegithub.Fault{Endpoint: fakegithub.ScaleSetMessageGet, Kind: fakegithub.EmptyResponse, Times: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := session.GetMessage(ctx, 0, 1); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Errorf("an empty 200: %v, want the client's EOF", err)
	}
	counts := srv.Counts()
	for _, key := range []string{fakegithub.ScaleSetRunnerGroups, fakegithub.ScaleSetList, fakegithub.ScaleSetGet, fakegithub.ScaleSetSessionCreate, fakegithub.OrgRegistrationToken} {
		if counts[key] == 0 {
			t.Errorf("no count for %s in %v", key, counts)
		}
	}
	if got := counts[fakegithub.ScaleSetMessageGet]; got != 4 {
		t.Errorf("%d polls counted, want 4", got)
	}
	if !slices.Contains(fakegithub.ScaleSetEndpoints(), fakegithub.ScaleSetJITConfig) || slices.Contains(fakegithub.Endpoints(), fakegithub.ScaleSetJITConfig) {
		t.Error("the scale-set endpoints are not listed apart from the REST ones")
	}
	if err := srv.InjectFault(fakegithub.Fault{Endpoint: "GET /_apis/nothing", Kind: fakegithub.ServerError}); err == nil {
		t.Error("a fault on an unknown endpoint was armed")
	}
}

// The HTTP controls and Remote, for tests in another process.
func TestScaleSetRemote(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	remote := fakegithub.NewRemote(srv.URL())
	client := newScaleSetClient(t, srv, testOrg)
	set, session := newSession(t, ctx, client, "remote")
	session.GetMessage(ctx, 0, 1)

	job, err := remote.QueueJob(ctx, testOrg+"/repo", []string{"remote"}, fakegithub.JobSpec{Name: "r", Workflow: "w.yml", Event: "pull_request", Sleep: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if job.ScaleSetID != int64(set.ID) || job.Workflow != "w.yml" || job.Repository != testOrg+"/repo" || job.Spec.Event != "pull_request" || job.QueuedAt.IsZero() {
		t.Errorf("queued job %+v", job)
	}
	sets, err := remote.ScaleSets(ctx, testOrg)
	if err != nil || len(sets) != 1 || sets[0].SessionOwner != "remote-owner" || sets[0].Statistics.TotalAssignedJobs != 1 || sets[0].MaxCapacity != 1 {
		t.Fatalf("ScaleSets %+v, %v", sets, err)
	}
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = remote.WaitJobStarted(short, job.ID)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for a job no runner took: %v, want a deadline error", err)
	}
	jit, err := client.GenerateJitRunnerConfig(ctx, &scaleset.RunnerScaleSetJitRunnerSetting{Name: "remote-1"}, set.ID)
	if err != nil {
		t.Fatal(err)
	}
	path := os.Getenv("PATH")
	startScript(t, installRunner(t, srv, path), path, "run.sh", "--jitconfig", jit.EncodedJITConfig)
	started, err := remote.WaitJobStarted(ctx, job.ID)
	if err != nil || started.StartedAt.IsZero() || started.RunnerName != "remote-1" {
		t.Errorf("WaitJobStarted: %+v, %v", started, err)
	}
	msg, err := session.GetMessage(ctx, 0, 1)
	if err != nil || msg == nil || msg.JobAssignedMessages[0].EventName != "pull_request" {
		t.Fatalf("message %+v, %v", msg, err)
	}
	if n, err := remote.ScaleSetMessages(ctx, int64(set.ID)); err != nil || n != 1 {
		t.Errorf("ScaleSetMessages %d, %v", n, err)
	}
	if err := remote.ExpireSessions(ctx); err != nil {
		t.Fatal(err)
	}
	if sets, _ := remote.ScaleSets(ctx, ""); sets[0].SessionOwner != "" {
		t.Errorf("session owner %q after ExpireSessions", sets[0].SessionOwner)
	}
	if err := remote.DeleteScaleSet(ctx, int64(set.ID)); err != nil {
		t.Fatal(err)
	}
	if err := remote.DeleteScaleSet(ctx, int64(set.ID)); !errors.Is(err, fakegithub.ErrNotFound) {
		t.Errorf("deleting twice: %v", err)
	}
	if _, err := remote.QueueJob(ctx, "", []string{"x"}, fakegithub.JobSpec{}); err == nil {
		t.Error("queued a job without a scope")
	}
}

// Among scale sets that can take a job, one with an idle online runner
// gets it; the statistics of a message are those of its delivery.
func TestScaleSetPrefersAnIdleRunner(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 100 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	a, sessionA := newSession(t, ctx, client, "cold", "cold", "any")
	b, sessionB := newSession(t, ctx, client, "warm", "warm", "any")
	sessionA.GetMessage(ctx, 0, 5)
	sessionB.GetMessage(ctx, 0, 5)
	jit, err := client.GenerateJitRunnerConfig(ctx, &scaleset.RunnerScaleSetJitRunnerSetting{Name: "warm-1"}, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ConnectRunner(int64(jit.Runner.ID)); err != nil {
		t.Fatal(err)
	}
	job, _ := srv.QueueJob(testOrg, []string{"any"}, fakegithub.JobSpec{})
	if job, _ = srv.Job(job.ID); job.ScaleSetID != int64(b.ID) {
		t.Errorf("job went to scale set %d, want the one with an idle runner (%d)", job.ScaleSetID, b.ID)
	}
	msg, err := sessionB.GetMessage(ctx, 0, 5)
	if err != nil || msg == nil || msg.Statistics.TotalIdleRunners != 1 || msg.Statistics.TotalRegisteredRunners != 1 {
		t.Fatalf("message %+v, %v", msg, err)
	}
	if err := srv.CompleteJob(job.ID, 1); err != nil {
		t.Fatal(err)
	}
	again, err := sessionB.GetMessage(ctx, 0, 5)
	if err != nil || again == nil || again.MessageID != msg.MessageID {
		t.Fatalf("redelivery %+v, %v", again, err)
	}
	if again.Statistics.TotalAssignedJobs != 0 || msg.Statistics.TotalAssignedJobs != 1 {
		t.Errorf("statistics %+v at the first delivery and %+v after the job ended, want 1 then 0 assigned", msg.Statistics, again.Statistics)
	}

	// Without an idle runner: the most free capacity.
	if err := srv.RemoveRunner(int64(jit.Runner.ID)); err != nil {
		t.Fatal(err)
	}
	sessionA.GetMessage(ctx, 0, 7)
	other, _ := srv.QueueJob(testOrg, []string{"any"}, fakegithub.JobSpec{})
	if other, _ = srv.Job(other.ID); other.ScaleSetID != int64(a.ID) {
		t.Errorf("job went to scale set %d, want the one with more room (%d)", other.ScaleSetID, a.ID)
	}
}

// A GitHub App's client mints an installation token for its bootstrap.
func TestScaleSetGitHubApp(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	ctx := testContext(t, time.Minute)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	client, err := scaleset.NewClientWithGitHubApp(scaleset.ClientWithGitHubAppConfig{
		GitHubConfigURL: srv.URL() + "/" + testOrg,
		GitHubAppAuth:   scaleset.GitHubAppAuth{ClientID: "123", InstallationID: 7, PrivateKey: string(keyPEM)},
	}, scaleset.WithRetryMax(0))
	if err != nil {
		t.Fatal(err)
	}
	createScaleSet(t, ctx, client, "app")
	if got := srv.Count(fakegithub.AppInstallationToken); got != 1 {
		t.Errorf("%d installation tokens minted, want 1", got)
	}
	resp, data := rawRequest(t, "POST", srv.URL()+"/api/v3/app/installations/7/access_tokens", "Bearer not-a-jwt", "")
	if resp.StatusCode != 401 {
		t.Errorf("an installation token for a bad JWT: %d %s", resp.StatusCode, data)
	}
}

// An expired queue token: the client refreshes its session and goes on.
func TestScaleSetQueueTokenRefresh(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 200 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set, session := newSession(t, ctx, client, "refresh")
	before := session.Session()
	scaler, done := runListener(t, ctx, session, set.ID, 1)
	scaler.waitFor(t, ctx, "the initial count", lastDesired(0))
	srv.ExpireQueueTokens()
	srv.QueueJob(testOrg, []string{"refresh"}, fakegithub.JobSpec{})
	scaler.waitFor(t, ctx, "the job, after the refresh", lastDesired(1))
	after := session.Session()
	if after.SessionID != before.SessionID || after.MessageQueueAccessToken == before.MessageQueueAccessToken {
		t.Errorf("session %s token changed %v after the refresh, want the same session and a new token",
			after.SessionID, after.MessageQueueAccessToken != before.MessageQueueAccessToken)
	}
	if got := srv.Count(fakegithub.ScaleSetSessionRefresh); got != 1 {
		t.Errorf("%d refreshes, want 1", got)
	}
	select {
	case err := <-done:
		t.Fatalf("the listener stopped: %v", err)
	default:
	}
}

// A scale-set job whose runner dies mid-job ends failed: JobCompleted.
func TestScaleSetLostJob(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 200 * time.Millisecond, JobLostTimeout: 2 * time.Second})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set, session := newSession(t, ctx, client, "lost")
	scaler, _ := runListener(t, ctx, session, set.ID, 1)
	scaler.waitFor(t, ctx, "the initial count", lastDesired(0))
	job, _ := srv.QueueJob(testOrg, []string{"lost"}, fakegithub.JobSpec{Command: "sleep 60"})
	jit, err := client.GenerateJitRunnerConfig(ctx, &scaleset.RunnerScaleSetJitRunnerSetting{Name: "doomed"}, set.ID)
	if err != nil {
		t.Fatal(err)
	}
	path := os.Getenv("PATH")
	proc := startScript(t, installRunner(t, srv, path), path, "run.sh", "--jitconfig", jit.EncodedJITConfig)
	scaler.waitFor(t, ctx, "JobStarted", func(s *testScaler) bool { return len(s.started) == 1 })
	proc.kill()
	scaler.waitFor(t, ctx, "JobCompleted", func(s *testScaler) bool { return len(s.completed) == 1 })
	if got := scaler.completed[0]; got.Result != "failed" || got.RunnerName != "doomed" {
		t.Errorf("JobCompleted %+v", got)
	}
	if job, _ = srv.Job(job.ID); !job.Lost || job.Result != fakegithub.ResultFailed {
		t.Errorf("job %+v", job)
	}
}

// Runner groups and updates: a scale set moves to an organisation's group
// (PATCH merges what it is given); names are unique within a group.
func TestScaleSetGroupsAndUpdate(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	ctx := testContext(t, time.Minute)
	groupID := srv.AddRunnerGroup(testOrg, "ci-runners")
	client := newScaleSetClient(t, srv, testOrg)
	group, err := client.GetRunnerGroupByName(ctx, "ci-runners")
	if err != nil || group.ID != int(groupID) || group.IsDefault {
		t.Fatalf("group %+v, %v", group, err)
	}
	if _, err := client.GetRunnerGroupByName(ctx, "nope"); err == nil {
		t.Error("found a group that does not exist")
	}
	set := createScaleSet(t, ctx, client, "mover", "mover", "gpu")
	if _, err := client.CreateRunnerScaleSet(ctx, &scaleset.RunnerScaleSet{Name: "mover", RunnerGroupID: 1}); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("a second scale set of the same name in the group: %v, want 409", err)
	}
	moved, err := client.UpdateRunnerScaleSet(ctx, set.ID, &scaleset.RunnerScaleSet{RunnerGroupID: group.ID})
	if err != nil || moved.RunnerGroupID != group.ID || moved.RunnerGroupName != "ci-runners" || moved.Name != "mover" ||
		!slices.Equal(labelNames(moved.Labels), []string{"mover", "gpu"}) {
		t.Fatalf("moved %+v, %v", moved, err)
	}
	if got, err := client.GetRunnerScaleSet(ctx, group.ID, "mover"); err != nil || got == nil || got.ID != set.ID {
		t.Errorf("by name in the new group: %+v, %v", got, err)
	}
	if got, err := client.GetRunnerScaleSet(ctx, 1, "mover"); err != nil || got != nil {
		t.Errorf("by name in the old group: %+v, %v", got, err)
	}
	relabelled, err := client.UpdateRunnerScaleSet(ctx, set.ID, &scaleset.RunnerScaleSet{Labels: []scaleset.Label{{Name: "mover"}, {Name: "cuda"}}})
	if err != nil || !slices.Equal(labelNames(relabelled.Labels), []string{"mover", "cuda"}) || relabelled.RunnerGroupID != group.ID {
		t.Errorf("relabelled %+v, %v", relabelled, err)
	}
	if sets := srv.ScaleSets(testOrg); len(sets) != 1 || sets[0].RunnerGroupName != "ci-runners" {
		t.Errorf("ScaleSets %+v", sets)
	}
	// A repository's scale set lives in the default group.
	repoClient := newScaleSetClient(t, srv, testOrg+"/repo")
	if _, err := repoClient.GetRunnerGroupByName(ctx, "ci-runners"); err == nil {
		t.Error("a repository sees the organisation's group")
	}
	repoSet := createScaleSet(t, ctx, repoClient, "mover")
	if sets := srv.ScaleSets(testOrg + "/repo"); len(sets) != 1 || sets[0].ID != int64(repoSet.ID) {
		t.Errorf("repository scale sets %+v", sets)
	}
	if _, err := repoClient.GetRunnerScaleSetByID(ctx, set.ID); err == nil {
		t.Error("a repository's client read the organisation's scale set")
	}
}

// Two units, two scale sets with the same labels, each its listener: they
// share the jobs, each job run once, by a runner of the set it went to.
func TestScaleSetTwoUnitsShareJobs(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 500 * time.Millisecond})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	type unit struct {
		set    *scaleset.RunnerScaleSet
		scaler *testScaler
	}
	var units []unit
	for _, name := range []string{"pool-0", "pool-1"} {
		set, session := newSession(t, ctx, client, name, "pool", name)
		scaler, _ := runListener(t, ctx, session, set.ID, 2)
		scaler.waitFor(t, ctx, "the initial count", lastDesired(0))
		units = append(units, unit{set, scaler})
	}
	for range 4 {
		if _, err := srv.QueueJob(testOrg+"/repo", []string{"pool"}, fakegithub.JobSpec{Command: "true"}); err != nil {
			t.Fatal(err)
		}
	}
	path := os.Getenv("PATH")
	for _, u := range units {
		u.scaler.waitFor(t, ctx, u.set.Name+" at its capacity", lastDesired(2))
		for i := range 2 {
			jit, err := client.GenerateJitRunnerConfig(ctx, &scaleset.RunnerScaleSetJitRunnerSetting{Name: u.set.Name + "-" + string(rune('a'+i))}, u.set.ID)
			if err != nil {
				t.Fatal(err)
			}
			// Each runner its own machine: the application keeps its
			// configuration in its directory.
			startScript(t, installRunner(t, srv, path), path, "run.sh", "--jitconfig", jit.EncodedJITConfig)
		}
	}
	seen := map[string]string{}
	for _, u := range units {
		u.scaler.waitFor(t, ctx, u.set.Name+"'s two jobs", func(s *testScaler) bool { return len(s.completed) == 2 })
		u.scaler.waitFor(t, ctx, u.set.Name+" idle", lastDesired(0))
		for _, c := range u.scaler.completed {
			if !strings.HasPrefix(c.RunnerName, u.set.Name+"-") || c.Result != "succeeded" {
				t.Errorf("%s: JobCompleted %+v", u.set.Name, c)
			}
			if other, dup := seen[c.JobID]; dup {
				t.Errorf("job %s ran on %s and %s", c.JobID, other, c.RunnerName)
			}
			seen[c.JobID] = c.RunnerName
		}
	}
	if len(seen) != 4 {
		t.Errorf("%d distinct jobs completed, want 4", len(seen))
	}
}

// Tokens past their exp: the client bootstraps again for the admin token
// (less than a minute left) and refreshes its session for the queue's.
func TestScaleSetShortLivedTokens(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{ScaleSetLongPoll: 200 * time.Millisecond, ScaleSetTokenLifetime: time.Second})
	ctx := testContext(t, time.Minute)
	client := newScaleSetClient(t, srv, testOrg)
	set, session := newSession(t, ctx, client, "brief")
	scaler, done := runListener(t, ctx, session, set.ID, 1)
	for srv.Count(fakegithub.ScaleSetSessionRefresh) == 0 {
		select {
		case err := <-done:
			t.Fatalf("the listener stopped: %v", err)
		case <-ctx.Done():
			t.Fatal("the queue token never expired")
		case <-time.After(100 * time.Millisecond):
		}
	}
	srv.QueueJob(testOrg, []string{"brief"}, fakegithub.JobSpec{})
	scaler.waitFor(t, ctx, "the job after a refresh", lastDesired(1))
	if got := srv.Count(fakegithub.RunnerRegistration); got < 3 {
		t.Errorf("%d bootstraps, want one per service call with a token this short", got)
	}
}
