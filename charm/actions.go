package charm

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// handleAction runs one action. Failures the operator should read are
// reported with action-fail, not as a process error: Juju would only show
// "exit status 1".
func (c *Charm) handleAction(ctx context.Context, name string) error {
	run, ok := map[string]func(context.Context, map[string]any) (map[string]string, error){
		"check-runners":       c.checkRunners,
		"reconcile-runners":   c.reconcileRunners,
		"flush-runners":       c.flushRunners,
		"update-dependencies": c.updateDependencies,
	}[name]
	if !ok {
		return c.Tools.ActionFail(ctx, fmt.Sprintf("this charm has no action %q", name))
	}
	params, err := c.Tools.ActionGet(ctx)
	if err != nil {
		return err
	}
	// Whatever makes the unit Blocked fails the action with its message.
	if status, message, err := c.currentStatus(ctx); err != nil {
		return err
	} else if status == Blocked {
		return c.Tools.ActionFail(ctx, message)
	}
	results, err := run(ctx, params)
	if err != nil {
		c.Log.Warn("action failed", "action", name, "error", err)
		return c.Tools.ActionFail(ctx, err.Error())
	}
	return c.Tools.ActionSet(ctx, results)
}

func (c *Charm) checkRunners(ctx context.Context, _ map[string]any) (map[string]string, error) {
	report, err := c.Manager.Runners(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot check runners: %w", err)
	}
	names := make([]string, 0, len(report.Runners))
	for _, r := range report.Runners {
		names = append(names, r.Name)
	}
	results := map[string]string{
		"online":  strconv.Itoa(report.Online),
		"busy":    strconv.Itoa(report.Busy),
		"offline": strconv.Itoa(report.Offline),
		"unknown": strconv.Itoa(report.Unknown),
		"runners": strings.Join(names, ","),
		// The view is the last completed cycle's, never a wait for one.
		"as-of": asOf(report.AsOf),
	}
	if report.Note != "" {
		results["note"] = report.Note // slow starts on LXD's dir pool
	}
	return results, nil
}

func asOf(t time.Time) string {
	if t.IsZero() {
		return "the first reconcile cycle has not completed yet"
	}
	return t.UTC().Format(time.RFC3339)
}

// cycleNote is what a reconcile or flush logs before it waits: the cycle
// it asks for runs after the one in progress, if any.
const cycleNote = "asking the runner manager for a cycle; it starts once any cycle in progress ends (at most 10 minutes in all)"

func (c *Charm) reconcileRunners(ctx context.Context, _ map[string]any) (map[string]string, error) {
	c.Tools.ActionLog(ctx, cycleNote)
	result, err := c.Manager.Reconcile(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot reconcile runners: %w", err)
	}
	return map[string]string{"delta": strconv.Itoa(result.Delta)}, nil
}

func (c *Charm) flushRunners(ctx context.Context, params map[string]any) (map[string]string, error) {
	busy, err := boolParam(params, "flush-busy")
	if err != nil {
		return nil, err
	}
	c.Tools.ActionLog(ctx, cycleNote)
	result, err := c.Manager.Flush(ctx, busy)
	if err != nil {
		return nil, fmt.Errorf("cannot flush runners: %w", err)
	}
	return map[string]string{"removed": strconv.Itoa(result.Removed)}, nil
}

func (c *Charm) updateDependencies(ctx context.Context, _ map[string]any) (map[string]string, error) {
	result, err := c.Manager.UpdateDependencies(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot update dependencies: %w", err)
	}
	return map[string]string{
		"updated":        strconv.FormatBool(result.Updated),
		"runner-version": result.RunnerVersion,
	}, nil
}

// boolParam reads a boolean parameter; Juju has already inserted the
// schema's default, so a missing one means false.
func boolParam(params map[string]any, key string) (bool, error) {
	switch v := params[key].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	default:
		return false, fmt.Errorf("parameter %s must be true or false", key)
	}
}
