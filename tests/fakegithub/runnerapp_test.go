package fakegithub_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

func TestRunnerTarballLayout(t *testing.T) {
	first, err := fakegithub.RunnerTarball("2.300.0", "x64")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := fakegithub.RunnerTarball("2.300.0", "x64")
	if !bytes.Equal(first, again) {
		t.Error("two builds of the same tarball differ")
	}
	arm, _ := fakegithub.RunnerTarball("2.300.0", "arm64")
	if bytes.Equal(first, arm) {
		t.Error("x64 and arm64 tarballs are the same")
	}
	if _, err := fakegithub.RunnerTarball("2.300.0", "ppc64"); err == nil {
		t.Error("built a tarball for an unknown architecture")
	}

	zr, err := gzip.NewReader(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var entries []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, fmt.Sprintf("%s %o", h.Name, h.Mode))
		if h.Name == "./bin/Runner.Listener" {
			content, _ := io.ReadAll(tr)
			if !bytes.Contains(content, []byte("VERSION='2.300.0'")) || !bytes.Contains(content, []byte("ARCH='x64'")) {
				t.Error("Runner.Listener does not carry its version and architecture")
			}
		}
	}
	want := "./ 755|./bin/ 755|./bin/Runner.Listener 755|./config.sh 755|./run.sh 755"
	if got := strings.Join(entries, "|"); got != want {
		t.Errorf("entries\n got %s\nwant %s", got, want)
	}
	if got, want := fakegithub.RunnerFilename("2.300.0", "arm64"), "actions-runner-linux-arm64-2.300.0.tar.gz"; got != want {
		t.Errorf("file name %s, want %s", got, want)
	}
}

type runnerApplication struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	DownloadURL  string `json:"download_url"`
	Filename     string `json:"filename"`
	SHA256       string `json:"sha256_checksum"`
}

func listDownloads(t *testing.T, srv *fakegithub.Server) map[string]runnerApplication {
	t.Helper()
	resp, data := request(t, srv, "GET", "/orgs/o/actions/runners/downloads", fakegithub.DefaultToken, "")
	if resp.StatusCode != 200 {
		t.Fatalf("downloads: status %d", resp.StatusCode)
	}
	apps := make(map[string]runnerApplication)
	for _, app := range decode[[]runnerApplication](t, data) {
		apps[app.OS+"-"+app.Architecture] = app
	}
	return apps
}

func download(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	return data
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestDownloads(t *testing.T) {
	srv := fakegithub.NewTest(t, fakegithub.Options{RunnerVersion: "2.321.0"})
	apps := listDownloads(t, srv)
	for _, arch := range []string{"x64", "arm64"} {
		app, ok := apps["linux-"+arch]
		if !ok {
			t.Fatalf("no linux %s download in %v", arch, apps)
		}
		if app.Filename != "actions-runner-linux-"+arch+"-2.321.0.tar.gz" || !strings.HasSuffix(app.DownloadURL, "/v2.321.0/"+app.Filename) {
			t.Errorf("%s: %+v", arch, app)
		}
		if got := sha256Hex(download(t, app.DownloadURL)); got != app.SHA256 {
			t.Errorf("%s: served tarball has sha256 %s, listed %s", arch, got, app.SHA256)
		}
	}
	// Like github.com, the download URL redirects.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(apps["linux-x64"].DownloadURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("download URL answered %d, want a 302 redirect", resp.StatusCode)
	}

	srv.SetChecksumMode(fakegithub.ChecksumWrong)
	if app := listDownloads(t, srv)["linux-x64"]; app.SHA256 == "" || app.SHA256 == srv.RunnerSHA256("x64") {
		t.Errorf("wrong checksum mode listed %q", app.SHA256)
	}
	srv.SetChecksumMode(fakegithub.ChecksumMissing)
	_, data := request(t, srv, "GET", "/orgs/o/actions/runners/downloads", fakegithub.DefaultToken, "")
	if bytes.Contains(data, []byte("sha256_checksum")) {
		t.Errorf("missing checksum mode sent %s", data)
	}

	oldURL := apps["linux-x64"].DownloadURL
	if err := srv.SetRunnerVersion("2.999.0"); err != nil {
		t.Fatal(err)
	}
	if app := listDownloads(t, srv)["linux-x64"]; !strings.Contains(app.Filename, "2.999.0") {
		t.Errorf("after SetRunnerVersion: %+v", app)
	}
	if resp, err := http.Get(oldURL); err != nil || resp.StatusCode != 404 {
		t.Errorf("the old version is still served: %v %v", resp.StatusCode, err)
	}
}

