package lxd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
)

var _ cloud.Watcher = (*Cloud)(nil)

// Backoff of the event stream's reconnections: a daemon restarting (a snap
// refresh) is back within seconds, one that is gone is retried every
// watchBackoffMax.
const (
	watchBackoffMin = time.Second
	watchBackoffMax = 30 * time.Second
)

// Watch calls changed soon after one of the unit's runner instances stops:
// an ephemeral runner powering off after its job ("instance-shutdown"), or
// a stop from outside ("instance-stopped"; the unit's own deletes stop
// instances too, which costs one cycle more after a cycle that removed a
// running instance). It reads LXD's event stream of the project; the names
// are filtered by the unit's naming, and the engine checks the owner. The
// stream is reconnected with a bounded backoff when it ends (a daemon
// restart), and changed is called once it is back, for what it may have
// missed meanwhile. It returns ctx's error, once ctx ends.
func (c *Cloud) Watch(ctx context.Context, changed func()) error {
	return c.watch(ctx, changed, nil)
}

// watch is Watch; connected, if set, is called each time the stream is up
// (for tests).
func (c *Cloud) watch(ctx context.Context, changed, connected func()) error {
	backoff := watchBackoffMin
	missed, healthy := false, true
	for {
		up, err := c.watchOnce(ctx, func() {
			if connected != nil {
				connected()
			}
			if missed {
				changed()
			}
			if !healthy {
				c.log.Info("watching LXD's events again")
			}
			missed, healthy = false, true
		}, changed)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if up {
			backoff = watchBackoffMin
		}
		if healthy {
			c.log.Warn("cannot watch LXD's events; finished runners are replaced at the next reconcile until it is back",
				"error", err, "retry-in", backoff)
		} else {
			c.log.Debug("cannot watch LXD's events", "error", err, "retry-in", backoff)
		}
		missed, healthy = true, false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchBackoffMax)
	}
}

// watchOnce follows one connection of the event stream until it ends or
// ctx does; up tells whether it was established (then connected ran).
func (c *Cloud) watchOnce(ctx context.Context, connected, changed func()) (up bool, err error) {
	if err := c.connected(ctx); err != nil {
		return false, err
	}
	if c.setup == nil {
		return false, errors.New("cannot watch LXD's events: no client of the daemon")
	}
	// A copy of the client of its own, so the stream is this watch's
	// websocket and none of the operations' waits.
	server := c.setup.server.UseProject(c.setup.project)
	dialCtx, cancel := context.WithTimeout(ctx, apiTimeout)
	listener, err := call(dialCtx, server.GetEvents)
	cancel()
	if err != nil {
		return false, fmt.Errorf("cannot connect to LXD's event stream: %w", err)
	}
	defer listener.Disconnect()
	if _, err := listener.AddHandler([]string{api.EventTypeLifecycle}, func(e api.Event) {
		if c.ownStopped(e) {
			changed()
		}
	}); err != nil {
		return false, fmt.Errorf("cannot follow LXD's event stream: %w", err)
	}
	connected()
	return true, waitListener(ctx, listener)
}

// waitListener waits for the stream to end, or ctx.
func waitListener(ctx context.Context, listener *lxdclient.EventListener) error {
	ended := make(chan error, 1)
	go func() { ended <- listener.Wait() }()
	select {
	case err := <-ended:
		if err == nil {
			err = errors.New("LXD's event stream ended")
		}
		return fmt.Errorf("lost LXD's event stream: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ownStopped tells whether e says one of the unit's runner instances
// stopped.
func (c *Cloud) ownStopped(e api.Event) bool {
	var lc api.EventLifecycle
	if err := json.Unmarshal(e.Metadata, &lc); err != nil {
		return false
	}
	switch lc.Action {
	case api.EventLifecycleInstanceShutdown, api.EventLifecycleInstanceStopped:
	default:
		return false
	}
	return c.cfg.Identity.Generation(instanceOf(lc)) != runner.NotOurs
}

// instanceOf is the instance a lifecycle event is about: its name, or for
// daemons before the event_lifecycle_name_and_project extension, the last
// part of its source ("/1.0/instances/<name>?project=…").
func instanceOf(lc api.EventLifecycle) string {
	if lc.Name != "" {
		return lc.Name
	}
	u, err := url.Parse(lc.Source)
	if err != nil {
		return ""
	}
	name, ok := strings.CutPrefix(u.Path, "/1.0/instances/")
	if !ok || strings.Contains(name, "/") {
		return ""
	}
	return name
}
