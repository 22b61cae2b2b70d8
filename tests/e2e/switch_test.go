package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// `juju refresh --switch` from Canonical's Python charm to this one loses
// nothing. The unit is prepared as the Python charm leaves one: its
// systemd units, timer, cron and logrotate files (under the harness's
// host root), and runners on real LXD named its way, without this charm's
// metadata, registered at GitHub: one idle, one busy with a job. After
// upgrade-charm (the switch): the files are gone, the idle runner is
// removed (its GitHub record, then its instance), the busy one is kept
// until its job ends, then removed, and the status says so meanwhile.
// Another application's runner and files, another model's runner of the
// same name (its record in another repository), and a Python-named record
// without an instance are all left alone.
func TestSwitchFromThePythonCharm(t *testing.T) {
	b := stack.New(t, stack.Options{Name: "swi", Token: token, Label: "swi", Runners: 1})
	id, err := runner.ParseIdentity(b.Unit.Model(), b.Unit.Name)
	if err != nil {
		t.Fatal(err)
	}
	legacy := id.LegacyPrefix() // what the Python charm named the unit's runners with
	otherApp := id.App + "x"
	t.Cleanup(func() {
		lxdtest.DeleteAll(b.LXD, legacy+"-")
		lxdtest.DeleteAll(b.LXD, otherApp+"-")
	})

	// The Python charm's files, for this unit and for another
	// application's unit on the same machine.
	host := b.Unit.HostRoot
	unitFile := func(n string) string { return "etc/systemd/system/github-runner-manager@" + n + ".service" }
	own := strings.ReplaceAll(b.Unit.Name, "/", "-")
	files := map[string]string{
		unitFile(own): "[Service]\nExecStart=github-runner-manager --config-file /var/lib/github-runner-manager/" + own + "/config.yaml --host 127.0.0.1 --port 55555\n",
		"var/lib/github-runner-manager/" + own + "/config.yaml": "github_config:\n  token: " + token + "\n",
		"var/lib/github-runner-manager/" + own + "/http_port":   "55555\n",
		"etc/systemd/system/ghro.reconcile-runners.service": "[Service]\nType=oneshot\nExecStart=/usr/bin/run-one /usr/bin/bash -c '/usr/bin/juju-exec \"" + b.Unit.Name +
			"\" \"JUJU_DISPATCH_PATH=reconcile-runners ./dispatch\" || /usr/bin/juju-run \"" + b.Unit.Name + "\" \"JUJU_DISPATCH_PATH=reconcile-runners ./dispatch\"'\n",
		"etc/systemd/system/ghro.reconcile-runners.timer":              "[Timer]\nUnit=ghro.reconcile-runners.service\nOnUnitInactiveSec=10m\n",
		"var/log/github-runner-manager/" + own + ".log":                "started\n",
		unitFile(otherApp + "-0"):                                      "[Service]\nExecStart=github-runner-manager\n",
		"var/lib/github-runner-manager/" + otherApp + "-0/config.yaml": "github_config: {}\n",
		"etc/logrotate.d/github-runner-manager":                        "/var/log/github-runner-manager/*.log {\ndaily\n}\n",
	}
	for rel, content := range files {
		path := filepath.Join(host, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Its runners: instances without this charm's metadata, records in
	// the unit's repository.
	python := func(name, repo string, busy bool) (fakegithub.Runner, int64) {
		r, err := b.GitHub.AddRunner(repo, fakegithub.RunnerSpec{Name: name, Online: true, Ephemeral: true, Labels: []string{b.Label}})
		if err != nil {
			t.Fatal(err)
		}
		lxdtest.Launch(t, b.LXD, name, lxdtest.BaseImageAlias, nil)
		var job int64
		if busy {
			j, err := b.GitHub.AssignJob(r.ID, fakegithub.JobSpec{Sleep: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			job = j.ID
		}
		return r, job
	}
	idle, _ := python(legacy+"-0123456789abcdef01234567", stack.Repo, false) // MID's naming
	busy, job := python(legacy+"-n-0123456789ab", stack.Repo, true)          // NEW's, with an infix
	// Another model's unit of the same name, registered in another
	// repository; another application's runner, in this repository.
	theirs, _ := python(legacy+"-76543210fedcba9876543210", "canonical/another-repo", false)
	otherAppRunner, _ := python(otherApp+"-0-0123456789abcdef01234567", stack.Repo, false)
	recordOnly, err := b.GitHub.AddRunner(stack.Repo, fakegithub.RunnerSpec{Name: legacy + "-aaaaaaaaaaaaaaaaaaaaaaaa", Online: true, Ephemeral: true})
	if err != nil {
		t.Fatal(err)
	}

	deleted := watchDeletions(t, b)

	// The switch: Juju runs upgrade-charm, then config-changed, in the
	// new charm's directory.
	for _, hook := range []string{"upgrade-charm", "config-changed"} {
		if r := b.Unit.Hook(hook); r.Code != 0 {
			t.Fatalf("%s: exit %d: %s", hook, r.Code, r.Stderr)
		}
	}
	for _, rel := range []string{unitFile(own), "var/lib/github-runner-manager/" + own, "etc/systemd/system/ghro.reconcile-runners.service", "etc/systemd/system/ghro.reconcile-runners.timer"} {
		if _, err := os.Lstat(filepath.Join(host, rel)); err == nil {
			t.Errorf("the Python charm's %s is still there", rel)
		}
	}
	for _, rel := range []string{"var/log/github-runner-manager/" + own + ".log", unitFile(otherApp + "-0"),
		"var/lib/github-runner-manager/" + otherApp + "-0/config.yaml", "etc/logrotate.d/github-runner-manager"} {
		if _, err := os.Lstat(filepath.Join(host, rel)); err != nil {
			t.Errorf("%s, which is not the unit's to remove, is gone: %v", rel, err)
		}
	}

	b.Converge(1)
	if exists(t, b, idle.Name) {
		t.Errorf("the Python charm's idle runner %s is still there", idle.Name)
	}
	if _, ok := b.GitHub.Runner(idle.ID); ok {
		t.Error("the Python charm's idle runner's GitHub record leaked")
	}
	if at, gone := recordGone(b, idle.ID); !gone {
		t.Error("the idle runner's record was not deleted at GitHub")
	} else if deleted(idle.Name).Before(at) {
		t.Errorf("the idle runner's instance went (%s) before its GitHub record (%s)", deleted(idle.Name).Format(time.StampMilli), at.Format(time.StampMilli))
	}
	for range 2 {
		b.Reconcile()
		if !exists(t, b, busy.Name) {
			t.Fatalf("the Python charm's busy runner %s was deleted mid-job", busy.Name)
		}
	}
	if r := b.Unit.Hook("update-status"); r.Code != 0 {
		t.Fatalf("update-status: %s", r.Stderr)
	}
	if s := b.Unit.Status(); s.Status != "maintenance" || !strings.HasPrefix(s.Message, "removing the Python charm's runners: 1 left, 1 busy") {
		t.Errorf("status %+v while the Python charm's busy runner finishes its job", s)
	}

	// The job ends: GitHub drops the ephemeral runner; its instance (as an
	// OpenStack server of the Python charm does) stays up.
	if err := b.GitHub.CompleteJob(job, 0); err != nil {
		t.Fatal(err)
	}
	b.Reconcile()
	if exists(t, b, busy.Name) {
		t.Errorf("the Python charm's runner %s whose job ended is still there", busy.Name)
	}
	for _, d := range b.GitHub.Deletions() {
		if d.RunnerID == busy.ID && d.Status == 204 {
			t.Errorf("the busy runner's record was deleted while busy: %+v", d)
		}
	}
	if r := b.Unit.Hook("update-status"); r.Code != 0 {
		t.Fatalf("update-status: %s", r.Stderr)
	}
	if s := b.Unit.Status(); s.Status != "active" {
		t.Errorf("status %+v once the Python charm's runners are gone", s)
	}

	for _, r := range []fakegithub.Runner{theirs, otherAppRunner} {
		if !exists(t, b, r.Name) {
			t.Errorf("%s, not this unit's, was deleted", r.Name)
		}
		if _, ok := b.GitHub.Runner(r.ID); !ok {
			t.Errorf("the GitHub record of %s, not this unit's, was removed", r.Name)
		}
	}
	if _, ok := b.GitHub.Runner(recordOnly.ID); !ok {
		t.Error("a Python-named GitHub record with no instance here was removed")
	}
}

// recordGone is when GitHub answered a deletion of runner id with 204.
func recordGone(b *stack.Bed, id int64) (time.Time, bool) {
	for _, d := range b.GitHub.Deletions() {
		if d.RunnerID == id && d.Status == 204 {
			return d.At, true
		}
	}
	return time.Time{}, false
}

// watchDeletions follows LXD's lifecycle events until the test ends; the
// function it returns is when an instance was deleted (zero: not seen).
func watchDeletions(t *testing.T, b *stack.Bed) func(name string) time.Time {
	t.Helper()
	listener, err := b.LXD.GetEvents()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(listener.Disconnect)
	var mu sync.Mutex
	at := map[string]time.Time{}
	_, err = listener.AddHandler([]string{api.EventTypeLifecycle}, func(e api.Event) {
		var l api.EventLifecycle
		if json.Unmarshal(e.Metadata, &l) != nil || l.Action != api.EventLifecycleInstanceDeleted {
			return
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(l.Source, "/1.0/instances/"), "?")
		mu.Lock()
		at[name] = time.Now()
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	return func(name string) time.Time {
		mu.Lock()
		defer mu.Unlock()
		return at[name]
	}
}
