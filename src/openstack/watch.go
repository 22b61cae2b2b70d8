package openstack

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
)

var _ cloud.Watcher = (*Cloud)(nil)

// DefaultWatchInterval is how often Watch lists the unit's servers: one
// Nova request, so a finished runner waits at most this long for its
// replacement instead of a reconcile interval.
const DefaultWatchInterval = 10 * time.Second

// Watch calls changed when, between two of its polls, one of the unit's
// servers went SHUTOFF (a runner powers its server off after its job) or
// ERROR, or went away while it was not off (a server deleted from
// outside). A server the manager deletes once it is off does not count.
// Nova has no event stream a project user can follow, so Watch lists the
// unit's servers every DefaultWatchInterval, with the filter Instances
// uses; a failed poll is retried at the next, which compares with the last
// that succeeded, so nothing is missed across an outage. It returns ctx's
// error, once ctx ends.
func (c *Cloud) Watch(ctx context.Context, changed func()) error {
	return c.watch(ctx, changed, DefaultWatchInterval, nil)
}

// watch is Watch polling every interval; polled, if set, is called after
// each successful poll (for tests).
func (c *Cloud) watch(ctx context.Context, changed func(), interval time.Duration, polled func()) error {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	var last map[string]string // server ID → Nova status; nil until a poll succeeds
	failing, failed := false, false
	for {
		now, err := c.unitServers(ctx, interval)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !failing:
			failed = true
			c.log.Warn("cannot watch the unit's servers; finished runners are replaced at the next reconcile until it works again",
				"error", err, "retry-in", interval)
			failing = true
		case err != nil:
			c.log.Debug("cannot watch the unit's servers", "error", err)
		default:
			if failing {
				c.log.Info("watching the unit's servers again")
				failing = false
			}
			if last == nil && failed {
				// No poll worked since the start, when the first cycle
				// could not work either: a server already off now is
				// news to the loop.
				last = map[string]string{}
			}
			if last != nil && finishedSince(last, now) {
				changed()
			}
			last = now
			if polled != nil {
				polled()
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// unitServers is the Nova status of each of the unit's servers, by ID:
// Instances' list, within one poll's time.
func (c *Cloud) unitServers(ctx context.Context, within time.Duration) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, max(within, apiTimeout))
	defer cancel()
	if err := c.connected(ctx); err != nil {
		return nil, fmt.Errorf("cannot list OpenStack servers: %w", err)
	}
	list, err := c.api.Servers(ctx, "^"+regexp.QuoteMeta(c.cfg.Identity.App+"-"))
	if err != nil {
		return nil, fmt.Errorf("cannot list OpenStack servers: %w", err)
	}
	out := make(map[string]string, len(list))
	for _, srv := range list {
		if c.cfg.Identity.OwnsInstance(srv.Name, ownerOf(srv.Metadata)) {
			out[srv.ID] = srv.Status
		}
	}
	return out, nil
}

// finishedSince tells whether a server is off or in error now that was
// not at the last poll (or was not there yet), or is gone while it was
// not off.
func finishedSince(last, now map[string]string) bool {
	for id, status := range now {
		if before, seen := last[id]; finished(status) && (!seen || !finished(before)) {
			return true
		}
	}
	for id, before := range last {
		if _, there := now[id]; !there && !finished(before) {
			return true
		}
	}
	return false
}

// finished: the server's runner is done (see status), or Nova failed it.
func finished(novaStatus string) bool {
	return status(novaStatus) == cloud.Stopped || novaStatus == "ERROR"
}
