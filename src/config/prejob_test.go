package config

import (
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
)

// A pre-job-script is executed by the hook itself: it needs its shebang,
// and it must fit in the runners' files (OpenStack's user-data above all).
func TestPreJobScriptRule(t *testing.T) {
	for _, test := range []struct {
		name, script, problem string
	}{
		{"none", "", ""},
		{"sh", "#!/bin/sh\necho hi\n", ""},
		{"env", "#! /usr/bin/env python3\nprint('hi')", ""},
		{"at the bound", "#!/bin/sh\n" + strings.Repeat("#", MaxPreJobScript-10), ""},
		{"no shebang", "echo hi", `must start with a shebang line naming its interpreter, such as "#!/bin/bash"`},
		{"relative interpreter", "#!bash\necho hi", "must start with a shebang"},
		{"empty shebang", "#!\necho hi", "must start with a shebang"},
		{"shebang not first", "\n#!/bin/sh", "must start with a shebang"},
		{"over the bound", "#!/bin/sh\n" + strings.Repeat("#", MaxPreJobScript-9), "must be at most 16 KiB, not 16385 bytes"},
		{"NUL", "#!/bin/sh\necho \x00", "must be text (it holds a NUL byte)"},
	} {
		var got string
		for _, p := range (RunnerImage{PreJobScript: test.script}).Problems() {
			if p.Field != "runner.pre-job-script" {
				t.Errorf("%s: a problem with %s: %s", test.name, p.Field, p)
			}
			got = p.Problem
		}
		if test.problem == "" && got != "" || !strings.Contains(got, test.problem) {
			t.Errorf("%s: problem %q, want %q", test.name, got, test.problem)
		}
	}
}

// The runners' environment names the hook only when it has something to
// do, and tells it to refuse external contributors only when the option
// says so; the script itself ends in a newline.
func TestPreJobEnvironment(t *testing.T) {
	hook := "ACTIONS_RUNNER_HOOK_JOB_STARTED='" + boot.PreJobHookPath + "'\n"
	refuse := boot.AllowExternalContributorVariable + "='false'\n"
	for _, test := range []struct {
		name        string
		image       RunnerImage
		hook, check bool
	}{
		{"neither", RunnerImage{HTTPProxy: "http://p:3128"}, false, false},
		{"script", RunnerImage{PreJobScript: "#!/bin/sh\ntrue"}, true, false},
		{"refuse", RunnerImage{RejectExternalContributors: true}, true, true},
		{"both", RunnerImage{PreJobScript: "#!/bin/sh\ntrue", RejectExternalContributors: true}, true, true},
	} {
		env := test.image.EnvironmentFile()
		if strings.Contains(env, hook) != test.hook || strings.Contains(env, refuse) != test.check || test.image.PreJobHook() != test.hook {
			t.Errorf("%s: environment\n%s\nwant the hook %v, the check %v", test.name, env, test.hook, test.check)
		}
	}
	if got := (RunnerImage{PreJobScript: "#!/bin/sh\ntrue"}).PreJobScriptFile(); got != "#!/bin/sh\ntrue\n" {
		t.Errorf("script file %q", got)
	}
	if got := (RunnerImage{}).PreJobScriptFile(); got != "" {
		t.Errorf("no script gives the file %q", got)
	}
}

// The settings survive the file, and an older file, without them, means
// the options' defaults.
func TestPreJobSettingsRoundTrip(t *testing.T) {
	f := validFile()
	f.Runner.PreJobScript, f.Runner.RejectExternalContributors = "#!/bin/sh\necho 'a: b'\n", true
	path := t.TempDir() + "/config.yaml"
	if err := f.Write(path); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Runner.PreJobScript != f.Runner.PreJobScript || !got.Runner.RejectExternalContributors {
		t.Errorf("read back %+v", got.Runner)
	}
}
