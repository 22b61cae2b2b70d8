package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/stack"
)

const auditToken = "ghp_AUDIT_SECRET_TOKEN_5eCr3t0nlyInConfig"

// jitRecorder sits between the manager and the fake GitHub and keeps
// every encoded_jit_config GitHub hands out: the secrets to look for.
type jitRecorder struct {
	mu      sync.Mutex
	configs []string
}

func (r *jitRecorder) start(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/generate-jitconfig") || resp.StatusCode != http.StatusCreated {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var jit struct {
			EncodedJITConfig string `json:"encoded_jit_config"`
		}
		if err := json.Unmarshal(body, &jit); err == nil && jit.EncodedJITConfig != "" {
			r.mu.Lock()
			r.configs = append(r.configs, jit.EncodedJITConfig)
			r.mu.Unlock()
		}
		return nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String()
}

func (r *jitRecorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.configs...)
}

// secrets names each secret value, for messages that must not quote them.
type secrets map[string]string

// in returns the names of the secrets text contains.
func (s secrets) in(text string) []string {
	var found []string
	for name, value := range s {
		if strings.Contains(text, value) {
			found = append(found, name)
		}
	}
	return found
}

// TestSecretsAudit runs a whole scenario (deploy, runners registering with
// JIT configs, a job, every action, a config change to GitHub App
// credentials) with a recognisable token, App private key and the JIT
// configs GitHub issued, then looks for them everywhere they must not be:
// statuses, juju-log lines, action results and hook output; the manager's
// logs (Pebble's) and metrics; the command line of every process on the
// machine and inside every runner instance; every runner instance's
// expanded LXD config; and every file under the unit's state directory and
// the charm directory. The token and the key may only be in the manager's
// config file and its record of scopes, mode 0600; a JIT config in no file
// once its runner has read it. About 1 minute.
func TestSecretsAudit(t *testing.T) {
	recorder := &jitRecorder{}
	b := stack.New(t, stack.Options{Name: "aud", Token: auditToken, Label: label, Runners: 2,
		Config: map[string]any{"reconcile-interval": 60}})
	b.Unit.SetConfig(map[string]any{"github-api-url": recorder.start(t, b.GitHub.URL())})
	b.Unit.Deploy()
	b.Converge(2)

	var actions []harness.ActionResult
	job := b.Assign(fakegithub.JobSpec{Command: "echo hello from the job"})
	if done := b.WaitJob(job.ID); done.ExitCode != 0 {
		t.Fatalf("job: %+v", done)
	}
	b.Converge(2)
	for _, name := range []string{"check-runners", "reconcile-runners", "flush-runners", "update-dependencies", "check-runners"} {
		actions = append(actions, b.Unit.Action(name, nil))
	}
	b.Converge(2)
	b.Unit.Hook("update-status")

	jits := recorder.all()
	if len(jits) < 4 {
		t.Fatalf("recorded %d JIT configs, want at least 4 (two runners, the job's replacement, a flush)", len(jits))
	}
	all := secrets{"the token": auditToken}
	for i, jit := range jits {
		all[fmt.Sprintf("JIT config %d", i+1)] = jit
	}
	configPath := b.ConfigPath()
	// The manager's record of the scopes it must still clean up, with their
	// credentials (0600, beside the config file).
	scopesPath := filepath.Join(filepath.Dir(configPath), "scopes.json")

	t.Log("inside the runner instances: no file and no command line has a JIT config")
	_, instances, _ := b.State()
	for _, name := range instances {
		auditInstance(t, name, all)
	}

	auditUnit(t, b, all, actions, map[string]bool{configPath: true, scopesPath: true})

	t.Log("GitHub App credentials: the private key is only in the config file")
	key := appPrivateKey(t)
	if r := b.Unit.Configure(map[string]any{"token": nil, "github-app-id": 12345, "github-app-installation-id": 67890,
		"github-app-private-key": key}); r.Code != 0 {
		t.Fatalf("config-changed to App credentials: %s", r.Stderr)
	}
	if config, err := os.ReadFile(configPath); err != nil || !bytes.Contains(config, []byte(keyBody(key))) {
		t.Fatalf("the App key is not in the manager's config file: %v", err)
	}
	b.Unit.Hook("update-status")
	actions = append(actions, b.Unit.Action("check-runners", nil))
	all["the App private key"] = keyBody(key)
	auditUnit(t, b, all, actions, map[string]bool{configPath: true, scopesPath: true})
}