// runnerShell is a userland the runner application must work in.
type runnerShell struct {
	name string
	// path returns the PATH of the runner's processes; the scripts run
	// with the sh found there.
	path func(t *testing.T) string
}

var runnerShells = []runnerShell{
	{"sh", func(*testing.T) string { return os.Getenv("PATH") }},
	{"busybox", func(t *testing.T) string { return fakegithub.BusyboxPath(t) }},
}

// installRunner downloads the x64 application from the fake, checks it and
// unpacks it with the shell's own tar.
func installRunner(t *testing.T, srv *fakegithub.Server, path string) string {
	t.Helper()
	app := listDownloads(t, srv)["linux-x64"]
	data := download(t, app.DownloadURL)
	if sha256Hex(data) != app.SHA256 {
		t.Fatal("tarball does not match its checksum")
	}
	dir := t.TempDir()
	archive := filepath.Join(t.TempDir(), app.Filename)
	if err := os.WriteFile(archive, data, 0o600); err != nil {
		t.Fatal(err)
	}
	untar := exec.Command("sh", "-c", `tar -xzf "$1" -C "$2"`, "sh", archive, dir)
	untar.Env = []string{"PATH=" + path}
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("cannot unpack %s: %v\n%s", app.Filename, err, out)
	}
	return dir
}

type runnerProcess struct {
	cmd    *exec.Cmd
	output *bytes.Buffer
	done   chan error
}

// startScript runs one of the application's scripts with the sh of path.
func startScript(t *testing.T, dir, path, script string, args ...string) *runnerProcess {
	t.Helper()
	return startScriptWith(t, dir, path, nil, script, args...)
}

// startScriptWith is startScript with env added to the process's.
func startScriptWith(t *testing.T, dir, path string, env []string, script string, args ...string) *runnerProcess {
	t.Helper()
	shell, err := lookPathIn("sh", path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(shell, append([]string{filepath.Join(dir, script)}, args...)...)
	cmd.Env = append([]string{"PATH=" + path, "HOME=" + dir, "RUNNER_ALLOW_RUNASROOT=1"}, env...)
	// A group of its own, so that kill ends the job's processes too, as
	// deleting the runner's machine would.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &runnerProcess{cmd: cmd, output: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.output, p.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		p.kill()
		<-p.done
	})
	return p
}

// kill ends the process and all its children.
func (p *runnerProcess) kill() { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }

// wait returns the exit code of the process.
func (p *runnerProcess) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return exitErr.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		t.Fatalf("the runner did not exit within %v; output:\n%s", timeout, p.output)
		return -1
	}
}

// lookPathIn finds a program in path rather than in the test's PATH.
func lookPathIn(program, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		candidate := filepath.Join(dir, program)
		if info, err := os.Stat(candidate); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return candidate, nil
		}
	}
	return "", fmt.Errorf("cannot find %s in %s", program, path)
}

func generateJIT(t *testing.T, srv *fakegithub.Server, scope, name string) (int64, string) {
	t.Helper()
	path := "/orgs/" + scope + "/actions/runners/generate-jitconfig"
	if strings.Contains(scope, "/") {
		path = "/repos/" + scope + "/actions/runners/generate-jitconfig"
	}
	body := fmt.Sprintf(`{"name":%q,"runner_group_id":1,"labels":["fake"]}`, name)
	resp, data := request(t, srv, "POST", path, fakegithub.DefaultToken, body)
	if resp.StatusCode != 201 {
		t.Fatalf("JIT config: status %d: %s", resp.StatusCode, data)
	}
	got := decode[struct {
		Runner struct {
			ID int64 `json:"id"`
		} `json:"runner"`
		Config string `json:"encoded_jit_config"`
	}](t, data)
	return got.Runner.ID, got.Config
}

