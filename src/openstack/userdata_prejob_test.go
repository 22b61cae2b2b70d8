package openstack

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// The user-data of a runner with per-job hooks, played as cloud-init
// would in a real LXD container, writes boot's hook and the operator's
// script (root's, 0755; a script holding the here-document's delimiter
// too) and names the hook in the runner's environment; the hook installed
// so, run as the runner user in that environment, refuses a fork's pull
// request by an outsider, and lets a member's run the operator's script.
func TestUserDataInstallsThePreJobHook(t *testing.T) {
	t.Parallel()
	script := "#!/bin/sh\necho \"operator's script as $(id -un)\"\ncat <<'GITHUB_RUNNER_PRE_JOB_SCRIPT'\nGITHUB_RUNNER_PRE_JOB_SCRIPT\nexit 1\n"
	jit := base64.StdEncoding.EncodeToString([]byte(`{".runner":"settings"}`))
	c, name, exec := playUserData(t, "pj", "#!/bin/sh\nwhile [ ! -e /tmp/runner-stop ]; do sleep 0.2; done\n", jit,
		config.RunnerImage{PreJobScript: script, RejectExternalContributors: true})
	defer func() {
		exec("touch", "/tmp/runner-stop")
		lxdtest.WaitStatus(t, c, name, api.Stopped, time.Minute)
	}()

	for path, want := range map[string]string{boot.PreJobHookPath: boot.PreJobHook, boot.PreJobScriptPath: script} {
		if got := string(lxdtest.PullFile(t, c, name, path)); got != want {
			t.Errorf("%s holds:\n%s\nwant:\n%s", path, got, want)
		}
		if res := exec("stat", "-c", "%a %u", path); strings.TrimSpace(res.Stdout) != "755 0" {
			t.Errorf("%s: mode and owner %q, want 755 0 (root's)", path, res.Stdout)
		}
	}
	env := string(lxdtest.PullFile(t, c, name, boot.EnvironmentPath))
	for _, want := range []string{"ACTIONS_RUNNER_HOOK_JOB_STARTED='" + boot.PreJobHookPath + "'\n", boot.AllowExternalContributorVariable + "='false'\n"} {
		if !strings.Contains(env, want) {
			t.Errorf("the environment lacks %q:\n%s", want, env)
		}
	}

	// The hook as the runner application runs it: as the runner user, in
	// the runner's environment, with the job's event.
	for _, test := range []struct {
		event string
		code  int
		want  string
	}{
		{"pull_request-fork-none", 1, "::error::This runner does not run jobs of pull_request events from external contributors"},
		{"pull_request-fork-member", 0, "operator's script as ubuntu\n::warning::The runner's pre-job script failed (exit status 1); the job goes on."},
	} {
		event, payload := fakegithub.RecordedEvent(t, test.event)
		lxdtest.PushFile(t, c, name, "/tmp/event.json", payload, 0o644)
		res := exec("su", "-s", "/bin/sh", "ubuntu", "-c",
			"set -a; . "+boot.EnvironmentPath+"; set +a; GITHUB_EVENT_NAME="+event+" GITHUB_EVENT_PATH=/tmp/event.json sh -e \"$ACTIONS_RUNNER_HOOK_JOB_STARTED\"")
		if res.ExitCode != test.code || !strings.Contains(res.Stdout+res.Stderr, test.want) {
			t.Errorf("%s: the hook exited %d, saying:\n%s%s\nwant %d, saying %q", test.event, res.ExitCode, res.Stdout, res.Stderr, test.code, test.want)
		}
	}
}

// The biggest pre-job-script src/config allows fits in Nova's user-data
// with the hook, the start script and a proxied environment.
func TestUserDataFitsTheBiggestPreJobScript(t *testing.T) {
	script := "#!/bin/sh\n" + strings.Repeat("# a long comment line of the operator's script\n", config.MaxPreJobScript/40)
	script = script[:config.MaxPreJobScript]
	image := config.RunnerImage{PreJobScript: script, RejectExternalContributors: true, HTTPProxy: "http://proxy.example.com:3128",
		HTTPSProxy: "http://proxy.example.com:3128", NoProxy: "10.0.0.0/8,192.168.0.0/16,.internal", DockerhubMirror: "https://mirror.example.com"}
	if problems := image.Problems(); len(problems) != 0 {
		t.Fatalf("the script breaks src/config's rule: %v", problems)
	}
	jit := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("j", 4096)))
	if _, err := userDataWith("r", jit, "ubuntu", DefaultRunnerDir, image, map[string]string{"TMATE_SERVER_HOST": "tmate.example.com"}); err != nil {
		t.Fatal(err)
	}
}
