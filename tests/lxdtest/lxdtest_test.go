package lxdtest_test

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// TestBed proves the test bed with the pinned Go client: a container from the base image
// starts, runs commands, takes a 0600 file, reaches an HTTP server on the host's bridge IP,
// powers itself off (LXD reports it Stopped) and is deleted, leaving nothing of its prefix.
func TestBed(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	prefix := lxdtest.Prefix(t, c)
	name := prefix + "bed"

	t0 := time.Now()
	lxdtest.Launch(t, c, name, lxdtest.BaseImageAlias, nil)
	t.Logf("launch + first exec: %v", time.Since(t0))

	execTests := []struct {
		summary string
		cmd     []string
		stdout  string
		stderr  string
		code    int
	}{{
		summary: "stdout and hostname",
		cmd:     []string{"sh", "-c", "echo hello from $(hostname)"},
		stdout:  "hello from " + name + "\n",
	}, {
		summary: "stderr and exit code",
		cmd:     []string{"sh", "-c", "echo oops >&2; exit 3"},
		stderr:  "oops\n",
		code:    3,
	}, {
		summary: "the tools runner scripts need",
		cmd: []string{"sh", "-c", `for c in sh wget tar gzip sha256sum poweroff halt; do
			command -v $c >/dev/null || echo "missing $c"; done
			echo abc | gzip | gzip -d | sha256sum`},
		stdout: "edeaaff3f1774ad2888673770c6d64097e391bc362d7d6fb34982ddf0efd18cb  -\n",
	}, {
		summary: "init is busybox init",
		cmd:     []string{"sh", "-c", "cat /proc/1/comm; readlink /proc/1/exe"},
		stdout:  "init\n/bin/busybox\n",
	}}
	for _, test := range execTests {
		res := lxdtest.Exec(t, c, name, test.cmd...)
		if res.Stdout != test.stdout || res.Stderr != test.stderr || res.ExitCode != test.code {
			t.Errorf("%s: got stdout %q stderr %q code %d, want %q %q %d", test.summary,
				res.Stdout, res.Stderr, res.ExitCode, test.stdout, test.stderr, test.code)
		}
	}

	// A secret file, as the runner's JIT config will be.
	lxdtest.PushFile(t, c, name, "/root/secret", []byte("s3cret\n"), 0o600)
	res := lxdtest.Exec(t, c, name, "sh", "-c", "stat -c '%a %u %g' /root/secret; cat /root/secret")
	if want := "600 0 0\ns3cret\n"; res.Stdout != want || res.ExitCode != 0 {
		t.Errorf("pushed file: got %q (code %d, stderr %q), want %q", res.Stdout, res.ExitCode, res.Stderr, want)
	}

	// HTTP from the container to the host, over the bridge.
	var hits atomic.Int32
	url := lxdtest.ServeOnBridge(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "hello %s", r.URL.Path)
	}))
	ip := lxdtest.WaitIPv4(t, c, name, 30*time.Second)
	t.Logf("container %s has %s; serving %s", name, ip, url)
	res = lxdtest.Exec(t, c, name, "wget", "-q", "-O", "-", url+"/from-container")
	if res.Stdout != "hello /from-container" || res.ExitCode != 0 {
		t.Errorf("wget from container: got %q (code %d, stderr %q)", res.Stdout, res.ExitCode, res.Stderr)
	}
	if hits.Load() != 1 {
		t.Errorf("HTTP server got %d requests, want 1", hits.Load())
	}

	// The container powers itself off, as a runner does after its job. poweroff runs in the
	// background, so that the exec session ends before the container goes down.
	t1 := time.Now()
	if res := lxdtest.Exec(t, c, name, "sh", "-c", "poweroff >/dev/null 2>&1 &"); res.ExitCode != 0 {
		t.Fatalf("poweroff: code %d, stderr %q", res.ExitCode, res.Stderr)
	}
	lxdtest.WaitStatus(t, c, name, api.Stopped, 30*time.Second)
	t.Logf("poweroff -> Stopped: %v", time.Since(t1))

	if err := lxdtest.DeleteInstance(c, name); err != nil {
		t.Fatal(err)
	}
	instances, images, err := lxdtest.Remaining(c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(instances)+len(images) > 0 {
		t.Errorf("left behind: instances %q, images %q", instances, images)
	}
}

