package lxd

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// Runners on real LXD with allow-external-contributor false and a
// pre-job-script that fails: the runner application runs the hook Create
// installed before each job; a pull request from a fork by an outsider
// (NONE) fails unrun, saying why, before the operator's script; a
// member's runs, after the operator's script, whose failure is a warning
// in the job's log.
func TestRunnersRunThePreJobHook(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	cfg := testConfig(testPrefix(t))
	cfg.Runner = config.RunnerImage{
		RejectExternalContributors: true,
		PreJobScript:               "#!/bin/sh\necho \"pre-job-script ran as $(id -un) for $GITHUB_EVENT_NAME\"\nexit 1",
	}
	c := newCloud(t, cfg)
	buildImage(t, c, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	type created struct {
		name string
		id   int64
	}
	runners := make([]created, 2)
	scope := runner.NewScope(srv.URL(), testRepo)
	var wg sync.WaitGroup
	errs := make([]error, len(runners))
	for i := range runners {
		name := c.cfg.Identity.NewName()
		id, jit := register(t, srv, testRepo, name)
		runners[i] = created{name, id}
		wg.Go(func() {
			errs[i] = c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: id, Scope: scope, JITConfig: jit})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitRunnersOnline(ctx, testRepo, len(runners)); err != nil {
		t.Fatal(err)
	}

	for i, test := range []struct {
		event string
		code  int
		want  []string
		not   []string
	}{
		{"pull_request-fork-none", 1,
			[]string{"::error::This runner does not run jobs of pull_request events from external contributors: the author's association with canonical/github-runner is NONE"},
			[]string{"job ran", "pre-job-script ran"}},
		{"pull_request-fork-member", 0,
			[]string{"Contributor check passed", "pre-job-script ran as ubuntu for pull_request\n",
				"::warning::The runner's pre-job script failed (exit status 1); the job goes on.\n", "job ran\n"},
			nil},
	} {
		job, err := srv.AssignJob(runners[i].id, fakegithub.JobSpec{Command: "echo job ran"}.WithEvent(t, test.event))
		if err != nil {
			t.Fatal(err)
		}
		if job, err = srv.WaitJob(ctx, job.ID); err != nil {
			t.Fatal(err)
		}
		if job.ExitCode != test.code {
			t.Errorf("%s: the job ended %d, want %d; its log:\n%s", test.event, job.ExitCode, test.code, job.Output)
		}
		for _, want := range test.want {
			if !strings.Contains(job.Output, want) {
				t.Errorf("%s: the job's log lacks %q:\n%s", test.event, want, job.Output)
			}
		}
		for _, not := range test.not {
			if strings.Contains(job.Output, not) {
				t.Errorf("%s: the job's log has %q:\n%s", test.event, not, job.Output)
			}
		}
		// Its one job done, pass or fail, the runner goes.
		waitStatus(t, c, runners[i].name, cloud.Stopped, time.Minute)
	}
}

// The hook reads the recorded events alike with a real distribution's
// userland (the Debian test image: dash and mawk, and bash, which GitHub's
// runner runs hooks with), as with busybox's and the host's (src/cloud/boot).
func TestPreJobHookOnDebian(t *testing.T) {
	debian := lxdtest.DebianImage(t)
	c := lxdtest.Connect(t)
	name := lxdtest.Prefix(t, c) + "hook"
	lxdtest.Launch(t, c, name, debian, nil)
	const hook = "/usr/local/bin/pre-job.sh" // the base image has no /etc/github-runner; /tmp is mounted over at boot
	lxdtest.PushFile(t, c, name, hook, []byte(boot.PreJobHook), 0o755)
	userland := lxdtest.Exec(t, c, name, "sh", "-c", "readlink -f $(command -v awk) $(command -v sh) $(command -v bash)")
	t.Logf("the image's awk, sh and bash: %s", strings.Fields(userland.Stdout))
	for _, test := range []struct {
		event string
		code  int
		want  string
	}{
		{"pull_request-fork-none", 1, "the author's association with canonical/github-runner is NONE"},
		{"pull_request-fork-contributor", 1, "the author's association with canonical/github-runner is CONTRIBUTOR"},
		{"pull_request-private-fork-contributor", 0, "Contributor check passed: the author of the pull_request event is CONTRIBUTOR"},
		{"pull_request-internal-contributor", 0, "Contributor check skipped: the pull request is from a branch of canonical/github-runner itself"},
		{"pull_request_review-fork-none", 1, "the author's association with canonical/github-runner is NONE"},
		{"issue_comment-none", 1, "the author's association with canonical/github-runner is NONE"},
		{"issue_comment-owner", 0, "Contributor check passed: the author of the issue_comment event is OWNER"},
		{"push", 0, "Contributor check skipped for event: push"},
	} {
		event, payload := fakegithub.RecordedEvent(t, test.event)
		lxdtest.PushFile(t, c, name, "/root/"+test.event+".json", payload, 0o644)
		for _, shell := range []string{"sh", "bash"} {
			res := lxdtest.Exec(t, c, name, "env", "-i", "PATH=/usr/bin:/bin", "GITHUB_EVENT_NAME="+event, "GITHUB_EVENT_PATH=/root/"+test.event+".json",
				boot.AllowExternalContributorVariable+"=false", shell, "-e", hook)
			if res.ExitCode != test.code || !strings.Contains(res.Stdout, test.want) {
				t.Errorf("%s with %s: the hook exited %d, saying:\n%s%s\nwant %d, saying %q", test.event, shell, res.ExitCode, res.Stdout, res.Stderr, test.code, test.want)
			}
		}
	}
}