// auditUnit searches everything of the unit on this machine. allowed are
// the files that may hold secrets (with mode 0600).
func auditUnit(t *testing.T, b *stack.Bed, all secrets, actions []harness.ActionResult, allowed map[string]bool) {
	t.Helper()
	for _, s := range b.Unit.StatusHistory() {
		if found := all.in(s.Message); found != nil {
			t.Errorf("%v in status %q", found, s.Status)
		}
	}
	for _, l := range b.Unit.Logs() {
		if found := all.in(l.Message); found != nil {
			t.Errorf("%v in a juju-log line at %s", found, l.Level)
		}
	}
	for _, a := range actions {
		text := fmt.Sprintf("%v %s %v %s %s", a.Results, a.Message, a.Log, a.Stdout, a.Stderr)
		if found := all.in(text); found != nil {
			t.Errorf("%v in an action's result, log or output", found)
		}
	}
	if found := all.in(b.Unit.ServiceLogs()); found != nil {
		t.Errorf("%v in the manager's logs (pebble logs)", found)
	}
	if found := all.in(b.Metrics()); found != nil {
		t.Errorf("%v in GET /metrics", found)
	}

	searched := 0
	for _, proc := range processes(t) {
		searched++
		if found := all.in(proc.cmdline); found != nil {
			t.Errorf("%v in the command line of pid %s", found, proc.pid)
		}
	}
	// The processes we started get their environment checked too.
	for _, pid := range []int{b.ManagerPID()} {
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if found := all.in(string(environ)); found != nil {
			t.Errorf("%v in the manager's environment", found)
		}
	}
	t.Logf("searched the command lines of %d processes", searched)

	// The manager's log and events log, under the log root the harness
	// gives the charm (/var/log in Juju): there, and without a secret.
	logRoot := filepath.Join(b.Unit.StateRoot, "log")
	for _, dir := range []string{"github-runner-manager", "github-runner-metrics"} {
		path := filepath.Join(logRoot, dir, strings.ReplaceAll(b.Unit.Name, "/", "-")+".log")
		if info, err := os.Stat(path); err != nil || info.Size() == 0 {
			t.Errorf("the log %s is missing or empty: %v", path, err)
		}
	}
	files := 0
	for _, root := range []string{b.Unit.StateDir(), b.Unit.CharmDir, logRoot} {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			files++
			data, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("cannot read %s: %v", path, err)
				return nil
			}
			found := all.in(string(data))
			if found == nil {
				return nil
			}
			info, _ := d.Info()
			switch {
			case !allowed[path]:
				t.Errorf("%v in %s, which has no need of them", found, path)
			case info.Mode().Perm() != 0o600:
				t.Errorf("%v in %s, mode %v, want 0600", found, path, info.Mode().Perm())
			}
			return nil
		})
	}
	t.Logf("searched %d files under %s, %s and %s", files, b.Unit.StateDir(), b.Unit.CharmDir, logRoot)
}

// auditInstance checks one runner instance: its expanded LXD config, the
// command lines of its processes and its files.
func auditInstance(t *testing.T, name string, all secrets) {
	t.Helper()
	config := run(t, time.Minute, "lxc", "config", "show", "--expanded", name)
	if found := all.in(config); found != nil {
		t.Errorf("%v in the LXD config of %s", found, name)
	}
	cmdlines := lxcExec(t, name, "sh", "-c", "cat /proc/[0-9]*/cmdline")
	if found := all.in(cmdlines); found != nil {
		t.Errorf("%v in the command lines of processes inside %s", found, name)
	}
	// The start script deletes its JIT file as soon as it has read it: a
	// running runner's JIT config is in no file of its instance (the runner
	// application decodes it into its own .runner and .credentials, as
	// GitHub's does).
	if gone := lxcExec(t, name, "sh", "-c", "test -e /var/lib/github-runner/jit-config && echo there || echo gone"); strings.TrimSpace(gone) != "gone" {
		t.Errorf("the JIT file of %s is still there while its runner runs", name)
	}
	for secret, value := range all {
		if !strings.HasPrefix(secret, "JIT config") {
			continue
		}
		middle := value[len(value)/2:][:48]
		holders := lxcExec(t, name, "sh", "-c", "grep -rlF -e '"+middle+"' /etc /home /root /tmp /var /opt /usr/local 2>/dev/null; true")
		if got := strings.Fields(holders); len(got) != 0 {
			t.Errorf("files in %s holding %s: %v, want none", name, secret, got)
		}
	}
}

func lxcExec(t *testing.T, name string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "lxc", append([]string{"exec", name, "--"}, argv...)...).Output()
	if err != nil {
		t.Fatalf("lxc exec %s %v: %v", name, argv, err)
	}
	return string(out)
}

type process struct{ pid, cmdline string }

// processes lists every process on the machine with its command line.
func processes(t *testing.T) []process {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []process
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil {
			out = append(out, process{e.Name(), string(cmdline)})
		}
	}
	return out
}

// appPrivateKey is a fresh RSA key in PEM, as GitHub hands out.
func appPrivateKey(t *testing.T) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}

// keyBody is a line from the middle of a PEM key: recognisable wherever
// the key is written, whatever the line endings around it.
func keyBody(key string) string {
	lines := strings.Split(strings.TrimSpace(key), "\n")
	return lines[len(lines)/2]
}
