// Package api is the github-runner-manager service's HTTP API on its unix
// socket: the messages, and the client the charm's hooks and actions use. The
// charm never reconciles itself; it asks the one process that owns the
// runners, so hooks return in milliseconds. It is apart from package service
// so the charm's dispatch binary links the client, not the service.
package api

import "time"

// Paths of the API.
const (
	PathHealth             = "/health"
	PathRunners            = "/runners"
	PathReconcile          = "/reconcile"
	PathFlush              = "/flush" // ?busy=true|false&replace=true|false
	PathUpdateDependencies = "/update-dependencies"
	// PathTeardown removes what the cloud holds for the unit besides its
	// runners, once none is left: the unit is going away.
	PathTeardown = "/teardown"
	PathMetrics  = "/metrics"
)

// SocketName is the manager's socket file inside the unit's state directory.
const SocketName = "manager.socket"

// RunnerInfo is one runner as check-runners shows it.
type RunnerInfo struct {
	Name  string `json:"name"`
	State string `json:"state"` // creating, idle, busy, offline, …
}

// RunnersReport is the manager's view of this unit's runners.
type RunnersReport struct {
	Expected int          `json:"expected"`
	Online   int          `json:"online"` // idle and busy
	Busy     int          `json:"busy"`
	Offline  int          `json:"offline"`
	Unknown  int          `json:"unknown"` // instances GitHub does not (yet) list
	Runners  []RunnerInfo `json:"runners"`
	// Problem is a plain sentence saying what stops the manager from doing
	// its work (a bad token, a rate limit until a time, LXD unreachable), or "".
	Problem string `json:"problem,omitempty"`
	// Note is what the operator should know that stops nothing (runner
	// starts are slow on LXD's dir storage driver, and why), or "".
	Note string `json:"note,omitempty"`
	// Blocking: the problem needs the operator (credentials, permissions,
	// path); otherwise it should clear with time.
	Blocking bool `json:"blocking,omitempty"`
	// AsOf is when the view was read: the last completed cycle's snapshot.
	// Zero while the first cycle runs.
	AsOf time.Time `json:"as-of,omitzero"`
	// PreparingSince is when the runner image preparation in progress (a
	// build can take half an hour) started; zero when none has run for
	// long.
	PreparingSince time.Time `json:"preparing-since,omitzero"`
	// Preparing is what that preparation is doing, when the cloud can
	// tell ("downloading base image ubuntu:24.04: rootfs: 42% (3.2MB/s)").
	Preparing string `json:"preparing,omitempty"`
	// OnDemand: the unit's runners are a scale set's, and it scales on
	// demand between Expected (the base) and Max (0: no cap). Desired is
	// how many runners it wants now: the base plus the jobs GitHub has
	// assigned it, up to Max.
	OnDemand bool `json:"on-demand,omitempty"`
	Desired  int  `json:"desired,omitempty"`
	Max      int  `json:"max,omitempty"`
	// PythonCharm is how many runners Canonical's Python charm left, and
	// this unit took over, are still to remove (after `juju refresh
	// --switch`); PythonCharmBusy of them run a job, which they finish.
	PythonCharm     int `json:"python-charm,omitempty"`
	PythonCharmBusy int `json:"python-charm-busy,omitempty"`
}

// ReconcileResult is the outcome of one reconcile cycle.
type ReconcileResult struct {
	Delta int `json:"delta"` // runners created minus runners removed
}

// FlushResult is the outcome of a flush.
type FlushResult struct {
	Removed int `json:"removed"`
}

// UpdateResult is the outcome of a dependency check.
type UpdateResult struct {
	Updated       bool   `json:"updated"`
	RunnerVersion string `json:"runner-version"`
}

// TeardownResult is the outcome of a teardown.
type TeardownResult struct{}

// ErrorBody is what the API answers with any non-2xx status.
type ErrorBody struct {
	Error string `json:"error"`
}
