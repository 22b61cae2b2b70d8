package openstack

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	lxd "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// playUserData launches a container of the test base image with the
// runner user, ubuntu, and runSh as the runner application's run.sh in
// /opt/runner, and plays the user-data of a runner of image with the JIT
// config jit in it, as cloud-init would (as root, once). It returns the
// container's connection and name, and an exec in it.
func playUserData(t *testing.T, suffix, runSh, jit string, image config.RunnerImage) (lxd.InstanceServer, string, func(cmd ...string) lxdtest.ExecResult) {
	t.Helper()
	c := lxdtest.Connect(t)
	name := lxdtest.Prefix(t, c) + suffix
	lxdtest.Launch(t, c, name, lxdtest.BaseImageAlias, nil)
	const dir = "/opt/runner"
	exec := func(cmd ...string) lxdtest.ExecResult {
		t.Helper()
		return lxdtest.Exec(t, c, name, cmd...)
	}
	if res := exec("sh", "-c", "id ubuntu >/dev/null 2>&1 || adduser -D -h /home/ubuntu ubuntu; mkdir -p "+dir); res.ExitCode != 0 {
		t.Fatalf("cannot make the runner user: %+v", res)
	}
	lxdtest.PushFile(t, c, name, dir+"/run.sh", []byte(runSh), 0o755)
	encoded, err := userData(name, jit, "ubuntu", dir, image)
	if err != nil {
		t.Fatal(err)
	}
	script, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatal(err)
	}
	lxdtest.PushFile(t, c, name, "/tmp/user-data", script, 0o700)
	if res := exec("sh", "/tmp/user-data"); res.ExitCode != 0 {
		t.Fatalf("user-data: %+v", res)
	}
	return c, name, exec
}

// The user-data, played as cloud-init would (as root, once) in a real LXD
// container, installs the one start script both clouds use and starts the
// runner with its config in the environment; while the runner runs, the
// JIT config file is gone; when it exits, the instance powers off.
func TestUserDataRunsTheRunnerWithoutItsFile(t *testing.T) {
	t.Parallel()
	// A runner that says what it was given, and runs until told to stop.
	runSh := `#!/bin/sh
{ echo "user=$(id -un)"; echo "config=$ACTIONS_RUNNER_INPUT_JITCONFIG"; } >/tmp/runner-saw
while [ ! -e /tmp/runner-stop ]; do sleep 0.2; done
`
	jit := base64.StdEncoding.EncodeToString([]byte(`{".runner":"secret settings"}`))
	c, name, exec := playUserData(t, "ud", runSh, jit, config.RunnerImage{HTTPProxy: "http://p:3128"})

	var saw string
	for deadline := time.Now().Add(30 * time.Second); ; {
		if res := exec("cat", "/tmp/runner-saw"); res.ExitCode == 0 && strings.Contains(res.Stdout, "config=") {
			saw = res.Stdout
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runner never started; log:\n%s", exec("cat", boot.LogPath).Stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(saw, "user=ubuntu\n") || !strings.Contains(saw, "config="+jit+"\n") {
		t.Errorf("the runner saw:\n%s\nwant user ubuntu and its JIT config", saw)
	}
	if res := exec("test", "-e", boot.JITConfigPath); res.ExitCode == 0 {
		t.Error("the JIT config file is still there while the runner runs")
	}
	if got := string(lxdtest.PullFile(t, c, name, boot.StartScriptPath)); got != boot.StartScript {
		t.Errorf("the user-data installed a start script other than boot's:\n%s", got)
	}
	if log := exec("cat", boot.LogPath).Stdout; strings.Contains(log, jit) {
		t.Errorf("the start script's log holds the JIT config:\n%s", log)
	}
	exec("touch", "/tmp/runner-stop")
	lxdtest.WaitStatus(t, c, name, api.Stopped, time.Minute)
}
