// Package cloud is the small interface every cloud (LXD, OpenStack)
// implements for the runner manager, and the instance it reports.
package cloud

import (
	"context"
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
