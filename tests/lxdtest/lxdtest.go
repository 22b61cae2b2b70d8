// Package lxdtest gives tests a real LXD daemon: the one tests/lxd/setup.sh brings up.
//
// A test calls Connect for a client, Prefix for a unique instance-name prefix whose instances
// and images are deleted when the test ends, and BridgeIP or ServeOnBridge to offer an HTTP
// service that containers can reach. Containers are made from the image BaseImageAlias.
//
// When no LXD answers, Connect skips the test, except under CI=true, where it fails it: in CI a
// test whose real part is missing must fail, never pass by testing nothing.
package lxdtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	lxd "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
)

// BaseImageAlias is the alias of the base image that tests/lxd/setup.sh builds and imports.
//
// The image is busybox-static (sh, wget, tar, gzip, sha256sum, ...) with busybox init as PID 1.
// At boot it gets a DHCP lease on eth0, then runs, in the background, every executable
// /etc/boot.d/* (each boot) and the instance config key user.user-data if that starts with "#!"
// (once per instance). `poweroff` and `halt` end the container; LXD then reports it Stopped.
// There is no bash, no TLS in wget, and busybox wget's -T option crashes: leave it out.
const BaseImageAlias = "github-runner-test-base"

// Timeouts for calls to the daemon. They are generous: a loaded CI machine is slow, and
// a test that hangs is worse than one that fails.
const (
	connectTimeout = 10 * time.Second
	requestTimeout = 2 * time.Minute
	// OpTimeout bounds one LXD operation (create, start, stop, delete, exec).
	OpTimeout = 2 * time.Minute
	// busyTimeout bounds the wait for LXD to finish an operation it runs on its own.
	busyTimeout = 30 * time.Second
)

const setupHint = "run `sudo tests/lxd/setup.sh` to install and start LXD with the test image"

// Connect returns a client of the local LXD daemon (over its unix socket, found as
// lxd.ConnectLXDUnix finds it: $LXD_SOCKET, $LXD_DIR/unix.socket, the snap's, Debian's).
// Every request it makes is bounded by a timeout.
//
// When no daemon answers, or the base image is missing, it calls t.Fatal if CI=true, else
// t.Skip, with a message that says to run tests/lxd/setup.sh.
func Connect(t testing.TB) lxd.InstanceServer {
	t.Helper()
	c, err := connect()
	if err == nil {
		_, _, err = c.GetImageAlias(BaseImageAlias)
		if err != nil {
			err = fmt.Errorf("cannot find base image %q: %w", BaseImageAlias, err)
		}
	}
	if err != nil {
		msg := fmt.Sprintf("LXD not available: %v; %s", err, setupHint)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg + " (CI=true: a missing real part fails the test)")
		}
		t.Skip(msg)
	}
	return c
}

func connect() (lxd.InstanceServer, error) {
	// The client keeps the context it was made with for every later request, so it gets
	// none with a deadline; HTTPClient.Timeout bounds each request, and the first one, which
	// tells whether a daemon answers at all, gets a shorter bound here.
	c, err := lxd.ConnectLXDUnix("", &lxd.ConnectionArgs{
		HTTPClient:    &http.Client{Timeout: requestTimeout},
		SkipGetServer: true,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot connect to LXD: %w", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, _, err := c.GetServer()
		errc <- err
	}()
	select {
	case err = <-errc:
	case <-time.After(connectTimeout):
		err = fmt.Errorf("no answer within %v", connectTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to LXD: %w", err)
	}
	return c, nil
}

// invalidNameChars matches what may not appear in an instance name (a hostname label).
var invalidNameChars = regexp.MustCompile(`[^a-z0-9]+`)

// Prefix returns a fresh instance-name prefix for this test, such as "lxdt-mytest-1a2b3c-",
// and registers a t.Cleanup that deletes every instance whose name starts with it and every
// image with an alias that starts with it (an image that also has an alias without the prefix,
// such as the base image, only loses the prefixed alias). The cleanup then fails the test if
// anything of the prefix is left.
//
// Name your instances and image aliases prefix+"something" (instance names must stay
// within 63 characters; the prefix is at most 26).
func Prefix(t testing.TB, c lxd.InstanceServer) string {
	t.Helper()
	slug := invalidNameChars.ReplaceAllString(strings.ToLower(t.Name()), "-")
	slug = strings.Trim(slug, "-")
	if len(slug) > 12 {
		slug = strings.Trim(slug[:12], "-")
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("cannot make a random prefix: %v", err)
	}
	prefix := "lxdt-" + slug + "-" + hex.EncodeToString(b[:]) + "-"
	t.Cleanup(func() {
		if err := DeleteAll(c, prefix); err != nil {
			t.Errorf("cannot clean up LXD prefix %q: %v", prefix, err)
		}
		instances, images, err := Remaining(c, prefix)
		if err != nil {
			t.Errorf("cannot list what is left of LXD prefix %q: %v", prefix, err)
		} else if len(instances)+len(images) > 0 {
			t.Errorf("left behind with prefix %q: instances %q, images %q", prefix, instances, images)
		}
	})
	return prefix
}

// Remaining returns the names of the instances and the fingerprints of the images (by alias)
// that carry the prefix.
func Remaining(c lxd.InstanceServer, prefix string) (instances, images []string, err error) {
	names, err := c.GetInstanceNames(api.InstanceTypeAny)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot list instances: %w", err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			instances = append(instances, n)
		}
	}
	aliases, err := c.GetImageAliases()
	if err != nil {
		return nil, nil, fmt.Errorf("cannot list image aliases: %w", err)
	}
	for _, a := range aliases {
		if strings.HasPrefix(a.Name, prefix) {
			images = append(images, a.Target)
		}
	}
	return instances, images, nil
}

