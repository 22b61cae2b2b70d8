package lxd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/lxd/lxdsocket"
)

// daemon is what the runner lifecycle and the image build need of LXD: the
// consumer-side view of the client, narrow enough to read at a glance and
// to wrap in tests that make one step fail.
//
// Every method bounds its own work with a timeout on top of ctx, and
// returns errors classified by explain.
type daemon interface {
	// Instances lists every instance of the project with its config.
	Instances(ctx context.Context) ([]api.Instance, error)
	// Instance returns one instance with its config; ErrNotFound if none.
	Instance(ctx context.Context, name string) (*api.Instance, error)
	// CreateInstance creates (does not start) an instance.
	CreateInstance(ctx context.Context, req api.InstancesPost) error
	// SetState starts or stops an instance ("start", "stop").
	SetState(ctx context.Context, name, action string, force bool) error
	// DeleteInstance deletes a stopped instance.
	DeleteInstance(ctx context.Context, name string) error
	// PushFile writes a file into an instance (a stopped container too).
	PushFile(ctx context.Context, instance string, file instanceFile) error
	// PullFile reads a file from an instance; ErrNotFound if it is absent.
	PullFile(ctx context.Context, instance, path string) ([]byte, error)
	// Exec runs argv in a running instance and waits for it to end.
	Exec(ctx context.Context, instance string, argv []string, env map[string]string) (execResult, error)
	// ImageByAlias returns the image an alias points at; ErrNotFound if none.
	ImageByAlias(ctx context.Context, alias string) (*api.Image, error)
	// Publish makes an image of a stopped instance and returns its fingerprint.
	Publish(ctx context.Context, instance string, properties map[string]string) (string, error)
	// SetAlias points alias at fingerprint, creating or moving it.
	SetAlias(ctx context.Context, alias, fingerprint string) error
	// Images lists the project's images.
	Images(ctx context.Context) ([]api.Image, error)
	// DeleteImage deletes an image; one already gone is not an error.
	DeleteImage(ctx context.Context, fingerprint string) error
}

// instanceFile is one file (or directory) to write into an instance.
type instanceFile struct {
	Path    string
	Content []byte
	From    io.ReadSeeker // instead of Content: a big file, streamed
	Mode    int           // 0o600, 0o755, …
	UID     int64
	GID     int64
	Dir     bool // create a directory instead of a file
}

type execResult struct {
	Code           int
	Stdout, Stderr string
}

// Timeouts of single LXD calls. They bound what ctx leaves open: a wedged
// daemon must fail a call, not hang the manager's cycle.
const (
	apiTimeout     = 1 * time.Minute  // reads, creates, config changes
	stateTimeout   = 2 * time.Minute  // start, stop (a graceful stop waits for the guest)
	publishTimeout = 20 * time.Minute // packing a real distro's rootfs takes minutes
	execTimeout    = 30 * time.Minute // the longest exec is the image install
)

// Errors LXD's failures are classified into; test them with errors.Is.
var (
	ErrUnreachable   = errors.New("cannot reach the LXD daemon (is it installed and running?)")
	ErrNotFound      = errors.New("not found in LXD")
	ErrImageNotFound = cloud.NewOperatorError("image not found in LXD") // the operator's base-image

	ErrNoSpace  = errors.New("LXD is out of disk space")
	ErrNoMemory = errors.New("LXD is out of memory")
)

// lxdError is an LXD failure with its class: Error reads "<class>: <LXD's
// words>", and errors.Is finds both the class and the original.
type lxdError struct {
	class error
	err   error
}

func (e *lxdError) Error() string   { return e.class.Error() + ": " + e.err.Error() }
func (e *lxdError) Unwrap() []error { return []error{e.class, e.err} }

// explain classifies err by what an operator has to do about it.
func explain(err error) error {
	if err == nil {
		return nil
	}
	var classified *lxdError
	if errors.As(err, &classified) {
		return err
	}
	msg := strings.ToLower(err.Error())
	var class error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT) && isDialError(err),
		strings.Contains(msg, "connection refused"), strings.Contains(msg, "connect: no such file or directory"):
		class = ErrUnreachable
	case errors.Is(err, syscall.ENOSPC), strings.Contains(msg, "no space left on device"), strings.Contains(msg, "disk quota exceeded"):
		class = ErrNoSpace
	case errors.Is(err, syscall.ENOMEM), strings.Contains(msg, "cannot allocate memory"), strings.Contains(msg, "out of memory"):
		class = ErrNoMemory
	case strings.Contains(msg, "image") && (strings.Contains(msg, "not found") || strings.Contains(msg, "not provided")):
		class = ErrImageNotFound
	case api.StatusErrorCheck(err, http.StatusNotFound), strings.Contains(msg, "not found"):
		class = ErrNotFound
	default:
		return err
	}
	return &lxdError{class: class, err: err}
}