// TestBootScript checks each way a runner start script can reach a container and run at
// boot: the user.user-data config key, a file pushed into /etc/boot.d before the first start,
// and a script baked into an image made from the base image. Each script fetches a token
// from the host and powers the container off.
func TestBootScript(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	prefix := lxdtest.Prefix(t, c)

	tests := []struct {
		summary string
		// launch creates and starts the container name whose boot runs script.
		launch func(t *testing.T, name, script string)
	}{{
		summary: "user-data",
		launch: func(t *testing.T, name, script string) {
			lxdtest.Create(t, c, name, lxdtest.BaseImageAlias, map[string]string{"user.user-data": script})
			lxdtest.Start(t, c, name)
		},
	}, {
		summary: "boot.d",
		launch: func(t *testing.T, name, script string) {
			lxdtest.Create(t, c, name, lxdtest.BaseImageAlias, nil)
			lxdtest.PushFile(t, c, name, "/etc/boot.d/50-runner", []byte(script), 0o700)
			lxdtest.Start(t, c, name)
		},
	}, {
		summary: "image",
		launch: func(t *testing.T, name, script string) {
			src, alias := name+"-src", name+"-img"
			lxdtest.Create(t, c, src, lxdtest.BaseImageAlias, nil)
			lxdtest.PushFile(t, c, src, "/etc/boot.d/50-runner", []byte(script), 0o700)
			op, err := c.CreateImage(api.ImagesPost{
				Source:  &api.ImagesPostSource{Type: "instance", Name: src},
				Aliases: []api.ImageAlias{{Name: alias}},
			}, nil)
			if err == nil {
				err = lxdtest.WaitOp(op)
			}
			if err != nil {
				t.Fatalf("cannot publish %s as %s: %v", src, alias, err)
			}
			lxdtest.Create(t, c, name, alias, nil)
			lxdtest.Start(t, c, name)
		},
	}}

	// Requests per test, by path; made before the server starts, so only read concurrently.
	hits := map[string]*atomic.Int32{}
	for _, test := range tests {
		hits["/"+test.summary] = &atomic.Int32{}
	}
	url := lxdtest.ServeOnBridge(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, ok := hits[r.URL.Path]; ok {
			n.Add(1)
		}
		io.WriteString(w, "token-"+filepath.Base(r.URL.Path))
	}))
	for i, test := range tests {
		t.Run(test.summary, func(t *testing.T) {
			t.Parallel()
			name := fmt.Sprintf("%sboot%d", prefix, i)
			script := fmt.Sprintf("#!/bin/sh\nwget -q -O /root/token %s/%s\npoweroff\n", url, test.summary)
			t0 := time.Now()
			test.launch(t, name, script)
			lxdtest.WaitStatus(t, c, name, api.Stopped, 60*time.Second)
			t.Logf("start -> script ran -> Stopped: %v", time.Since(t0))
			if got, want := string(lxdtest.PullFile(t, c, name, "/root/token")), "token-"+test.summary; got != want {
				t.Errorf("token: got %q, want %q", got, want)
			}
			if got := hits["/"+test.summary].Load(); got != 1 {
				t.Errorf("HTTP server got %d requests, want 1", got)
			}
		})
	}
}

// TestPrefixCleanup checks that Prefix's cleanup deletes running and stopped instances and
// prefixed images, and keeps the base image even when a test gave it a prefixed alias.
func TestPrefixCleanup(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	var prefix string
	t.Run("leave-things-behind", func(t *testing.T) {
		prefix = lxdtest.Prefix(t, c)
		lxdtest.Launch(t, c, prefix+"running", lxdtest.BaseImageAlias, nil)
		lxdtest.Create(t, c, prefix+"stopped", lxdtest.BaseImageAlias, nil)
		op, err := c.CreateImage(api.ImagesPost{
			Source:  &api.ImagesPostSource{Type: "instance", Name: prefix + "stopped"},
			Aliases: []api.ImageAlias{{Name: prefix + "img"}},
		}, nil)
		if err == nil {
			err = lxdtest.WaitOp(op)
		}
		if err != nil {
			t.Fatalf("cannot publish image: %v", err)
		}
		base, _, err := c.GetImageAlias(lxdtest.BaseImageAlias)
		if err != nil {
			t.Fatal(err)
		}
		err = c.CreateImageAlias(api.ImageAliasesPost{ImageAliasesEntry: api.ImageAliasesEntry{
			Name: prefix + "base", Target: base.Target}})
		if err != nil {
			t.Fatal(err)
		}
		instances, images, err := lxdtest.Remaining(c, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(instances) != 2 || len(images) != 2 {
			t.Fatalf("before cleanup: instances %q, images %q; want 2 of each", instances, images)
		}
	})
	instances, images, err := lxdtest.Remaining(c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(instances)+len(images) > 0 {
		t.Errorf("after cleanup: instances %q, images %q; want none", instances, images)
	}
	if _, _, err := c.GetImageAlias(lxdtest.BaseImageAlias); err != nil {
		t.Errorf("base image gone after cleanup: %v", err)
	}
}

// fakeTB records Fatal and Skip, which end the calling goroutine as the real ones do.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatal(args ...any) {
	f.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}
func (f *fakeTB) Skip(args ...any) {
	f.skip = fmt.Sprint(args...)
	runtime.Goexit()
}

// TestConnectUnavailable checks that without LXD, Connect fails the test under CI=true and
// skips it otherwise, saying how to set LXD up. It needs no LXD.
func TestConnectUnavailable(t *testing.T) {
	tests := []struct {
		ci        string
		wantFatal bool
	}{
		{ci: "true", wantFatal: true},
		{ci: "", wantFatal: false},
		{ci: "false", wantFatal: false},
	}
	for _, test := range tests {
		t.Setenv("LXD_SOCKET", filepath.Join(t.TempDir(), "no-such.socket"))
		t.Setenv("CI", test.ci)
		f := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			lxdtest.Connect(f)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("CI=%q: Connect did not return within 30 s", test.ci)
		}
		msg := f.skip
		if test.wantFatal {
			msg = f.fatal
		}
		if (f.fatal != "") != test.wantFatal || (f.skip != "") == test.wantFatal {
			t.Errorf("CI=%q: got fatal %q, skip %q; want fatal=%v", test.ci, f.fatal, f.skip, test.wantFatal)
		}
		if !strings.Contains(msg, "tests/lxd/setup.sh") {
			t.Errorf("CI=%q: message %q does not say to run tests/lxd/setup.sh", test.ci, msg)
		}
	}
}
