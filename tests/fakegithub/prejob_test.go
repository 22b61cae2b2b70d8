package fakegithub_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// Like GitHub's runner, the fake runner application runs the script
// ACTIONS_RUNNER_HOOK_JOB_STARTED names before each job, in the job's
// environment (GITHUB_EVENT_NAME, and the job's event payload at
// GITHUB_EVENT_PATH), its output in the job's log; a hook that exits
// non-zero fails the job unrun.
func TestRunnerApplicationRunsTheJobStartedHook(t *testing.T) {
	const hookScript = `echo "hook: $GITHUB_EVENT_NAME $(basename "$GITHUB_EVENT_PATH") as $RUNNER_NAME"
[ -s "$GITHUB_EVENT_PATH" ] && sed -n 's/^  "action": "\(.*\)",$/hook: action \1/p' "$GITHUB_EVENT_PATH"
exit "${HOOK_EXIT:-0}"
`
	for _, shell := range runnerShells {
		for _, tc := range []struct {
			name string
			exit int
			hook string // "" for hook.sh; otherwise its path under the test's directory
			spec fakegithub.JobSpec
			want string
			code int
		}{
			{"passes", 0, "", fakegithub.JobSpec{Command: "echo job ran"}.WithEvent(t, "pull_request-fork-none"),
				"A job started hook has been configured by the self-hosted runner administrator\nRun '{hook}'\nhook: pull_request event.json as {runner}\nhook: action synchronize\njob ran\n", 0},
			{"no-event", 0, "", fakegithub.JobSpec{Command: "echo job ran"},
				"A job started hook has been configured by the self-hosted runner administrator\nRun '{hook}'\nhook: push event.json as {runner}\njob ran\n", 0},
			{"fails", 3, "", fakegithub.JobSpec{Command: "echo job ran"}.WithEvent(t, "push"),
				"A job started hook has been configured by the self-hosted runner administrator\nRun '{hook}'\nhook: push event.json as {runner}\nError: Process completed with exit code 3.\n", 3},
			{"not-sh", 0, "hook", fakegithub.JobSpec{Command: "echo job ran"},
				"A job started hook has been configured by the self-hosted runner administrator\nRun '{hook}'\nError: the job started hook '{hook}' is not the absolute path of a .sh file\n", 1},
		} {
			t.Run(shell.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				srv := fakegithub.NewTest(t, fakegithub.Options{})
				path := shell.path(t)
				dir := installRunner(t, srv, path)
				hook := filepath.Join(t.TempDir(), "hook.sh")
				if tc.hook != "" {
					hook = filepath.Join(filepath.Dir(hook), tc.hook)
				}
				if err := os.WriteFile(hook, []byte(hookScript), 0o755); err != nil {
					t.Fatal(err)
				}
				name := "hooked-" + shell.name
				id, jitConfig := generateJIT(t, srv, "canonical/repo", name)
				proc := startScriptWith(t, dir, path, []string{"ACTIONS_RUNNER_HOOK_JOB_STARTED=" + hook, fmt.Sprintf("HOOK_EXIT=%d", tc.exit)},
					"run.sh", "--jitconfig", jitConfig)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := srv.WaitRunnersOnline(ctx, "canonical/repo", 1); err != nil {
					t.Fatalf("%v; runner output:\n%s", err, proc.output)
				}
				job, err := srv.AssignJob(id, tc.spec)
				if err != nil {
					t.Fatal(err)
				}
				if job, err = srv.WaitJob(ctx, job.ID); err != nil {
					t.Fatalf("%v; runner output:\n%s", err, proc.output)
				}
				want := strings.NewReplacer("{hook}", hook, "{runner}", name).Replace(tc.want)
				if job.ExitCode != tc.code || job.Output != want {
					t.Errorf("the job ended %d with output:\n%s\nwant %d with:\n%s", job.ExitCode, job.Output, tc.code, want)
				}
			})
		}
	}
}