// DeleteAll force-deletes every instance and image of the prefix (see Prefix), and the
// bridge the charm makes for a unit whose runner prefix is the prefix without its trailing "-"
// (see UnitBridge).
func DeleteAll(c lxd.InstanceServer, prefix string) error {
	var errs []error
	instances, _, err := Remaining(c, prefix)
	if err != nil {
		return err
	}
	for _, name := range instances {
		if err := DeleteInstance(c, name); err != nil {
			errs = append(errs, err)
		}
	}
	bridge := UnitBridge(strings.TrimSuffix(prefix, "-"))
	if n, _, err := c.GetNetwork(bridge); err == nil && strings.HasPrefix(n.Description, "Managed by the github-runner charm") {
		if err := c.DeleteNetwork(bridge); err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
			errs = append(errs, fmt.Errorf("cannot delete network %q: %w", bridge, err))
		}
	}
	aliases, err := c.GetImageAliases()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("cannot list image aliases: %w", err))...)
	}
	// Delete the prefixed aliases, and the image itself unless it has another alias: that
	// keeps a test that aliased the base image from deleting it.
	byImage := map[string][]string{}
	for _, a := range aliases {
		byImage[a.Target] = append(byImage[a.Target], a.Name)
	}
	for fp, names := range byImage {
		var ours, others int
		for _, n := range names {
			if strings.HasPrefix(n, prefix) {
				ours++
			} else {
				others++
			}
		}
		switch {
		case ours == 0:
		case others == 0:
			if err := deleteImage(c, fp); err != nil {
				errs = append(errs, err)
			}
		default:
			for _, n := range names {
				if !strings.HasPrefix(n, prefix) {
					continue
				}
				if err := c.DeleteImageAlias(n); err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
					errs = append(errs, fmt.Errorf("cannot delete image alias %q: %w", n, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// UnitBridge is the name of the bridge the charm makes for the runners of a unit of runner
// prefix prefix: "ghr" and 8 hex digits of the prefix's SHA-256 (src/lxd's bridgeName, which
// this package cannot import: src/lxd's tests import it).
func UnitBridge(prefix string) string {
	sum := sha256.Sum256([]byte(prefix))
	return "ghr" + hex.EncodeToString(sum[:4])
}

func deleteImage(c lxd.InstanceServer, fingerprint string) error {
	op, err := c.DeleteImage(fingerprint)
	if err == nil {
		err = WaitOp(op)
	}
	if err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
		return fmt.Errorf("cannot delete image %s: %w", fingerprint, err)
	}
	return nil
}

// DeleteInstance stops (forcibly) and deletes an instance. An instance that is already gone
// (an ephemeral one that stopped, say) is not an error.
func DeleteInstance(c lxd.InstanceServer, name string) error {
	inst, _, err := c.GetInstance(name)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot get instance %q: %w", name, err)
	}
	if inst.StatusCode != api.Stopped {
		op, err := c.UpdateInstanceState(name, api.InstanceStatePut{Action: "stop", Force: true, Timeout: -1}, "")
		if err == nil {
			err = WaitOp(op)
		}
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return nil
		}
		// "The instance is already stopped" races with a container powering itself off.
		if err != nil && !strings.Contains(err.Error(), "already stopped") {
			return fmt.Errorf("cannot stop instance %q: %w", name, err)
		}
	}
	// When a container powers itself off, LXD reports it Stopped before it has finished its
	// own "stop" operation, and until then refuses to delete it ("Instance is busy running
	// a "stop" operation"): retry that for a while.
	deadline := time.After(busyTimeout)
	for {
		op, err := c.DeleteInstance(name)
		if err == nil {
			err = WaitOp(op)
		}
		if err == nil || api.StatusErrorCheck(err, http.StatusNotFound) {
			return nil
		}
		if !strings.Contains(err.Error(), "is busy running") {
			return fmt.Errorf("cannot delete instance %q: %w", name, err)
		}
		select {
		case <-deadline:
			return fmt.Errorf("cannot delete instance %q: still busy after %v: %w", name, busyTimeout, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitOp waits for an LXD operation, for at most OpTimeout.
func WaitOp(op lxd.Operation) error {
	ctx, cancel := context.WithTimeout(context.Background(), OpTimeout)
	defer cancel()
	if err := op.WaitContext(ctx); err != nil {
		return err
	}
	return nil
}

// BridgeIP returns the host's IPv4 address on the network of the default profile's NIC
// (lxdbr0 as tests/lxd/setup.sh makes it): the address at which containers reach the host.
func BridgeIP(t testing.TB, c lxd.InstanceServer) net.IP {
	t.Helper()
	ip, err := bridgeIP(c)
	if err != nil {
		t.Fatalf("cannot find the LXD bridge IP: %v; %s", err, setupHint)
	}
	return ip
}

func bridgeIP(c lxd.InstanceServer) (net.IP, error) {
	profile, _, err := c.GetProfile("default")
	if err != nil {
		return nil, fmt.Errorf("cannot get default profile: %w", err)
	}
	network := ""
	for _, dev := range profile.Devices {
		if dev["type"] == "nic" {
			network = dev["network"]
			if network == "" {
				network = dev["parent"]
			}
			break
		}
	}
	if network == "" {
		return nil, errors.New("default profile has no NIC")
	}
	n, _, err := c.GetNetwork(network)
	if err != nil {
		return nil, fmt.Errorf("cannot get network %q: %w", network, err)
	}
	ip, _, err := net.ParseCIDR(n.Config["ipv4.address"])
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("network %q has no IPv4 address (ipv4.address=%q)", network, n.Config["ipv4.address"])
	}
	return ip, nil
}

// ServeOnBridge starts an HTTP server for handler on the bridge IP (on a free port), closed
// when the test ends, and returns its URL, such as "http://10.99.0.1:38123". Containers can
// reach it; a server on 127.0.0.1 they could not.
func ServeOnBridge(t testing.TB, c lxd.InstanceServer, handler http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(BridgeIP(t, c).String(), "0"))
	if err != nil {
		t.Fatalf("cannot listen on the LXD bridge: %v", err)
	}
	srv := httptest.NewUnstartedServer(handler)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// Launch creates an instance from image (an alias) with config, starts it, and waits until
// it can exec commands. The instance is not deleted here: name it with Prefix's prefix.
func Launch(t testing.TB, c lxd.InstanceServer, name, image string, config map[string]string) {
	t.Helper()
	Create(t, c, name, image, config)
	Start(t, c, name)
	WaitExec(t, c, name, 30*time.Second)
}

// Create creates (but does not start) a container from image (an alias).
func Create(t testing.TB, c lxd.InstanceServer, name, image string, config map[string]string) {
	t.Helper()
	op, err := c.CreateInstance(api.InstancesPost{
		Name:        name,
		Type:        api.InstanceTypeContainer,
		Source:      api.InstanceSource{Type: "image", Alias: image},
		InstancePut: api.InstancePut{Config: config},
	})
	if err == nil {
		err = WaitOp(op)
	}
	if err != nil {
		t.Fatalf("cannot create instance %q from %q: %v", name, image, err)
	}
}

// Start starts an instance.
func Start(t testing.TB, c lxd.InstanceServer, name string) {
	t.Helper()
	op, err := c.UpdateInstanceState(name, api.InstanceStatePut{Action: "start", Timeout: -1}, "")
	if err == nil {
		err = WaitOp(op)
	}
	if err != nil {
		t.Fatalf("cannot start instance %q: %v", name, err)
	}
}

// ExecResult is what a command run in an instance did.
type ExecResult struct {
	Stdout, Stderr string
	ExitCode       int
}

// Exec runs cmd in the instance and returns its output and exit code; it fails the test if
// the command cannot be run or does not end within OpTimeout.
func Exec(t testing.TB, c lxd.InstanceServer, name string, cmd ...string) ExecResult {
	t.Helper()
	res, err := exec(c, name, cmd)
	if err != nil {
		t.Fatalf("cannot exec %q in %q: %v", cmd, name, err)
	}
	return res
}

func exec(c lxd.InstanceServer, name string, cmd []string) (ExecResult, error) {
	var stdout, stderr bytes.Buffer
	dataDone := make(chan bool)
	op, err := c.ExecInstance(name, api.InstanceExecPost{
		Command:   cmd,
		WaitForWS: true,
		// Not interactive: no terminal, and stderr stays apart from stdout.
		Interactive: false,
	}, &lxd.InstanceExecArgs{Stdout: &stdout, Stderr: &stderr, DataDone: dataDone})
	if err != nil {
		return ExecResult{}, err
	}
	if err := WaitOp(op); err != nil {
		return ExecResult{}, err
	}
	// The output streams can finish a little after the operation does.
	select {
	case <-dataDone:
	case <-time.After(30 * time.Second):
		return ExecResult{}, errors.New("output streams not closed 30 s after the command ended")
	}
	rc, ok := op.Get().Metadata["return"].(float64)
	if !ok {
		return ExecResult{}, fmt.Errorf("no exit code in operation metadata %v", op.Get().Metadata)
	}
	return ExecResult{Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: int(rc)}, nil
}

// WaitExec waits, for at most timeout, until the instance runs a command.
func WaitExec(t testing.TB, c lxd.InstanceServer, name string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		res, err := exec(c, name, []string{"true"})
		if err == nil && res.ExitCode == 0 {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("instance %q cannot exec after %v: %v %+v", name, timeout, err, res)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitIPv4 waits, for at most timeout, until eth0 of the instance has an IPv4 address (its
// DHCP lease), and returns it.
func WaitIPv4(t testing.TB, c lxd.InstanceServer, name string, timeout time.Duration) net.IP {
	t.Helper()
	deadline := time.After(timeout)
	for {
		state, _, err := c.GetInstanceState(name)
		if err != nil {
			t.Fatalf("cannot get state of %q: %v", name, err)
		}
		for _, a := range state.Network["eth0"].Addresses {
			if a.Family == "inet" {
				return net.ParseIP(a.Address)
			}
		}
		select {
		case <-deadline:
			t.Fatalf("instance %q has no IPv4 address on eth0 after %v", name, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WaitStatus waits, for at most timeout, until LXD reports the instance in status (such as
// api.Stopped), and fails the test otherwise.
func WaitStatus(t testing.TB, c lxd.InstanceServer, name string, status api.StatusCode, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		state, _, err := c.GetInstanceState(name)
		if err != nil {
			t.Fatalf("cannot get state of %q: %v", name, err)
		}
		if state.StatusCode == status {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("instance %q is %s, not %s, after %v", name, state.Status, status, timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// PushFile writes content to path in the instance (running or stopped), owned by root, with
// the given mode, creating no directories.
func PushFile(t testing.TB, c lxd.InstanceServer, name, path string, content []byte, mode os.FileMode) {
	t.Helper()
	err := c.CreateInstanceFile(name, path, lxd.InstanceFileArgs{
		Content:   bytes.NewReader(content),
		Mode:      int(mode.Perm()),
		Type:      "file",
		WriteMode: "overwrite",
	})
	if err != nil {
		t.Fatalf("cannot push %s to %q: %v", filepath.Clean(path), name, err)
	}
}

// PullFile reads path from the instance (running or stopped).
func PullFile(t testing.TB, c lxd.InstanceServer, name, path string) []byte {
	t.Helper()
	r, _, err := c.GetInstanceFile(name, path)
	if err != nil {
		t.Fatalf("cannot pull %s from %q: %v", path, name, err)
	}
	defer r.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		t.Fatalf("cannot read %s from %q: %v", path, name, err)
	}
	return buf.Bytes()
}
