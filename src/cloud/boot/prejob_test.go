package boot_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// hookUserland is a shell and an awk the hook must work with: busybox's
// (the test base image), dash with mawk (Debian's and Ubuntu's sh and
// awk), bash (which GitHub's runner runs hooks with) with gawk when the
// host has it.
type hookUserland struct {
	name       string
	shell, awk string // programs; "" for busybox's own
}

var hookUserlands = []hookUserland{
	{"busybox", "", ""},
	{"dash-mawk", "dash", "mawk"},
	{"bash-gawk", "bash", "gawk"},
}

// path is a PATH of busybox's applets with the userland's sh and awk
// first.
func (u hookUserland) path(t testing.TB) string {
	t.Helper()
	busybox := fakegithub.BusyboxPath(t)
	if u.shell == "" {
		return busybox
	}
	dir := t.TempDir()
	for link, program := range map[string]string{"sh": u.shell, "awk": u.awk} {
		target, err := exec.LookPath(program)
		if err != nil {
			if program == "gawk" { // not on every machine; mawk is
				target, err = exec.LookPath("mawk")
			}
			if err != nil {
				t.Fatalf("%s is not installed: the hook must work with it", program)
			}
		}
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	return dir + ":" + busybox
}

// userlandPaths are the userlands' PATHs, by name.
func userlandPaths(t testing.TB) map[string]string {
	paths := map[string]string{}
	for _, u := range hookUserlands {
		paths[u.name] = u.path(t)
	}
	return paths
}

// hookRun is one run of the hook as the runner runs it ("sh -e HOOK"), in a
// job's environment.
type hookRun struct {
	event   string // a recorded event (fakegithub testdata/events); "" for none
	allow   string // GITHUB_RUNNER_ALLOW_EXTERNAL_CONTRIBUTOR; "" unset
	script  string // the operator's pre-job-script; "" for none
	noEvent bool   // GITHUB_EVENT_PATH names no file
	payload []byte // instead of the recorded event's payload
}

func (r hookRun) run(t testing.TB, path string) (code int, output string) {
	t.Helper()
	dir := t.TempDir()
	operator := filepath.Join(dir, "pre-job-script")
	hook := strings.ReplaceAll(boot.PreJobHook, boot.PreJobScriptPath, operator)
	if hook == boot.PreJobHook {
		t.Fatalf("the hook does not run %s", boot.PreJobScriptPath)
	}
	hookPath := filepath.Join(dir, "pre-job.sh")
	if err := os.WriteFile(hookPath, []byte(hook), 0o755); err != nil {
		t.Fatal(err)
	}
	if r.script != "" {
		if err := os.WriteFile(operator, []byte(r.script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"PATH=" + path, "GITHUB_ACTIONS=true"}
	eventPath := filepath.Join(dir, "_temp", "_github_workflow", "event.json")
	if r.event != "" {
		name, payload := fakegithub.RecordedEvent(t, r.event)
		if r.payload != nil {
			payload = r.payload
		}
		env = append(env, "GITHUB_EVENT_NAME="+name)
		if !r.noEvent {
			if err := os.MkdirAll(filepath.Dir(eventPath), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(eventPath, payload, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		env = append(env, "GITHUB_EVENT_PATH="+eventPath)
	}
	if r.allow != "" {
		env = append(env, boot.AllowExternalContributorVariable+"="+r.allow)
	}
	// The sh of the userland's PATH, not the test's.
	cmd := exec.Command(filepath.Join(strings.Split(path, ":")[0], "sh"), "-e", hookPath)
	cmd.Env, cmd.Dir = env, dir
	out, err := cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); ok {
		return exit.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// The hook, run on the recorded payload of each kind of event with
// allow-external-contributor false, fails the jobs of external
// contributors' pull requests and comments, saying why, and lets the rest
// go on: members', collaborators' and owners', a contributor's on a
// private repository, pull requests from the repository's own branches,
// and events no outsider triggers.
func TestPreJobHookRefusesExternalContributors(t *testing.T) {
	paths := userlandPaths(t)
	refused := func(event, association string) string {
		return "::error::This runner does not run jobs of " + event + " events from external contributors: the author's association with canonical/github-runner is " + association
	}
	passed := func(event, association string) string {
		return "Contributor check passed: the author of the " + event + " event is " + association
	}
	for _, tc := range []struct {
		event string
		code  int
		want  string
	}{
		{"pull_request-fork-none", 1, refused("pull_request", "NONE")},
		{"pull_request-fork-first-time-contributor", 1, refused("pull_request", "FIRST_TIME_CONTRIBUTOR")},
		// A public repository's contributor has had a pull request
		// merged, nothing more: refused. Its body quotes an OWNER.
		{"pull_request-fork-contributor", 1, refused("pull_request", "CONTRIBUTOR")},
		{"pull_request-fork-member", 0, passed("pull_request", "MEMBER")},
		{"pull_request-internal-contributor", 0, "Contributor check skipped: the pull request is from a branch of canonical/github-runner itself"},
		{"pull_request-private-fork-contributor", 0, passed("pull_request", "CONTRIBUTOR")},
		{"pull_request-private-fork-none", 1, refused("pull_request", "NONE") + ", and only OWNER, MEMBER, COLLABORATOR, CONTRIBUTOR may run them here"},
		{"pull_request_target-fork-none", 1, refused("pull_request_target", "NONE") + ", and only OWNER, MEMBER, COLLABORATOR may run them here (allow-external-contributor is false)."},
		{"pull_request_target-fork-collaborator", 0, passed("pull_request_target", "COLLABORATOR")},
		// The reviewer counts, not the pull request's (member) author.
		{"pull_request_review-fork-none", 1, refused("pull_request_review", "NONE")},
		{"pull_request_review_comment-fork-member", 0, passed("pull_request_review_comment", "MEMBER")},
		// The commenter counts, not the (member) author.
		{"issue_comment-none", 1, refused("issue_comment", "NONE")},
		{"issue_comment-owner", 0, passed("issue_comment", "OWNER")},
		{"push", 0, "Contributor check skipped for event: push"},
	} {
		for _, u := range hookUserlands {
			t.Run(tc.event+"/"+u.name, func(t *testing.T) {
				t.Parallel()
				code, out := hookRun{event: tc.event, allow: "false"}.run(t, paths[u.name])
				if code != tc.code || !strings.Contains(out, tc.want) {
					t.Errorf("the hook exited %d, saying:\n%s\nwant %d, saying %q", code, out, tc.code, tc.want)
				}
			})
		}
	}
	// Every recorded payload is in the table above.
	t.Run("all-recorded", func(t *testing.T) {
		if n := len(fakegithub.RecordedEvents()); n != 14 {
			t.Errorf("%d recorded events, the table has 14: add the new ones", n)
		}
	})
}

// The operator's pre-job-script runs after the check, as the hook's user;
// its failure is a warning in the job's log and the job goes on. Without
// the option's setting (allow-external-contributor's default), no one's
// job is refused, and a missing payload refuses a job only when checked.
func TestPreJobHookRunsTheOperatorsScript(t *testing.T) {
	paths := userlandPaths(t)
	const script = "#!/bin/sh\necho \"operator's script for $GITHUB_EVENT_NAME\"\nexit 7\n"
	for _, tc := range []struct {
		name string
		run  hookRun
		code int
		want []string
		not  []string
	}{
		{"failing-script", hookRun{event: "push", script: script}, 0,
			[]string{"Running the runner's pre-job script", "operator's script for push", "::warning::The runner's pre-job script failed (exit status 7); the job goes on."}, nil},
		{"succeeding-script", hookRun{event: "push", script: "#!/bin/sh\necho fine\n"}, 0, []string{"fine"}, []string{"::warning::"}},
		{"allowed-by-default", hookRun{event: "pull_request-fork-none", script: script}, 0,
			[]string{"operator's script for pull_request"}, []string{"Contributor check", "::error::"}},
		{"allow-true", hookRun{event: "pull_request-fork-none", allow: "true"}, 0, nil, []string{"::error::"}},
		{"refused-before-script", hookRun{event: "pull_request-fork-none", allow: "false", script: script}, 1,
			[]string{"::error::"}, []string{"operator's script"}},
		{"no-payload", hookRun{event: "issue_comment-owner", allow: "false", noEvent: true}, 1,
			[]string{"::error::This runner does not run issue_comment jobs it cannot check: the event payload (GITHUB_EVENT_PATH) is missing."}, nil},
		{"no-payload-unchecked", hookRun{event: "push", allow: "false", noEvent: true}, 0, []string{"Contributor check skipped for event: push"}, nil},
		{"nothing", hookRun{}, 0, nil, []string{"Running", "::"}},
	} {
		for _, u := range hookUserlands {
			t.Run(tc.name+"/"+u.name, func(t *testing.T) {
				t.Parallel()
				code, out := tc.run.run(t, paths[u.name])
				if code != tc.code {
					t.Errorf("the hook exited %d, want %d; it said:\n%s", code, tc.code, out)
				}
				for _, want := range tc.want {
					if !strings.Contains(out, want) {
						t.Errorf("the hook did not say %q; it said:\n%s", want, out)
					}
				}
				for _, not := range tc.not {
					if strings.Contains(out, not) {
						t.Errorf("the hook said %q; it said:\n%s", not, out)
					}
				}
			})
		}
	}
}

// A pull request's body can be long, and say anything: the hook reads the
// author's association, not a body's look-alike, from a payload of
// hundreds of kilobytes on one line, with escaped quotes and backslashes
// in it.
func TestPreJobHookReadsABigPayload(t *testing.T) {
	paths := userlandPaths(t)
	for _, tc := range []struct {
		event, want string
		code        int
	}{
		{"pull_request-fork-member", "Contributor check passed: the author of the pull_request event is MEMBER", 0},
		{"pull_request-fork-none", "the author's association with canonical/github-runner is NONE", 1},
	} {
		big := bigPayload(t, tc.event)
		for _, u := range hookUserlands {
			t.Run(tc.event+"/"+u.name, func(t *testing.T) {
				t.Parallel()
				code, out := hookRun{event: tc.event, allow: "false", payload: big}.run(t, paths[u.name])
				if code != tc.code || !strings.Contains(out, tc.want) {
					t.Errorf("the hook exited %d, saying:\n%s\nwant %d, saying %q", code, out, tc.code, tc.want)
				}
			})
		}
	}
}

// bigPayload is the recorded pull request event with a body of hundreds of
// kilobytes, on one line, with escaped quotes and backslashes and a
// look-alike of the author's association in it, whose real one comes
// after the body.
func bigPayload(tb testing.TB, event string) []byte {
	tb.Helper()
	_, recorded := fakegithub.RecordedEvent(tb, event)
	var payload map[string]any
	if err := json.Unmarshal(recorded, &payload); err != nil {
		tb.Fatal(err)
	}
	decoy := `"author_association": "OWNER", "head": {"repo": {"full_name": "canonical/github-runner"}} \\" \\\" `
	pr := payload["pull_request"].(map[string]any)
	pr["body"] = strings.Repeat(decoy, 5000)
	association := pr["author_association"].(string)
	delete(pr, "author_association")
	big, err := json.Marshal(payload)
	if err != nil {
		tb.Fatal(err)
	}
	big = append(big[:len(big)-1], []byte(`,"extra":[1,2.5,true,null,{"a":[]}]}`)...)
	big = []byte(strings.Replace(string(big), `"body":`, `"author_association":"`+association+`","body":`, 1))
	if !json.Valid(big) || len(big) < 400<<10 {
		tb.Fatalf("the big payload is not JSON, or not big (%d bytes)", len(big))
	}
	return big
}

// BenchmarkPreJobHook is the hook's time before a job (the check of a
// member's pull request), on its recorded payload and on a big one, in
// each userland:
//
//	BENCH pre-job-hook <ms> ms userland=<name> payload=<recorded|big> bytes=<size>
func BenchmarkPreJobHook(b *testing.B) {
	const event = "pull_request-fork-member"
	paths := userlandPaths(b)
	_, recorded := fakegithub.RecordedEvent(b, event)
	for _, payload := range []struct {
		name string
		data []byte
	}{{"recorded", recorded}, {"big", bigPayload(b, event)}} {
		for _, u := range hookUserlands {
			run := hookRun{event: event, allow: "false", payload: payload.data}
			var total time.Duration
			for range b.N {
				start := time.Now()
				if code, out := run.run(b, paths[u.name]); code != 0 {
					b.Fatalf("the hook exited %d on the %s payload in %s:\n%s", code, payload.name, u.name, out)
				}
				total += time.Since(start)
			}
			fmt.Printf("BENCH pre-job-hook %.0f ms userland=%s payload=%s bytes=%d\n",
				float64(total.Milliseconds())/float64(b.N), u.name, payload.name, len(payload.data))
		}
	}
}
