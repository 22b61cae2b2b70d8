package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/actions/scaleset"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startBinary runs the command in-process and returns its base URL.
func startBinary(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	urlFile := filepath.Join(t.TempDir(), "url")
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append(args, "-url-file", urlFile, "-debug"), logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("fakegithub failed: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("fakegithub did not stop")
		}
	})
	deadline := time.After(5 * time.Second)
	for {
		if data, err := os.ReadFile(urlFile); err == nil {
			return strings.TrimSpace(string(data)), logs
		}
		select {
		case err := <-done:
			t.Fatalf("fakegithub exited: %v\n%s", err, logs)
		case <-deadline:
			t.Fatalf("no URL file; logs:\n%s", logs)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func get(t *testing.T, url, token string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestBinaryWithRemoteControls(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tokenFile, []byte("# tokens\nfile-secret@canonical/repo\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base, logs := startBinary(t, "-listen", "127.0.0.1:0", "-token", "flag-secret@canonical",
		"-token-file", tokenFile, "-forbidden-token", "weak", "-status-lag", "100ms", "-runner-version", "2.330.0")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, tt := range []struct {
		path, token string
		status      int
	}{
		{"/orgs/canonical/actions/runners", "flag-secret", 200},
		{"/api/v3/repos/canonical/repo/actions/runners", "file-secret", 200},
		{"/repos/canonical/other/actions/runners", "file-secret", 404},
		{"/orgs/canonical/actions/runners", "weak", 403},
		{"/orgs/canonical/actions/runners", "unknown", 401},
	} {
		if got := get(t, base+tt.path, tt.token); got != tt.status {
			t.Errorf("%s with %s: status %d, want %d", tt.path, tt.token, got, tt.status)
		}
	}

	remote := fakegithub.NewRemote(base)
	counts, err := remote.Counts(ctx)
	if err != nil || counts[fakegithub.ListOrgRunners] != 3 || counts[fakegithub.ListRepoRunners] != 2 {
		t.Errorf("counts %v, %v", counts, err)
	}
	if err := remote.ResetCounts(ctx); err != nil {
		t.Fatal(err)
	}

	runners, err := remote.AddRunners(ctx, "canonical", 2, fakegithub.RunnerSpec{Name: "e2e", Labels: []string{"gpu"}})
	if err != nil || len(runners) != 2 {
		t.Fatalf("AddRunners: %v, %v", runners, err)
	}
	if err := remote.ConnectRunner(ctx, runners[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := remote.WaitRunnersOnline(ctx, "canonical", 1); err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	err = remote.WaitRunnersOnline(short, "canonical", 2)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for a runner that never connects: %v, want a deadline error", err)
	}
	if _, err := remote.AssignJob(ctx, runners[1].ID, fakegithub.JobSpec{}); !errors.Is(err, fakegithub.ErrConflict) {
		t.Errorf("assigning a job to an offline runner: %v, want ErrConflict", err)
	}
	job, err := remote.AssignJobToAny(ctx, "canonical", []string{"gpu"}, fakegithub.JobSpec{Command: "true", Sleep: time.Second})
	if err != nil || job.RunnerID != runners[0].ID {
		t.Fatalf("AssignJobToAny: %+v, %v", job, err)
	}
	if err := remote.CompleteJob(ctx, job.ID, 4); err != nil {
		t.Fatal(err)
	}
	if job, err = remote.WaitJob(ctx, job.ID); err != nil || job.State != fakegithub.JobCompleted || job.ExitCode != 4 {
		t.Errorf("WaitJob: %+v, %v", job, err)
	}
	if err := remote.SetRunnerBusy(ctx, runners[1].ID, true); err != nil {
		t.Fatal(err)
	}
	if err := remote.SetRunnerStatus(ctx, runners[1].ID, true); err != nil {
		t.Fatal(err)
	}
	list, err := remote.Runners(ctx, "canonical")
	if err != nil || len(list) != 2 || !list[1].Busy || list[1].Status != "online" {
		t.Errorf("Runners: %+v, %v", list, err)
	}
	if err := remote.RemoveRunner(ctx, 999); !errors.Is(err, fakegithub.ErrNotFound) {
		t.Errorf("removing an unknown runner: %v, want ErrNotFound", err)
	}

	if err := remote.InjectFault(ctx, fakegithub.Fault{Endpoint: fakegithub.ListOrgRunners, Kind: fakegithub.ServerError, Status: 502, Times: 1}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, base+"/orgs/canonical/actions/runners", "flag-secret"); got != 502 {
		t.Errorf("with a fault: status %d, want 502", got)
	}
	if err := remote.InjectFault(ctx, fakegithub.Fault{Kind: fakegithub.ServerError}); err != nil {
		t.Fatal(err)
	}
	if err := remote.ClearFaults(ctx); err != nil {
		t.Fatal(err)
	}
	if got := get(t, base+"/orgs/canonical/actions/runners", "flag-secret"); got != 200 {
		t.Errorf("after ClearFaults: status %d", got)
	}
	if err := remote.SetRunnerVersion(ctx, "2.331.0"); err != nil {
		t.Fatal(err)
	}
	if err := remote.SetChecksumMode(ctx, fakegithub.ChecksumMissing); err != nil {
		t.Fatal(err)
	}
	if err := remote.SetStatusLag(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"flag-secret", "file-secret"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs show the token %s", secret)
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-checksum", "maybe"},
		{"-token", "@canonical"},
		{"-token-file", "/nonexistent"},
		{"-listen", "256.0.0.1:1"},
		{"-scale-set-mode", "azure"},
		{"-ghes-version", "three"},
		{"stray"},
	} {
		var stderr bytes.Buffer
		if err := run(context.Background(), args, &stderr); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// The scale-set flags reach the service: a GHES 3.17 in GHES mode keeps
// one label and offers jobs to acquire.
func TestBinaryScaleSetFlags(t *testing.T) {
	base, _ := startBinary(t, "-listen", "127.0.0.1:0", "-ghes-version", "3.17", "-scale-set-mode", "ghes",
		"-scale-set-long-poll", "100ms", "-scale-set-session-expiry", "-1s", "-scale-set-assign-timeout", "1m")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := scaleset.NewClientWithPersonalAccessToken(scaleset.NewClientWithPersonalAccessTokenConfig{
		GitHubConfigURL: base + "/canonical", PersonalAccessToken: fakegithub.DefaultToken,
	}, scaleset.WithRetryMax(0))
	if err != nil {
		t.Fatal(err)
	}
	set, err := client.CreateRunnerScaleSet(ctx, &scaleset.RunnerScaleSet{Name: "bin", RunnerGroupID: 1,
		Labels: []scaleset.Label{{Name: "bin"}, {Name: "extra"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Labels) != 1 || set.Labels[0].Name != "bin" {
		t.Errorf("labels %+v, want the name alone (GHES 3.17)", set.Labels)
	}
	session, err := client.MessageSessionClient(ctx, set.ID, "bin-owner")
	if err != nil {
		t.Fatal(err)
	}
	defer session.Close(context.Background())
	if msg, err := session.GetMessage(ctx, 0, 1); err != nil || msg != nil {
		t.Fatalf("first poll %+v, %v", msg, err)
	}
	remote := fakegithub.NewRemote(base)
	if _, err := remote.QueueJob(ctx, "canonical/repo", []string{"bin"}, fakegithub.JobSpec{}); err != nil {
		t.Fatal(err)
	}
	msg, err := session.GetMessage(ctx, 0, 1)
	if err != nil || msg == nil || len(msg.JobAvailableMessages) != 1 {
		t.Fatalf("message %+v, %v, want a JobAvailable (GHES mode)", msg, err)
	}
	sets, err := remote.ScaleSets(ctx, "canonical")
	if err != nil || len(sets) != 1 || sets[0].SessionOwner != "bin-owner" || sets[0].Statistics.TotalAvailableJobs != 1 {
		t.Errorf("ScaleSets %+v, %v", sets, err)
	}
}
