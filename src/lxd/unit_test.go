package lxd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/lxd/lxdsocket"
)

// These need no LXD, but for TestConnectsOnFirstUseAndAfterAFailure.

func TestNewRefusesVMsWithoutKVM(t *testing.T) {
	cfg := testConfig("github-runner-0")
	cfg.LXD.Type = VirtualMachine
	cfg.KVMDevice = "/nonexistent/kvm"
	_, err := New(cfg, nil)
	if err == nil || err.Error() != `cannot use LXD: invalid config: lxd.type must be "container" on this host: virtual machines need KVM (/dev/kvm)` {
		t.Fatalf("New = %v, want the KVM message", err)
	}
}

func TestNewChecksConfig(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Identity.App = strings.Repeat("a", 60) }, "longer than 63"},
	} {
		cfg := testConfig("github-runner-0")
		tc.edit(&cfg)
		if _, err := New(cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New = %v, want an error with %q", err, tc.want)
		}
	}
}

// The errors only the operator can fix carry the mark src/service reads;
// those time clears do not.
func TestOperatorErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{ErrImageNotFound, true},
		{explain(errors.New("Failed getting image: Image not found")), true},
		{ErrUnreachable, false},
		{ErrNoSpace, false},
		{ErrNoMemory, false},
		{ErrNotFound, false},
	} {
		if got := cloud.NeedsOperator(fmt.Errorf("cannot create runner: %w", tc.err)); got != tc.want {
			t.Errorf("NeedsOperator(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{fmt.Errorf("Post: dial unix /var/lib/lxd/unix.socket: connect: %w", syscall.ECONNREFUSED), ErrUnreachable},
		{errors.New("Failed to create file: write /var/lib/lxd/x: no space left on device"), ErrNoSpace},
		{errors.New("Failed to run: fork: cannot allocate memory"), ErrNoMemory},
		{errors.New("Failed getting image: Image not found"), ErrImageNotFound},
		{api.StatusErrorf(404, "Instance not found"), ErrNotFound},
	} {
		got := explain(tc.err)
		if !errors.Is(got, tc.want) || !errors.Is(got, tc.err) {
			t.Errorf("explain(%q) = %v, want %v wrapping the original", tc.err, got, tc.want)
		}
	}
	plain := errors.New("something else")
	if explain(plain) != plain {
		t.Errorf("explain changed an unclassified error")
	}
}

func TestPickSubnet(t *testing.T) {
	used := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24"), netip.MustParsePrefix("10.99.17.0/24"), netip.MustParsePrefix("172.17.0.0/16")}
	for _, tc := range []struct {
		from uint32
		want string
	}{
		{0, "10.99.34.1/24"},
		{1, "10.99.34.1/24"},
		{3, "10.99.51.1/24"},
		{16, "10.100.0.1/24"},
		{157*16 - 1, "10.255.255.1/24"},
		{157 * 16, "10.99.34.1/24"}, // round
	} {
		if got, ok := pickSubnet(used, tc.from); !ok || got.String() != tc.want {
			t.Errorf("pickSubnet from %d = %v, %v; want %s", tc.from, got, ok, tc.want)
		}
	}
	// A host on 10.0.0.0/8 leaves nothing.
	if got, ok := pickSubnet([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, 5); ok {
		t.Errorf("pickSubnet inside 10/8 = %v, want none", got)
	}
}

func TestEnvironmentFile(t *testing.T) {
	c := &Cloud{cfg: Config{Runner: config.RunnerImage{HTTPProxy: "http://p:3128", NoProxy: "a,b", DockerhubMirror: "https://m'x"}}}
	got := c.cfg.Runner.EnvironmentFile()
	for _, want := range []string{"http_proxy='http://p:3128'\n", "HTTPS_PROXY" /* absent */, "no_proxy='a,b'\n", `DOCKERHUB_MIRROR='https://m'\''x'` + "\n"} {
		if want == "HTTPS_PROXY" {
			if strings.Contains(got, want) {
				t.Errorf("environment sets an unset HTTPS proxy:\n%s", got)
			}
			continue
		}
		if !strings.Contains(got, want) {
			t.Errorf("environment lacks %q:\n%s", want, got)
		}
	}
	// no_proxy means nothing without a proxy.
	c = &Cloud{cfg: Config{Runner: config.RunnerImage{NoProxy: "a"}}}
	if got := c.cfg.Runner.EnvironmentFile(); strings.Contains(got, "no_proxy") {
		t.Errorf("no_proxy without a proxy:\n%s", got)
	}
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		code  api.StatusCode
		power string
		want  cloud.Status
	}{
		{api.Running, "RUNNING", cloud.Running},
		{api.Stopped, "", cloud.Building}, // created, not started yet
		{api.Stopped, "STOPPED", cloud.Stopped},
		{api.Starting, "", cloud.Building},
		// Frozen for a snapshot, or in error: it may thaw with its job.
		{api.Error, "RUNNING", cloud.Unresponsive},
		{api.Frozen, "RUNNING", cloud.Unresponsive},
		{api.Freezing, "RUNNING", cloud.Unresponsive},
	} {
		inst := api.Instance{StatusCode: tc.code, Config: map[string]string{}}
		if tc.power != "" {
			inst.Config["volatile.last_state.power"] = tc.power
		}
		if got := status(inst); got != tc.want {
			t.Errorf("status(%v, power %q) = %s, want %s", tc.code, tc.power, got, tc.want)
		}
	}
}

// New does not connect: a daemon that is not there is each call's error,
// not New's, and the first call after it appears connects. Prepare fails
// before it fetches the runner application.
func TestConnectsOnFirstUseAndAfterAFailure(t *testing.T) {
	requireLXD(t)
	socket, err := lxdsocket.Find("")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(testPrefix(t))
	cfg.Socket = filepath.Join(t.TempDir(), "unix.socket")
	c, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New with no daemon at its socket: %v, want a cloud that connects later", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 2 {
		if _, err := c.Instances(ctx); !errors.Is(err, ErrUnreachable) {
			t.Fatalf("Instances %d with no daemon: %v, want ErrUnreachable", i, err)
		}
		fetched := false
		_, err := c.Prepare(ctx, func(context.Context) (string, string, error) { fetched = true; return "", "", errors.New("no") })
		if !errors.Is(err, ErrUnreachable) || fetched {
			t.Fatalf("Prepare %d with no daemon: %v (fetched: %v), want ErrUnreachable before any fetch", i, err, fetched)
		}
	}
	if err := os.Symlink(socket, cfg.Socket); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Instances(ctx); err != nil {
		t.Fatalf("Instances once the daemon answers: %v", err)
	}
	t.Cleanup(func() { cleanupPrefix(t, c) })
}

// mustDenylist is the denylist of the CIDRs, as src/config reads them.
func mustDenylist(t testing.TB, cidrs ...string) config.Denylist {
	t.Helper()
	list, err := config.ParseDenylist(strings.Join(cidrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	return list
}
