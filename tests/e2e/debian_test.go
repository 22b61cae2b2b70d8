package e2e

import (
	"archive/tar"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	lxdclient "github.com/canonical/lxd/client"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// The runner image on a real distribution, through the packed charm: the
// charm builds it from the Debian bookworm base (systemd, real cloud-init)
// with the tool set, a runner boots from it under cloud-init and systemd,
// comes online, takes a job that runs a Docker container from an image the
// job imports (no registry is reachable), and powers off; the manager
// deletes it and its GitHub record.
func TestDebianRunnerImageRunsDocker(t *testing.T) {
	base := lxdtest.DebianImage(t)
	began := time.Now()
	c := lxdtest.Connect(t)
	tarball := busyboxRootfs(t)
	url := lxdtest.ServeOnBridge(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/busybox.tar" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-tar")
		w.Write(tarball)
	}))

	// The unit's proxy, which the build's apt and the runners' Docker
	// daemon go through (and the runners' other traffic: no no_proxy).
	proxy := &forwardProxy{}
	proxyURL := lxdtest.ServeOnBridge(t, c, proxy)

	b := stack.New(t, stack.Options{Name: "deb", Token: token, Label: "e2e-deb", Runners: 1, Config: map[string]any{
		"base-image": base, "vm-memory": "1GiB", "vm-disk": "4GiB", "runner-http-proxy": proxyURL,
	}})
	b.Unit.Deploy()
	deployed := time.Now()
	// The build is apt in the builder (Docker and the rest from the Debian
	// archive) and a publish: minutes, more than Converge waits.
	stack.WaitFor(t, 20*time.Minute, "the runner image is built", func() bool { return b.RunnerImage() != "" })
	image := b.RunnerImage()
	t.Logf("runner image %s built %v after deploy (the manager's build: %.1f s)", image,
		time.Since(deployed).Round(time.Second), b.Metric("github_runner_image_build_duration_seconds_sum"))

	if n := proxy.seen("deb.debian.org"); n == 0 {
		t.Errorf("the build's apt did not go through the unit's proxy (it saw %v)", proxy.hosts())
	}
	t.Log("the built image has the tools, Docker for the runner user, and apt quiet")
	checkImage(t, b, image)

	b.Converge(1)
	runner := b.RunnerNames()[0]
	t.Log("the runner started under systemd from cloud-init's user-data")
	checkBoot(t, c, runner)

	job := b.Assign(fakegithub.JobSpec{Command: dockerJob(url)})
	done := b.WaitJob(job.ID)
	if done.ExitCode != 0 || !strings.Contains(done.Output, "docker-marker-42") {
		t.Fatalf("the Docker job: exit code %d, output:\n%s", done.ExitCode, done.Output)
	}
	if !strings.Contains(done.Output, "docker-proxy="+proxyURL) {
		t.Errorf("the runner's Docker daemon has not the unit's proxy %s:\n%s", proxyURL, done.Output)
	}
	t.Logf("the job ran a container in runner %s", done.RunnerName)

	t.Log("the runner powered off and the manager deleted it, at LXD and at GitHub")
	deadline := time.Now().Add(3 * time.Minute)
	for {
		b.Reconcile()
		_, instances, runners := b.State()
		if !slices.Contains(instances, done.RunnerName) && !slices.Contains(runners, done.RunnerName) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runner %s not cleaned up: instances %v, runners %v", done.RunnerName, instances, runners)
		}
		time.Sleep(3 * time.Second)
	}

	if r := b.Unit.Hook("stop"); r.Code != 0 {
		t.Fatalf("stop: %s", r.Stderr)
	}
	if r := b.Unit.Hook("remove"); r.Code != 0 {
		t.Fatalf("remove: %s", r.Stderr)
	}
	if _, instances, runners := b.State(); len(instances) != 0 || len(runners) != 0 {
		t.Errorf("left after remove: instances %v, runners %v", instances, runners)
	}
	t.Logf("wall time %v", time.Since(began).Round(time.Second))
}

// dockerJob is a job's command: it fetches the image tarball from the test
// and runs it with Docker, as the runner user. The marker is computed in
// the container, so the output has it only if the container ran.
func dockerJob(url string) string {
	return strings.Join([]string{
		"set -e",
		"id -nG",
		"wget -q -O busybox.tar " + url + "/busybox.tar",
		"docker import busybox.tar e2e-busybox:local",
		`docker run --rm e2e-busybox:local /bin/sh -c 'echo docker-marker-$((6 * 7))'`,
		`echo "docker-proxy=$(docker info --format '{{.HTTPProxy}}')"`,
	}, "\n")
}