func TestRunnerApplicationRunsAJITJob(t *testing.T) {
	for _, shell := range runnerShells {
		t.Run(shell.name, func(t *testing.T) {
			t.Parallel()
			const lag = 300 * time.Millisecond
			srv := fakegithub.NewTest(t, fakegithub.Options{StatusLag: lag})
			path := shell.path(t)
			dir := installRunner(t, srv, path)
			id, jitConfig := generateJIT(t, srv, "canonical/repo", "jit-"+shell.name)

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			started := time.Now()
			proc := startScript(t, dir, path, "run.sh", "--jitconfig", jitConfig)
			if err := srv.WaitRunnersOnline(ctx, "canonical/repo", 1); err != nil {
				t.Fatalf("%v; runner output:\n%s", err, proc.output)
			}
			if elapsed := time.Since(started); elapsed < lag {
				t.Errorf("online after %v, before the status lag of %v", elapsed, lag)
			}
			runner, _ := srv.Runner(id)
			if runner.OS != "linux" || runner.Version != fakegithub.DefaultRunnerVersion || runner.Busy {
				t.Errorf("connected runner %+v", runner)
			}

			job, err := srv.AssignJob(id, fakegithub.JobSpec{
				Name:    "build",
				Command: `echo "hello from $RUNNER_NAME in $(basename "$PWD")"; exit 3`,
				Sleep:   100 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			if runner, _ := srv.Runner(id); !runner.Busy {
				t.Error("a runner with a job is not busy")
			}
			job, err = srv.WaitJob(ctx, job.ID)
			if err != nil {
				t.Fatalf("%v; runner output:\n%s", err, proc.output)
			}
			if job.StartedAt.Before(job.AssignedAt) || job.FinishedAt.Before(job.StartedAt) || job.Result != fakegithub.ResultFailed {
				t.Errorf("job times and result: %+v", job)
			}
			if want := "hello from jit-" + shell.name + " in _work\n"; job.ExitCode != 3 || job.Output != want {
				t.Errorf("job ended with %d and %q, want 3 and %q", job.ExitCode, job.Output, want)
			}
			if code := proc.wait(t, 10*time.Second); code != 0 {
				t.Errorf("run.sh exited %d, want 0; output:\n%s", code, proc.output)
			}
			if _, exists := srv.Runner(id); exists {
				t.Error("GitHub did not remove the ephemeral runner after its job")
			}
			for _, line := range []string{"√ Connected to GitHub", "Listening for Jobs", "Running job: build", "Job build completed with result: Failed"} {
				if !strings.Contains(proc.output.String(), line) {
					t.Errorf("output lacks %q:\n%s", line, proc.output)
				}
			}
			if strings.Contains(proc.output.String(), jitConfig) {
				t.Error("the runner printed its JIT config")
			}
			info, err := os.Stat(filepath.Join(dir, ".credentials"))
			if err != nil || info.Mode().Perm() != 0o600 {
				t.Errorf(".credentials: %v, mode %v, want 0600", err, info.Mode())
			}
		})
	}
}

// With a lost-job timeout, the runner renews its job while it runs: a job
// longer than the timeout runs to its end. A job whose runner dies with
// its processes (its machine deleted) ends Lost after the timeout, and its
// runner, offline and idle, can then be deleted.
func TestRunnerApplicationRenewsItsJobAndALostJobEnds(t *testing.T) {
	for _, shell := range runnerShells {
		t.Run(shell.name, func(t *testing.T) {
			t.Parallel()
			const lost = 3 * time.Second
			srv := fakegithub.NewTest(t, fakegithub.Options{JobLostTimeout: lost})
			path := shell.path(t)
			start := func(name string) (int64, *runnerProcess) {
				id, jitConfig := generateJIT(t, srv, "canonical/repo", name)
				proc := startScript(t, installRunner(t, srv, path), path, "run.sh", "--jitconfig", jitConfig)
				return id, proc
			}
			long, longProc := start("long-" + shell.name)
			doomed, doomedProc := start("doomed-" + shell.name)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := srv.WaitRunnersOnline(ctx, "canonical/repo", 2); err != nil {
				t.Fatalf("%v; output:\n%s\n%s", err, longProc.output, doomedProc.output)
			}

			ran, _ := srv.AssignJob(long, fakegithub.JobSpec{Command: "echo done", Sleep: 2 * lost})
			killed, _ := srv.AssignJob(doomed, fakegithub.JobSpec{Command: "echo never", Sleep: time.Minute})
			state := func(id int64) string {
				job, _ := srv.Job(id)
				return job.State
			}
			deadline := time.Now().Add(10 * time.Second)
			for state(killed.ID) != fakegithub.JobInProgress && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			doomedProc.kill()
			killedAt := time.Now()

			job, err := srv.WaitJob(ctx, ran.ID)
			if err != nil || job.Lost || job.ExitCode != 0 || job.Output != "done\n" {
				t.Errorf("a job longer than the lost timeout: %+v, %v; output:\n%s", job, err, longProc.output)
			}
			job, err = srv.WaitJob(ctx, killed.ID)
			if err != nil || !job.Lost || job.ExitCode == 0 || !strings.Contains(job.Output, "lost communication with the server") {
				t.Errorf("the killed runner's job: %+v, %v", job, err)
			}
			if waited := time.Since(killedAt); waited < lost-time.Second {
				t.Errorf("lost after %v, before the timeout of %v", waited, lost)
			}
			runner, ok := srv.Runner(doomed)
			if !ok || runner.Busy || runner.Status != fakegithub.StatusOffline {
				t.Errorf("the lost job's runner: %+v (exists %v), want offline, idle, kept", runner, ok)
			}
			resp, _ := request(t, srv, "DELETE", fmt.Sprintf("/repos/canonical/repo/actions/runners/%d", doomed), fakegithub.DefaultToken, "")
			if resp.StatusCode != 204 {
				t.Errorf("delete the lost job's runner: status %d", resp.StatusCode)
			}
		})
	}
}

func TestRunnerApplicationExitsWhenDeleted(t *testing.T) {
	for _, shell := range runnerShells {
		t.Run(shell.name, func(t *testing.T) {
			t.Parallel()
			srv := fakegithub.NewTest(t, fakegithub.Options{})
			path := shell.path(t)
			dir := installRunner(t, srv, path)
			id, jitConfig := generateJIT(t, srv, "canonical", "doomed")
			proc := startScript(t, dir, path, "run.sh", "--jitconfig", jitConfig)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := srv.WaitRunnersOnline(ctx, "canonical", 1); err != nil {
				t.Fatalf("%v; output:\n%s", err, proc.output)
			}
			resp, _ := request(t, srv, "DELETE", fmt.Sprintf("/orgs/canonical/actions/runners/%d", id), fakegithub.DefaultToken, "")
			if resp.StatusCode != 204 {
				t.Fatalf("delete: status %d", resp.StatusCode)
			}
			if code := proc.wait(t, 10*time.Second); code != 1 {
				t.Errorf("run.sh exited %d, want 1; output:\n%s", code, proc.output)
			}
			if !strings.Contains(proc.output.String(), "Runner registration has been deleted") {
				t.Errorf("output:\n%s", proc.output)
			}
		})
	}
}

func TestRunnerApplicationConfigureThenRun(t *testing.T) {
	for _, shell := range runnerShells {
		t.Run(shell.name, func(t *testing.T) {
			t.Parallel()
			srv := fakegithub.NewTest(t, fakegithub.Options{})
			path := shell.path(t)
			dir := installRunner(t, srv, path)
			resp, data := request(t, srv, "POST", "/repos/canonical/repo/actions/runners/registration-token", fakegithub.DefaultToken, "")
			if resp.StatusCode != 201 {
				t.Fatalf("registration token: status %d", resp.StatusCode)
			}
			token := decode[struct {
				Token string `json:"token"`
			}](t, data).Token

			configure := startScript(t, dir, path, "config.sh", "--url", srv.URL()+"/canonical/repo", "--token", token,
				"--name", "classic", "--labels", "gpu,jammy", "--ephemeral", "--unattended")
			if code := configure.wait(t, 10*time.Second); code != 0 {
				t.Fatalf("config.sh exited %d:\n%s", code, configure.output)
			}
			runners := srv.Runners("canonical/repo")
			if len(runners) != 1 || runners[0].Name != "classic" || runners[0].Status != "offline" || !runners[0].Ephemeral {
				t.Fatalf("runners after config.sh: %+v", runners)
			}
			if labels, _ := json.Marshal(runners[0].Labels); !strings.Contains(string(labels), `"gpu","type":"custom"`) {
				t.Errorf("labels %s", labels)
			}

			run := startScript(t, dir, path, "run.sh")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := srv.WaitRunnersOnline(ctx, "canonical/repo", 1); err != nil {
				t.Fatalf("%v; output:\n%s", err, run.output)
			}
			job, err := srv.AssignJobToAny("canonical/repo", []string{"self-hosted", "GPU"}, fakegithub.JobSpec{Command: "true"})
			if err != nil {
				t.Fatal(err)
			}
			if job, err = srv.WaitJob(ctx, job.ID); err != nil || job.ExitCode != 0 {
				t.Fatalf("job %+v, %v; output:\n%s", job, err, run.output)
			}
			if code := run.wait(t, 10*time.Second); code != 0 {
				t.Errorf("run.sh exited %d; output:\n%s", code, run.output)
			}
		})
	}
}

func TestConfigureRefusesRootLikeGitHub(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: config.sh only refuses root")
	}
	srv := fakegithub.NewTest(t, fakegithub.Options{})
	dir := installRunner(t, srv, os.Getenv("PATH"))
	cmd := exec.Command("/bin/sh", filepath.Join(dir, "config.sh"), "--url", srv.URL()+"/o/r", "--token", "T")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Must not run with sudo") {
		t.Errorf("config.sh as root: %v\n%s", err, out)
	}
}
