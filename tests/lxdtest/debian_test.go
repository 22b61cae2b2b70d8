package lxdtest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

// debianUserData is a "#!" user-data that reports to the test's HTTP server on the bridge: at
// once what it runs under ("started"), then, in the background once cloud-init is done, what
// cloud-init and systemd say and how eth0 got its address ("done"); then it powers off.
// Python posts: the image has no curl or wget, and cloud-init needs python3 anyway.
const debianUserData = `#!/bin/sh
URL=%s
post() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read()), timeout=30)' "$URL/$1"; }
{ echo "pid1=$(ps -p 1 -o comm=)"; echo "uid=$(id -u)"; echo "hostname=$(hostname)"; } | post started
cat >/root/report.sh <<'EOF'
#!/bin/sh
cloud-init status --wait >/dev/null 2>&1
echo "== cloud-init-status"; cloud-init status --long
echo "== result"; cat /run/cloud-init/result.json
echo "== system"; systemctl is-system-running --wait
echo "== failed"; systemctl list-units --failed --plain --no-legend
echo "== eth0"; ip -4 -o addr show dev eth0
echo "== dns"; resolvectl dns eth0
EOF
URL="$URL" nohup sh -c 'sh /root/report.sh 2>&1 | python3 -c "import sys, urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read()), timeout=30)" "$URL/done"; poweroff' >/dev/null 2>&1 &
`

// TestDebianImage boots the Debian image with a user-data script and proves what the tests and
// benchmarks built on it rely on: cloud-init (NoCloud, fed by the image's LXD templates) runs
// the script as root under systemd, with the instance name as hostname; the network came up by
// DHCP (the script reaches the host's bridge IP, eth0's address is a lease, DNS is the one the
// lease gave); cloud-init finishes without errors and systemd reaches "running" with no failed
// unit; `poweroff` stops the container.
func TestDebianImage(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	image := lxdtest.DebianImage(t)
	prefix := lxdtest.Prefix(t, c)
	name := prefix + "deb"

	var mu sync.Mutex
	reports := map[string]string{}
	arrived := map[string]time.Time{}
	got := make(chan string, 2)
	url := lxdtest.ServeOnBridge(t, c, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		key := strings.TrimPrefix(r.URL.Path, "/")
		mu.Lock()
		reports[key], arrived[key] = string(body), time.Now()
		mu.Unlock()
		select {
		case got <- key:
		default:
		}
	}))

	t0 := time.Now()
	lxdtest.Create(t, c, name, image, map[string]string{"user.user-data": fmt.Sprintf(debianUserData, url)})
	lxdtest.Start(t, c, name)
	tStarted := time.Now()
	for want := 2; want > 0; want-- {
		select {
		case <-got:
		case <-time.After(3 * time.Minute):
			res := lxdtest.Exec(t, c, name, "sh", "-c", "cloud-init status --long; tail -30 /var/log/cloud-init-output.log; systemctl list-units --failed")
			t.Fatalf("the user-data did not report within 3 min (got %q); in the instance: %s %s", reports, res.Stdout, res.Stderr)
		}
	}
	lxdtest.WaitStatus(t, c, name, api.Stopped, 2*time.Minute)
	tStopped := time.Now()

	mu.Lock()
	defer mu.Unlock()
	started, done := reports["started"], reports["done"]
	t.Logf("launch -> user-data running: %v (start returned after %v); -> cloud-init done: %v; -> stopped: %v",
		arrived["started"].Sub(t0).Round(time.Millisecond), tStarted.Sub(t0).Round(time.Millisecond),
		arrived["done"].Sub(t0).Round(time.Millisecond), tStopped.Sub(t0).Round(time.Millisecond))
	t.Logf("report:\n%s\n%s", started, done)

	if want := "pid1=systemd\nuid=0\nhostname=" + name + "\n"; started != want {
		t.Errorf("the user-data ran with\n%s\nwant\n%s", started, want)
	}
	sections := map[string]string{}
	for _, part := range strings.Split(done, "== ")[1:] {
		title, body, _ := strings.Cut(part, "\n")
		sections[title] = strings.TrimSpace(body)
	}
	if s := sections["cloud-init-status"]; !strings.Contains(s, "status: done") {
		t.Errorf("cloud-init status: %q, want done", s)
	}
	var result struct {
		V1 struct {
			Datasource string
			Errors     []string
		}
	}
	if err := json.Unmarshal([]byte(sections["result"]), &result); err != nil {
		t.Errorf("cannot parse cloud-init's result.json %q: %v", sections["result"], err)
	} else if !strings.HasPrefix(result.V1.Datasource, "DataSourceNoCloud") || len(result.V1.Errors) > 0 {
		t.Errorf("cloud-init result: datasource %q errors %q, want NoCloud and none", result.V1.Datasource, result.V1.Errors)
	}
	if s := sections["system"]; s != "running" {
		t.Errorf("systemctl is-system-running: %q, want running (failed units: %q)", s, sections["failed"])
	}
	// "dynamic": the address has a lease's lifetime, so DHCP gave it.
	if s := sections["eth0"]; !strings.Contains(s, " dynamic ") {
		t.Errorf("eth0's address is not a DHCP lease: %q", s)
	}
	bridge := lxdtest.BridgeIP(t, c).String()
	if s := sections["dns"]; !strings.HasSuffix(s, ": "+bridge) {
		t.Errorf("DNS on eth0 is %q, want the bridge's %s (from the lease)", s, bridge)
	}
}

