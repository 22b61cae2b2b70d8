package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// Real fingerprints, as ssh-keygen -l -E sha256 prints them.
const (
	tmateRSA     = "SHA256:aZyJL5q5TD/FqtKgRRlXhZiJoRNASJw9IPhPLHHx/1A"
	tmateED25519 = "SHA256:Q0cJAgy/QhMms3Z0VxDde1EGXvGAEt+dIa7kZqMUMDY"
)

// hostAddress is an IPv4 address of this machine that runners reach
// through their bridge's gateway and that is not the fake GitHub's (the
// LXD bridge's), so a denylist may cover it while runners still reach
// GitHub: the source address of the default route.
func hostAddress(t *testing.T) netip.Addr {
	t.Helper()
	conn, err := net.Dial("udp4", "198.51.100.1:9") // TEST-NET-2; nothing is sent
	if err != nil {
		t.Fatalf("cannot find this machine's address on its default route: %v", err)
	}
	defer conn.Close()
	addr := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	if bridge, _ := netip.AddrFromSlice(lxdtest.BridgeIP(t, lxdtest.Connect(t)).To4()); addr == bridge || addr.IsLoopback() {
		t.Fatalf("this machine's default-route address %s is the LXD bridge's or loopback", addr)
	}
	return addr
}

// listener answers "tmate" over HTTP on addr:port, counting requests, until
// the test ends: it stands in for a tmate server, whose port runners reach.
type listener struct {
	port int
	hits atomic.Int32
}

func listen(t *testing.T, addr netip.Addr) *listener {
	t.Helper()
	l, err := net.Listen("tcp4", addr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	out := &listener{port: l.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out.hits.Add(1)
		fmt.Fprint(w, "tmate")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return out
}

func tmateUnit(host netip.Addr, port int) map[string]string {
	return map[string]string{"host": host.String(), "port": strconv.Itoa(port), "rsa_fingerprint": tmateRSA, "ed25519_fingerprint": tmateED25519}
}

// probe is a job that prints its TMATE_SERVER_* variables and whether it
// reaches the server's port, and another port of the server's address.
func probe(other int) fakegithub.JobSpec {
	return fakegithub.JobSpec{Command: `env | grep '^TMATE_SERVER_' | sort
if out=$(timeout 10 wget -q -O - "http://$TMATE_SERVER_HOST:$TMATE_SERVER_PORT/"); then echo "server: $out"; else echo "server: unreachable"; fi
if timeout 10 wget -q -O - "http://$TMATE_SERVER_HOST:` + strconv.Itoa(other) + `/" >/dev/null 2>&1; then echo "other port: reached"; else echo "other port: refused"; fi
`}
}

// On real LXD through the charm: related to a tmate-ssh-server unit, a
// runner's job sees the server in its TMATE_SERVER_* variables and, with a
// denylist covering the server's address, reaches the server's port but no
// other port of that address. A change of the relation's data replaces the
// idle runner, whose successor's job sees the new server, and leaves the
// busy one running its job.
func TestDebugSSHRelationGivesJobsTheirTmateServer(t *testing.T) {
	host := hostAddress(t)
	first, second, other := listen(t, host), listen(t, host), listen(t, host)
	denied := netip.PrefixFrom(host, 24).Masked()
	b := stack.New(t, stack.Options{Name: "tmate", Token: token, Label: "tmate", Runners: 2,
		Config: map[string]any{"denylist": denied.String()}})
	b.Unit.Deploy()
	id := b.Unit.Relate("debug-ssh", "tmate-ssh-server", nil, map[string]map[string]string{"tmate-ssh-server/0": tmateUnit(host, first.port)})
	b.Converge(2)

	t.Logf("a job sees the server and reaches its port on %s inside the denied %s", host, denied)
	job := b.WaitJob(b.Assign(probe(other.port)).ID)
	want := fmt.Sprintf("TMATE_SERVER_ED25519_FINGERPRINT=%s\nTMATE_SERVER_HOST=%s\nTMATE_SERVER_PORT=%d\nTMATE_SERVER_RSA_FINGERPRINT=%s\nserver: tmate\nother port: refused\n",
		tmateED25519, host, first.port, tmateRSA)
	if job.ExitCode != 0 || job.Output != want {
		t.Fatalf("job exit %d, output:\n%s\nwant:\n%s", job.ExitCode, job.Output, want)
	}
	if first.hits.Load() == 0 || other.hits.Load() != 0 {
		t.Errorf("the server saw %d requests, the other port %d; want some and none", first.hits.Load(), other.hits.Load())
	}
	b.Converge(2)

	t.Log("the relation's server moves: the idle runner is replaced, the busy one keeps its job")
	busy := b.Assign(fakegithub.JobSpec{Sleep: 10 * time.Minute})
	before := b.RunnerNames()
	if r := b.Unit.SetRemoteUnitData(id, "tmate-ssh-server/0", tmateUnit(host, second.port)); r.Code != 0 {
		t.Fatalf("debug-ssh-relation-changed: exit %d: %s", r.Code, r.Stderr)
	}
	b.Converge(2)
	after := b.RunnerNames()
	if kept := stack.Intersect(before, after); !slices.Equal(kept, []string{busy.RunnerName}) {
		t.Errorf("runners kept across the relation change %v, want only the busy %s (before %v, after %v)", kept, busy.RunnerName, before, after)
	}
	job = b.WaitJob(b.Assign(probe(other.port)).ID)
	if job.ExitCode != 0 || !strings.Contains(job.Output, fmt.Sprintf("TMATE_SERVER_PORT=%d\n", second.port)) || !strings.Contains(job.Output, "server: tmate\n") {
		t.Errorf("a new runner's job after the change: exit %d, output:\n%s\nwant the new port %d, reached", job.ExitCode, job.Output, second.port)
	}
	if err := b.GitHub.CompleteJob(busy.ID, 0); err != nil {
		t.Fatal(err)
	}
}
