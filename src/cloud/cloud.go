// Package cloud is the contract every cloud (LXD, OpenStack) keeps with
// the runner manager: the engine's runners (Cloud), the whole cloud the
// service runs (Provider), the instance it reports, and the mark of an error
// only the operator can fix (OperatorError).
package cloud

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/canonical/github-runner-charm/src/runner"
)

// Status is an instance's condition as the manager needs it.
type Status string

const (
	Building Status = "building" // being created or booting
	Running  Status = "running"
	// Stopped is the one final status: an ephemeral runner powers its
	// instance off after its job.
	Stopped Status = "stopped"
	// Unresponsive: frozen, paused, suspended, or in an error or unknown
	// state the cloud may recover from. Its runner may still be running a
	// job, so it is not a reason to delete the instance by itself.
	Unresponsive Status = "unresponsive"
)

// Instance is one runner's machine, rebuilt from the cloud's own metadata
// (see runner.Meta*), so a fresh manager needs no database.
type Instance struct {
	Name      string
	RunnerID  int64 // the GitHub runner id it was created for; 0 if unknown
	CreatedAt time.Time
	Status    Status
	// Owner is who the instance's metadata says it belongs to; the engine
	// acts only on instances whose name and owner are both its own.
	Owner runner.Owner
	// Scope is where its runner was registered; zero for instances made
	// before scopes were recorded.
	Scope runner.Scope
}

// CreateRequest is one runner to start.
type CreateRequest struct {
	Name     string
	RunnerID int64
	Scope    runner.Scope // where RunnerID is registered
	// JITConfig is the runner's just-in-time configuration: a secret, which
	// a cloud hands to the instance privately (a 0600 file, a config drive)
	// and never puts in metadata, argv or logs.
	JITConfig string
	// Environment is this runner's own variables for its jobs, beside
	// the ones every runner has (the proxies): the tmate server the
	// engine chose for it (see manager.Settings.Environments). A cloud
	// writes them where the start script reads its environment. No
	// secrets.
	Environment map[string]string
}

// Cloud runs runner instances of one deployment (a runner.Identity, which
// each cloud is configured with).
type Cloud interface {
	// Instances lists the deployment's instances: those whose name is of
	// its prefix or legacy prefix and whose metadata names it as owner.
	Instances(ctx context.Context) ([]Instance, error)
	// Create starts an instance. On failure it leaves nothing behind.
	Create(ctx context.Context, req CreateRequest) error
	// Delete removes an instance and everything made for it; an instance
	// that is already gone is not an error.
	Delete(ctx context.Context, name string) error
}

// FetchRunner returns the verified runner application tarball and its
// version (downloaded, or from cache when unchanged).
type FetchRunner func(ctx context.Context) (tarballPath, version string, err error)

// RunnerSource is where the runner application a FetchRunner returned
// came from, for a cloud whose image build downloads it again in the
// cloud (OpenStack's builder server) and verifies it by SHA256.
type RunnerSource struct {
	URL string
	// Token is GitHub's temporary download token for URL ("" for none): a
	// secret, which only the builder's user-data carries.
	Token   string
	SHA256  string // lower-case hex, as GitHub lists it
	Version string
	Arch    string // GitHub's name: "x64", "arm64"
}

// RunnerSourceUser is implemented by clouds that build their runner image
// from a download of their own (OpenStack): the manager's FetchRunner
// tells them, before it returns, where the application it verified came
// from.
type RunnerSourceUser interface {
	SetRunnerSource(RunnerSource)
}

