// Package cloud is the small interface every cloud (LXD, OpenStack)
// implements for the runner manager, and the instance it reports.
package cloud

import (
	"context"
	"time"
)

// Status is an instance's condition as the manager needs it.
type Status string

const (
	Building Status = "building" // being created or booting
	Running  Status = "running"
	Stopped  Status = "stopped" // an ephemeral runner powers off after its job
	Error    Status = "error"   // the cloud gave up on it
)

// Instance is one runner's machine, rebuilt from the cloud's own metadata
// (see runner.Meta*), so a fresh manager needs no database.
type Instance struct {
	Name      string
	RunnerID  int64 // the GitHub runner id it was created for; 0 if unknown
	CreatedAt time.Time
	Status    Status
}

// CreateRequest is one runner to start.
type CreateRequest struct {
	Name     string
	RunnerID int64
	// JITConfig is the runner's just-in-time configuration: a secret, which
	// a cloud hands to the instance privately (a 0600 file, a config drive)
	// and never puts in metadata, argv or logs.
	JITConfig string
}

// Cloud runs runner instances.
type Cloud interface {
	// Instances lists the instances whose names carry prefix.
	Instances(ctx context.Context, prefix string) ([]Instance, error)
	// Create starts an instance. On failure it leaves nothing behind.
	Create(ctx context.Context, req CreateRequest) error
	// Delete removes an instance and everything made for it; an instance
	// that is already gone is not an error.
	Delete(ctx context.Context, name string) error
}