// TestDebianImageCloudConfig proves the rest of the seed that the image's templates render: a
// cloud-config user-data is applied, and user.meta-data overrides the instance-id and hostname
// taken from the instance name (the VM player gives the Nova server's as cloud-init would see
// them). WaitCloudInit returns once cloud-init is done.
func TestDebianImageCloudConfig(t *testing.T) {
	t.Parallel()
	c := lxdtest.Connect(t)
	image := lxdtest.DebianImage(t)
	prefix := lxdtest.Prefix(t, c)
	name := prefix + "cfg"

	t0 := time.Now()
	lxdtest.Launch(t, c, name, image, map[string]string{
		"user.meta-data": "instance-id: iid-debian-test\nlocal-hostname: other-host\n",
		"user.user-data": "#cloud-config\nwrite_files:\n- path: /root/hello\n  content: hello from cloud-config\n",
	})
	status := lxdtest.WaitCloudInit(t, c, name, 3*time.Minute)
	t.Logf("launch -> cloud-init done: %v\n%s", time.Since(t0).Round(time.Millisecond), status)

	res := lxdtest.Exec(t, c, name, "sh", "-c", "cloud-init query instance_id; hostname; cat /root/hello")
	if want := "iid-debian-test\nother-host\nhello from cloud-config"; res.Stdout != want || res.ExitCode != 0 {
		t.Errorf("instance-id, hostname, file: %q (exit %d, %s), want %q", res.Stdout, res.ExitCode, res.Stderr, want)
	}
}

// TestDebianImageUnavailable checks that without the image (here: without LXD) DebianImage
// fails the test under CI=true and skips it otherwise, saying how to build the image. It needs
// no LXD.
func TestDebianImageUnavailable(t *testing.T) {
	tests := []struct {
		ci        string
		wantFatal bool
	}{
		{ci: "true", wantFatal: true},
		{ci: "", wantFatal: false},
	}
	for _, test := range tests {
		t.Setenv("LXD_SOCKET", filepath.Join(t.TempDir(), "no-such.socket"))
		t.Setenv("CI", test.ci)
		f := &fakeTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			lxdtest.DebianImage(f)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("CI=%q: DebianImage did not return within 30 s", test.ci)
		}
		msg := f.skip
		if test.wantFatal {
			msg = f.fatal
		}
		if (f.fatal != "") != test.wantFatal || (f.skip != "") == test.wantFatal {
			t.Errorf("CI=%q: got fatal %q, skip %q; want fatal=%v", test.ci, f.fatal, f.skip, test.wantFatal)
		}
		if !strings.Contains(msg, "tests/lxd/debian.sh") {
			t.Errorf("CI=%q: message %q does not say to run tests/lxd/debian.sh", test.ci, msg)
		}
	}
}