func isDialError(err error) bool {
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial"
}

// findSocket finds the daemon's socket (see lxdsocket.Find).
func findSocket(configured string) (string, error) {
	path, err := lxdsocket.Find(configured)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return path, nil
}

// lxdDaemon is daemon over the real client, plus the set-up calls
// (profiles, pools, networks, ACLs) that only initialise and applyDenylist
// make.
type lxdDaemon struct {
	server  lxdclient.InstanceServer
	project string
	socket  string
}

// connect reaches the daemon at socket ("" to look for it) and checks that
// it answers.
func connect(ctx context.Context, socket, project string) (*lxdDaemon, error) {
	path, err := findSocket(socket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	type result struct {
		server lxdclient.InstanceServer
		err    error
	}
	done := make(chan result, 1)
	go func() {
		// The connection's context would stay the one of every later
		// call; calls get their own through client().
		s, err := lxdclient.ConnectLXDUnixWithContext(context.Background(), path, &lxdclient.ConnectionArgs{UserAgent: "github-runner-manager"})
		done <- result{s, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("cannot connect to LXD at %s: %w", path, explainConnect(r.err))
		}
		if project == "" {
			project = api.ProjectDefaultName
		}
		return &lxdDaemon{server: r.server, project: project, socket: path}, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("cannot connect to LXD at %s: %w: no answer within %v", path, ErrUnreachable, apiTimeout)
	}
}

func explainConnect(err error) error {
	if e := explain(err); e != err {
		return e
	}
	// Any failure to get the server's description means no usable daemon.
	return &lxdError{class: ErrUnreachable, err: err}
}

// client returns a client whose requests end with ctx. The shared client's
// WithContext changes the client it is called on, so it is only called on
// the fresh copy UseProject returns.
func (d *lxdDaemon) client(ctx context.Context) lxdclient.InstanceServer {
	s := d.server.UseProject(d.project)
	if p, ok := s.(*lxdclient.ProtocolLXD); ok {
		return p.WithContext(ctx)
	}
	return s
}

// call runs f, which has no context of its own (some client calls build
// requests without one), and gives up when ctx ends.
func call[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, explain(r.err)
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("LXD did not answer in time: %w", ctx.Err())
	}
}

// wait waits for an operation and cancels it if ctx ends first.
func wait(ctx context.Context, op lxdclient.Operation) error {
	err := op.WaitContext(ctx)
	if err != nil && ctx.Err() != nil {
		_ = op.Cancel() // most operations cannot be cancelled; try anyway
		return fmt.Errorf("LXD operation did not finish in time: %w", ctx.Err())
	}
	return explain(err)
}

func (d *lxdDaemon) Instances(ctx context.Context) ([]api.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	return call(ctx, func() ([]api.Instance, error) { return c.GetInstances(api.InstanceTypeAny) })
}

func (d *lxdDaemon) Instance(ctx context.Context, name string) (*api.Instance, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	return call(ctx, func() (*api.Instance, error) {
		inst, _, err := c.GetInstance(name)
		return inst, err
	})
}

func (d *lxdDaemon) CreateInstance(ctx context.Context, req api.InstancesPost) error {
	// Creating unpacks the image: seconds for a small one, minutes for a
	// big one on a slow disk.
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	c := d.client(ctx)
	op, err := call(ctx, func() (lxdclient.Operation, error) { return c.CreateInstance(req) })
	if err != nil {
		return err
	}
	// A create from an image server downloads the image first: its
	// progress is the status's (see withOperationProgress).
	defer watchOperation(ctx, c, op.Get().ID)()
	return wait(ctx, op)
}

func (d *lxdDaemon) SetState(ctx context.Context, name, action string, force bool) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c := d.client(ctx)
	// LXD's own timeout for a graceful stop, after which it fails the
	// operation; ours is the backstop.
	state := api.InstanceStatePut{Action: action, Force: force, Timeout: int(stateTimeout/time.Second) - 10}
	op, err := call(ctx, func() (lxdclient.Operation, error) { return c.UpdateInstanceState(name, state, "") })
	if err != nil {
		return err
	}
	return wait(ctx, op)
}

func (d *lxdDaemon) DeleteInstance(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c := d.client(ctx)
	op, err := call(ctx, func() (lxdclient.Operation, error) { return c.DeleteInstance(name) })
	if err != nil {
		return err
	}
	return wait(ctx, op)
}

