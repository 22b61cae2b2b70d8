package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
)

// MaxPreJobScript bounds the pre-job-script: it travels in every runner's
// files, and on OpenStack in the user-data, which Nova caps at 64 KiB in
// base64 with the start script and the environment beside it.
const MaxPreJobScript = 16 << 10

// shebang is a script's first line naming its interpreter by an absolute
// path ("#!/bin/sh", "#! /usr/bin/env bash"): the hook executes the script
// itself, and the kernel needs it.
var shebang = regexp.MustCompile(`^#![ \t]*/[^ \t\r\n]+`)

func preJobScriptProblem(script string) error {
	switch {
	case script == "":
		return nil
	case len(script) > MaxPreJobScript:
		return fmt.Errorf("must be at most %d KiB, not %d bytes", MaxPreJobScript>>10, len(script))
	case strings.ContainsRune(script, 0):
		return errors.New("must be text (it holds a NUL byte)")
	case !shebang.MatchString(script):
		return errors.New(`must start with a shebang line naming its interpreter, such as "#!/bin/bash"`)
	}
	return nil
}

// PreJobHook tells whether the runners get the job-started hook
// (boot.PreJobHook): a pre-job-script is set, or external contributors'
// jobs are refused. Without either, runners run jobs as they come.
func (r RunnerImage) PreJobHook() bool {
	return r.PreJobScript != "" || r.RejectExternalContributors
}

// PreJobScriptFile is the pre-job-script as the file the hook runs
// (boot.PreJobScriptPath), ending in a newline; "" for none.
func (r RunnerImage) PreJobScriptFile() string {
	if r.PreJobScript == "" || strings.HasSuffix(r.PreJobScript, "\n") {
		return r.PreJobScript
	}
	return r.PreJobScript + "\n"
}

// preJobEnvironment is what the runner's environment holds for the hook:
// the runner application reads ACTIONS_RUNNER_HOOK_JOB_STARTED, and the
// hook its setting. Nothing of it is secret.
func (r RunnerImage) preJobEnvironment(add func(key, value string)) {
	if !r.PreJobHook() {
		return
	}
	add("ACTIONS_RUNNER_HOOK_JOB_STARTED", boot.PreJobHookPath)
	if r.RejectExternalContributors {
		add(boot.AllowExternalContributorVariable, "false")
	}
}