// Provider is a whole cloud as the service runs it: the engine's runners,
// the runner image they start from, and what the deployment made there
// besides them. A Provider connects itself, on first use and again after a
// failed connection, so an unreachable daemon or API at start is a problem
// its calls report, not a process that cannot start.
type Provider interface {
	Cloud
	// Prepare gets the cloud ready to start runners: LXD initialises the
	// daemon if nobody did, applies the denylist and builds the runner
	// image from the runner application (fetch); OpenStack checks that its
	// image, flavor and network exist (the runner is in the image; fetch is
	// not called). It is cheap when nothing changed, and reports whether
	// the runner image changed since the Prepare before (idle runners are
	// then replaced).
	Prepare(ctx context.Context, fetch FetchRunner) (changed bool, err error)
	// Teardown removes everything the deployment made in the cloud
	// besides its instances (LXD: image builders, runner images and their
	// aliases, the denylist ACL; OpenStack: the security group), for a
	// deployment that goes away. What another deployment's metadata names
	// is never touched. It refuses while an instance of the deployment is
	// left, and is a no-op when nothing is left.
	Teardown(ctx context.Context) error
}

// OperatorError marks a problem only the operator can fix (an image,
// flavor or network that does not exist, refused credentials, a clouds.yaml
// that cannot be read, an untrusted certificate): the unit is Blocked, not
// waiting for a retry to clear it. Clouds make their sentinel errors of it,
// so errors.Is still finds the sentinel and NeedsOperator the mark.
type OperatorError struct{ Err error }

func (e *OperatorError) Error() string { return e.Err.Error() }
func (e *OperatorError) Unwrap() error { return e.Err }

// NeedsOperator tells whether err, or an error it wraps, is an OperatorError.
func NeedsOperator(err error) bool {
	var marked *OperatorError
	return errors.As(err, &marked)
}

// NewOperatorError is a sentinel error of text that needs the operator.
func NewOperatorError(text string) error { return &OperatorError{Err: errors.New(text)} }

// Watcher is implemented by clouds that can tell when one of the
// deployment's instances stops (an ephemeral runner powers off after its
// job), so a finished runner is replaced at once rather than at the next
// reconcile interval. LXD reads its event stream; OpenStack polls the
// deployment's servers cheaply.
type Watcher interface {
	// Watch calls changed, from any goroutine, soon after an instance of
	// the deployment stopped or went away; it may call it for other
	// changes too (after a reconnection, when it could have missed one),
	// so changed must be cheap and non-blocking. Watch blocks until ctx
	// ends, reconnecting by itself with a bounded backoff, and returns only
	// ctx's error.
	Watch(ctx context.Context, changed func()) error
}

// Noter is implemented by clouds that can have something to tell the
// operator that stops nothing (LXD: runner starts are slow on a dir
// storage pool, and why). The status and check-runners show it.
type Noter interface {
	// Note is that, in a sentence, or "".
	Note() string
}

// ProgressReporter is implemented by clouds whose Prepare can say what it
// is doing while it takes long (LXD: downloading the base image, with
// LXD's progress), for the unit's status.
type ProgressReporter interface {
	// PrepareProgress is that, in words, or "" (when no Prepare runs).
	PrepareProgress() string
}

// BuildObserver is the ImageBuilder half a cloud embeds: it keeps what
// OnImageBuild set and tells it of each build (Built).
type BuildObserver struct {
	mu      sync.Mutex
	observe func(time.Duration, error)
}

// OnImageBuild implements ImageBuilder.
func (b *BuildObserver) OnImageBuild(observe func(time.Duration, error)) {
	b.mu.Lock()
	b.observe = observe
	b.mu.Unlock()
}

// Built tells OnImageBuild's observer of a build, but not of one cut short
// (a drain, the service's stop): that is no failure of the build.
func (b *BuildObserver) Built(ctx context.Context, d time.Duration, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	b.mu.Lock()
	observe := b.observe
	b.mu.Unlock()
	if observe != nil {
		observe(d, err)
	}
}

// ImageBuilder is implemented by clouds that build the runner image
// themselves (LXD; OpenStack with openstack-base-image), so the manager can count the builds and time them.
type ImageBuilder interface {
	// OnImageBuild sets what is called after each image build, with its
	// duration and its error (nil when it succeeded). Set it before the
	// first Prepare.
	OnImageBuild(observe func(time.Duration, error))
}