func (d *lxdDaemon) PushFile(ctx context.Context, instance string, f instanceFile) error {
	timeout := apiTimeout
	if f.From != nil {
		timeout = publishTimeout // hundreds of megabytes, for a real runner
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := d.client(ctx)
	args := lxdclient.InstanceFileArgs{UID: f.UID, GID: f.GID, Mode: f.Mode, Type: "file", WriteMode: "overwrite"}
	switch {
	case f.Dir:
		args.Type = "directory"
	case f.From != nil:
		args.Content = f.From
	default:
		args.Content = bytes.NewReader(f.Content)
	}
	_, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.CreateInstanceFile(instance, f.Path, args) })
	return err
}

func (d *lxdDaemon) PullFile(ctx context.Context, instance, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	return call(ctx, func() ([]byte, error) {
		r, _, err := c.GetInstanceFile(instance, path)
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(io.LimitReader(r, 1<<20))
	})
}

func (d *lxdDaemon) Exec(ctx context.Context, instance string, argv []string, env map[string]string) (execResult, error) {
	ctx, cancel := context.WithTimeout(ctx, execTimeout)
	defer cancel()
	c := d.client(ctx)
	var stdout, stderr bytes.Buffer
	dataDone := make(chan bool)
	req := api.InstanceExecPost{Command: argv, Environment: env, WaitForWS: true}
	op, err := call(ctx, func() (lxdclient.Operation, error) {
		return c.ExecInstance(instance, req, &lxdclient.InstanceExecArgs{Stdin: bytes.NewReader(nil), Stdout: &stdout, Stderr: &stderr, DataDone: dataDone})
	})
	if err != nil {
		return execResult{}, err
	}
	if err := wait(ctx, op); err != nil {
		return execResult{}, err
	}
	select {
	case <-dataDone:
	case <-ctx.Done():
		return execResult{}, fmt.Errorf("output of exec did not end in time: %w", ctx.Err())
	}
	code, ok := op.Get().Metadata["return"].(float64)
	if !ok {
		return execResult{}, errors.New("LXD reported no exit code for exec")
	}
	return execResult{Code: int(code), Stdout: stdout.String(), Stderr: stderr.String()}, nil
}

func (d *lxdDaemon) ImageByAlias(ctx context.Context, alias string) (*api.Image, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	return call(ctx, func() (*api.Image, error) {
		entry, _, err := c.GetImageAlias(alias)
		if err != nil {
			if api.StatusErrorCheck(err, http.StatusNotFound) {
				return nil, &lxdError{class: ErrNotFound, err: err}
			}
			return nil, err
		}
		image, _, err := c.GetImage(entry.Target)
		if err != nil && api.StatusErrorCheck(err, http.StatusNotFound) {
			return nil, &lxdError{class: ErrNotFound, err: err}
		}
		return image, err
	})
}

func (d *lxdDaemon) Publish(ctx context.Context, instance string, properties map[string]string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	c := d.client(ctx)
	req := api.ImagesPost{
		ImagePut: api.ImagePut{Properties: properties},
		Source:   &api.ImagesPostSource{Type: "instance", Name: instance},
	}
	op, err := call(ctx, func() (lxdclient.Operation, error) { return c.CreateImage(req, nil) })
	if err != nil {
		return "", err
	}
	if err := wait(ctx, op); err != nil {
		return "", err
	}
	fingerprint, _ := op.Get().Metadata["fingerprint"].(string)
	if fingerprint == "" {
		return "", errors.New("LXD published the image but reported no fingerprint")
	}
	return fingerprint, nil
}

func (d *lxdDaemon) SetAlias(ctx context.Context, alias, fingerprint string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) {
		_, etag, err := c.GetImageAlias(alias)
		if api.StatusErrorCheck(err, http.StatusNotFound) {
			return struct{}{}, c.CreateImageAlias(api.ImageAliasesPost{ImageAliasesEntry: api.ImageAliasesEntry{
				Name: alias, Target: fingerprint,
			}})
		}
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, c.UpdateImageAlias(alias, api.ImageAliasesEntryPut{Target: fingerprint}, etag)
	})
	return err
}

func (d *lxdDaemon) Images(ctx context.Context) ([]api.Image, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	return call(ctx, func() ([]api.Image, error) { return c.GetImages() })
}

func (d *lxdDaemon) DeleteImage(ctx context.Context, fingerprint string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	op, err := call(ctx, func() (lxdclient.Operation, error) { return c.DeleteImage(fingerprint) })
	if err == nil {
		err = wait(ctx, op)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrImageNotFound) {
		return nil
	}
	return err
}