// checkImage launches a plain container of the built image (no user-data:
// nothing of the runner starts) and looks inside.
func checkImage(t *testing.T, b *stack.Bed, image string) {
	t.Helper()
	name := lxdtest.Prefix(t, b.LXD) + "look"
	lxdtest.Launch(t, b.LXD, name, image, nil)
	defer lxdtest.DeleteInstance(b.LXD, name)
	// systemctl answers once systemd's boot is over (the container runs
	// commands before that).
	const booted = `for i in $(seq 240); do case $(systemctl is-system-running 2>/dev/null) in running|degraded) exit 0 ;; esac; sleep 0.5; done; systemctl is-system-running; exit 1`
	if res := lxdtest.Exec(t, b.LXD, name, "sh", "-c", booted); res.ExitCode != 0 {
		t.Fatalf("systemd in %s did not finish booting: %s %s", name, res.Stdout, res.Stderr)
	}
	for _, check := range []struct{ what, script, want string }{
		{"the tools", "for tool in docker git curl wget jq unzip zip pip3 shellcheck gh python; do command -v $tool >/dev/null || echo missing $tool; done; echo checked", "checked"},
		{"the runner user in group docker", "id -nG ubuntu | tr ' ' '\\n' | grep -x docker", "docker"},
		{"sudo for the runner user", "su -s /bin/sh ubuntu -c 'sudo -n id -u'", "0"},
		{"Docker's daemon started on first use", "systemctl is-enabled docker.socket", "enabled"},
		{"Docker's proxies from the instance's environment", "systemctl show -p EnvironmentFiles docker.service | grep -o /etc/github-runner/environment", "/etc/github-runner/environment"},
		{"apt's timers masked", "systemctl is-enabled apt-daily.timer apt-daily-upgrade.timer | sort -u", "masked"},
		{"no unattended-upgrades", "dpkg-query -W -f='${Status}' unattended-upgrades 2>/dev/null | grep -q 'ok installed' && echo installed || echo absent", "absent"},
		{"no apt lists or caches", "ls /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$' | wc -l; ls /var/cache/apt/archives | grep -c '\\.deb$' || :", "0\n0"},
		{"no build-time policy-rc.d", "test -e /usr/sbin/policy-rc.d && echo present || echo absent", "absent"},
		{"the runner application", "test -x /home/ubuntu/actions-runner/run.sh && cat /etc/github-runner/runner-version >/dev/null && echo installed", "installed"},
	} {
		res := lxdtest.Exec(t, b.LXD, name, "sh", "-c", check.script)
		if got := strings.TrimSpace(res.Stdout); got != check.want {
			t.Errorf("%s: got %q (%s), want %q", check.what, got, strings.TrimSpace(res.Stderr), check.want)
		}
	}
}

// checkBoot looks at how the runner's start script runs: systemd is PID 1,
// the script runs in a systemd service (cloud-init's), and cloud-init took
// the user-data from the instance's config.
func checkBoot(t *testing.T, c lxdclient.InstanceServer, runner string) {
	t.Helper()
	if got := strings.TrimSpace(lxdtest.Exec(t, c, runner, "cat", "/proc/1/comm").Stdout); got != "systemd" {
		t.Errorf("PID 1 of %s is %q, want systemd", runner, got)
	}
	const findStart = `for p in /proc/[0-9]*; do if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q 'github-runner-start'; then cat "$p/cgroup"; break; fi; done`
	if cgroup := lxdtest.Exec(t, c, runner, "sh", "-c", findStart).Stdout; !strings.Contains(cgroup, ".service") {
		t.Errorf("the start script of %s runs in no systemd service: cgroup %q", runner, cgroup)
	}
	userData := lxdtest.Exec(t, c, runner, "sh", "-c", "cat /var/lib/cloud/instance/user-data.txt").Stdout
	if !strings.Contains(userData, "github-runner-start") {
		t.Errorf("cloud-init's user-data in %s is %q, want the charm's", runner, userData)
	}
}

// busyboxRootfs is a tarball of a rootfs holding the bed's busybox-static
// (tests/lxd/setup.sh installs it for the base image): what `docker
// import` makes an image of.
func busyboxRootfs(t *testing.T) []byte {
	t.Helper()
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("cannot read the bed's busybox (tests/lxd/setup.sh installs busybox-static): %v", err)
	}
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	add := func(h *tar.Header, body []byte) {
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	add(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))}, bin)
	for _, applet := range []string{"sh", "echo"} {
		add(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// forwardProxy is an HTTP proxy (plain requests and CONNECT tunnels) that
// counts the hosts asked for.
type forwardProxy struct {
	mu    sync.Mutex
	count map[string]int
}

func (p *forwardProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.URL.Hostname()
	if r.Method == http.MethodConnect {
		host, _, _ = strings.Cut(r.Host, ":")
	}
	p.mu.Lock()
	if p.count == nil {
		p.count = map[string]int{}
	}
	p.count[host]++
	p.mu.Unlock()
	if r.Method == http.MethodConnect {
		p.tunnel(w, r)
		return
	}
	if !r.URL.IsAbs() {
		http.Error(w, "not a proxy request", http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Connection")
	resp, err := proxyTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

var proxyTransport = &http.Transport{Proxy: nil, ResponseHeaderTimeout: 10 * time.Minute}

func (p *forwardProxy) tunnel(w http.ResponseWriter, r *http.Request) {
	upstream, err := net.DialTimeout("tcp", r.Host, 30*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		upstream.Close()
		http.Error(w, "cannot tunnel", http.StatusInternalServerError)
		return
	}
	client, _, err := hj.Hijack()
	if err != nil {
		upstream.Close()
		return
	}
	client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	go func() { io.Copy(upstream, client); upstream.Close() }()
	go func() { io.Copy(client, upstream); client.Close() }()
}

func (p *forwardProxy) seen(host string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count[host]
}

func (p *forwardProxy) hosts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.count {
		out[k] = v
	}
	return out
}
