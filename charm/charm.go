// Package charm is the charm's Juju face: it reads the event Juju dispatched,
// validates the configuration, sets the unit's status and answers actions by
// asking the github-runner-manager service. It never manages runners itself.
package charm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/service/api"
)

// Version is the charm's build version, set by the packer with -ldflags.
var Version = "dev"

// DefaultStateRoot holds one directory per unit (two units of different
// applications may share a machine).
const DefaultStateRoot = "/var/lib/github-runner"

// stateRootEnv overrides DefaultStateRoot. Juju never sets it; the hook
// harness does, so tests do not write to /var/lib.
const stateRootEnv = "GITHUB_RUNNER_STATE_ROOT"

// managerTimeout bounds one request to the manager service from a hook or
// action. A reconcile or flush waits for the cycle in progress, which the
// service itself bounds well below this.
const managerTimeout = 10 * time.Minute

// Manager is what hooks and actions ask of the runner manager service.
type Manager interface {
	Runners(ctx context.Context) (api.RunnersReport, error)
	Reconcile(ctx context.Context) (api.ReconcileResult, error)
	Flush(ctx context.Context, busy bool) (api.FlushResult, error)
	Drain(ctx context.Context, busy bool) (api.FlushResult, error)
	UpdateDependencies(ctx context.Context) (api.UpdateResult, error)
	Teardown(ctx context.Context) error
}

// Charm handles one dispatched event.
type Charm struct {
	Tools      *Tools
	Log        *slog.Logger
	Unit       string // "github-runner/0"
	StateDir   string // this unit's directory
	Manager    Manager
	Supervisor *Supervisor
	Getenv     func(string) string
	HasKVM     func() bool
	LXD        *lxdInstaller
}

// Main is the dispatch binary: it handles the event in the environment and
// returns the process exit code.
func Main() int {
	event, err := EventFromEnv(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ERROR", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	charmDir := os.Getenv("JUJU_CHARM_DIR")
	if charmDir == "" {
		charmDir, _ = os.Getwd() // Juju runs dispatch from the charm directory
	}
	c := New(os.Getenv("JUJU_UNIT_NAME"), charmDir, os.Getenv(stateRootEnv))
	if err := c.Handle(ctx, event); err != nil {
		c.Log.Error("cannot handle "+event.String(), "error", err)
		return 1
	}
	return 0
}

// New returns a charm for unit, installed in charmDir, keeping its state
// under stateRoot (the default root when empty).
func New(unit, charmDir, stateRoot string) *Charm {
	tools := &Tools{}
	if stateRoot == "" {
		stateRoot = DefaultStateRoot
	}
	stateDir := filepath.Join(stateRoot, strings.ReplaceAll(unit, "/", "-"))
	return &Charm{
		Tools:      tools,
		Log:        slog.New(newJujuLogHandler(tools, os.Stderr, slog.LevelInfo)),
		Unit:       unit,
		StateDir:   stateDir,
		Manager:    api.NewClient(filepath.Join(stateDir, api.SocketName), managerTimeout),
		Supervisor: &Supervisor{CharmDir: charmDir, StateDir: stateDir, Unit: unit},
		Getenv:     os.Getenv,
		HasKVM:     hostHasKVM,
		LXD:        newLXDInstaller(),
	}
}

// Handle routes one event. An error means Juju should see the hook fail
// (and retry it); invalid configuration is not an error but Blocked status.
func (c *Charm) Handle(ctx context.Context, event Event) error {
	if event.Kind == ActionEvent {
		return c.handleAction(ctx, event.Name)
	}
	switch event.Name {
	case "install", "upgrade-charm":
		if err := c.Tools.ApplicationVersionSet(ctx, Version); err != nil {
			return err
		}
		// After `juju refresh --switch` from the Python charm: its
		// services stop before the manager starts (charm/migrate.go).
		if err := c.migrateFromPythonCharm(ctx); err != nil {
			return err
		}
		return c.configureAndPublish(ctx)
	case "leader-elected", "config-changed", "start", "secret-changed":
		// A secret's new revision is read as config is: configure reads
		// every input (config, secrets, relations) each time.
		return c.configureAndPublish(ctx)
	case "update-status":
		// `juju grant-secret` fires no hook: a secret option's fix (the
		// grant a Blocked unit asked for) is applied here.
		if c.secretFixPending(ctx) {
			return c.configure(ctx)
		}
		// Without systemd nothing restarts a dead Pebble but the charm.
		if _, err := os.Stat(c.Supervisor.ConfigPath()); err == nil {
			if err := c.Supervisor.EnsureRunning(ctx); err != nil {
				return c.Tools.StatusSet(ctx, Maintenance, err.Error())
			}
			// A manager that could not start is tried again: the
			// operator may have fixed what stopped it.
			if !c.Supervisor.Running(ctx) {
				return c.configure(ctx)
			}
			// Another process took the metrics port: choose another,
			// and tell COS.
			if c.metricsPortLost(ctx) {
				return c.configureAndPublish(ctx)
			}
		}
		return c.refreshStatus(ctx)
	case "stop":
		return c.stop(ctx)
	case "remove":
		return c.remove(ctx)
	default:
		if isRelationHook(event.Name) {
			// Relation data is one more input of the configuration
			// (the image, the tmate servers) and of what the charm
			// publishes (cos-agent): every relation hook goes the
			// same way as config-changed.
			return c.configureAndPublish(ctx)
		}
		// Juju dispatches every event, including ones this charm has no
		// use for; they succeed quietly.
		return nil
	}
}

// relationEndpoints are the charm's relations (metadata.yaml).
var relationEndpoints = []string{"cos-agent", "debug-ssh", "image"}

// isRelationHook tells a hook of one of the charm's relations:
// <endpoint>-relation-{created,joined,changed,departed,broken}.
func isRelationHook(hook string) bool {
	for _, endpoint := range relationEndpoints {
		if kind, ok := strings.CutPrefix(hook, endpoint+"-relation-"); ok {
			switch kind {
			case "created", "joined", "changed", "departed", "broken":
				return true
			}
		}
	}
	return false
}

// configureAndPublish configures the manager, then writes what the charm
// publishes to its relations, whatever configure concluded: a Blocked unit
// still tells COS where its metrics are (they say why it is Blocked).
func (c *Charm) configureAndPublish(ctx context.Context) error {
	err := c.configure(ctx)
	if perr := c.publishCOS(ctx); perr != nil {
		c.Log.Warn("cannot write the cos-agent relation data", "error", perr)
		if err == nil {
			err = perr
		}
	}
	return err
}

// readSettings returns the validated settings, or an *InvalidConfigError
// naming every problem, the host's included.
func (c *Charm) readSettings(ctx context.Context) (Settings, error) {
	raw, err := c.Tools.ConfigGet(ctx)
	if err != nil {
		return Settings{}, err
	}
	// The secret options' values, in place of the plain ones they win over.
	if err := resolveSecrets(ctx, c.Tools, secretGrantee(c.Unit), raw); err != nil {
		return Settings{}, err
	}
	s, err := ParseSettings(raw)
	// The image relation's image and tags (OpenStack), or its problem.
	if s, err = c.withImageRelation(ctx, raw, s, err); err != nil && !errors.As(err, new(*InvalidConfigError)) {
		return Settings{}, err
	}
	// The debug-ssh relation's tmate servers (a unit's bad data is left
	// out, never a problem: see tmateServers).
	tmate, terr := c.tmateServers(ctx)
	if terr != nil {
		return Settings{}, terr
	}
	s.TmateServers = tmate
	var invalid *InvalidConfigError
	if err != nil && !errors.As(err, &invalid) {
		return Settings{}, err
	}
	if invalid == nil {
		invalid = &InvalidConfigError{}
	}
	if err == nil {
		invalid.Problems = append(invalid.Problems, c.hostProblems(s)...)
	}
	if len(invalid.Problems) > 0 {
		return Settings{}, invalid
	}
	return s, nil
}

// configure brings the manager in line with the configuration: settings
// that change who runners register with, or how they look, first drain the
// idle runners made with the old ones.
func (c *Charm) configure(ctx context.Context) error {
	s, err := c.readSettings(ctx)
	var invalid *InvalidConfigError
	if waiting := (*WaitingError)(nil); errors.As(err, &waiting) {
		// As when Blocked, the running manager keeps its configuration.
		return c.Tools.StatusSet(ctx, Waiting, waiting.Error())
	}
	if errors.As(err, &invalid) {
		// The running manager keeps its last good configuration.
		return c.Tools.StatusSet(ctx, Blocked, invalid.Error())
	} else if err != nil {
		return err
	}
	next, err := managerConfig(s, c.Getenv("JUJU_MODEL_UUID"), c.Unit, c.StateDir, modelProxy(c.Getenv))
	if err != nil {
		return err
	}
	c.setObservability(ctx, next) // the metrics port, the log files
	if next.LXD != nil {
		if err := c.LXD.ensure(ctx); err != nil {
			return c.Tools.StatusSet(ctx, Blocked, err.Error())
		}
	}
	if problem := c.Supervisor.SocketProblem(); problem != "" {
		return c.Tools.StatusSet(ctx, Blocked, problem)
	}
	if err := c.Supervisor.EnsureRunning(ctx); err != nil {
		// update-status tries again.
		return c.Tools.StatusSet(ctx, Maintenance, err.Error())
	}
	var previous *config.File
	if data, err := os.ReadFile(c.Supervisor.ConfigPath()); err == nil {
		previous, _ = config.Parse(data)
		// Nothing to do only if the charm's binaries are what runs too:
		// after juju refresh the config is the same but the binaries are new.
		if previous != nil && sameConfig(previous, next) {
			upToDate, err := c.Supervisor.UpToDate(data)
			if err != nil {
				return err
			}
			if upToDate && c.Supervisor.Running(ctx) {
				return c.refreshStatus(ctx)
			}
		}
	}
	if drain, busyToo := drainBefore(previous, next); drain && c.Supervisor.Running(ctx) {
		what := "the idle runners made with the previous settings"
		if busyToo {
			what = "every runner of the previous cloud"
		}
		if err := c.Tools.StatusSet(ctx, Maintenance, "removing "+what); err != nil {
			return err
		}
		// What is left after the bound is the new manager's: runners of
		// an earlier path are retiring (see README, Config changes).
		if err := c.drain(ctx, busyToo, what); err != nil {
			c.Log.Warn("cannot remove the runners made with the previous settings", "error", err)
		}
		if err := c.Supervisor.Stop(ctx); err != nil {
			return err
		}
	}
	if err := next.Write(c.Supervisor.ConfigPath()); err != nil {
		return err
	}
	data, err := os.ReadFile(c.Supervisor.ConfigPath())
	if err != nil {
		return fmt.Errorf("cannot read back the manager config: %w", err)
	}
	if err := c.Supervisor.Apply(ctx, data); err != nil {
		// Juju would only retry the hook to the same end: the status says
		// why, and update-status tries again.
		if why := c.Supervisor.StartFailure(ctx); why != "" {
			return c.Tools.StatusSet(ctx, Blocked, cannotStart+why)
		}
		return c.Tools.StatusSet(ctx, Maintenance, strings.Join(strings.Fields(err.Error()), " "))
	}
	// A new log level alone restarts nothing (see restartHash): the
	// manager is told to re-read it.
	if onlyLogLevelChanged(previous, next) {
		if err := c.Supervisor.Reload(ctx); err != nil {
			c.Log.Warn("the manager keeps its log level until it restarts", "error", err)
		}
	}
	return c.refreshStatus(ctx)
}

// cannotStart begins the status of a manager that exits at start.
const cannotStart = "the runner manager cannot start: "

// sameConfig tells whether two configs are the same to the manager, which
// reads them as YAML: an empty list there is no list (reflect.DeepEqual
// tells them apart, so a config read back never equalled the one made).
func sameConfig(a, b *config.File) bool {
	ya, errA := yaml.Marshal(a)
	yb, errB := yaml.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ya, yb)
}

// stop tears the unit's runners and cloud resources down and stops the
// manager: the unit is going away.
func (c *Charm) stop(ctx context.Context) error {
	return c.teardown(ctx)
}

// teardown removes every runner of the unit, busy ones too (see drain), then
// what the cloud holds for it besides them (the manager's teardown: its
// image, its denylist ACL, its security group), and stops the manager. It
// fails while instances are left after drainLimit: the unit is not gone,
// and the hook, retried (juju resolve), tries again. Without a running
// manager there is nothing to ask.
func (c *Charm) teardown(ctx context.Context) error {
	if !c.Supervisor.Running(ctx) {
		return nil
	}
	if err := c.Tools.StatusSet(ctx, Maintenance, "removing "+unitRunners); err != nil {
		return err
	}
	if err := c.drain(ctx, true, unitRunners); err != nil {
		return err
	}
	if err := c.Manager.Teardown(ctx); err != nil {
		return fmt.Errorf("cannot remove this unit's cloud resources: %w", err)
	}
	return c.Supervisor.Stop(ctx)
}

const unitRunners = "this unit's runners"

// drainLimit bounds how long a drain retries removing runners while the
// cloud or GitHub fails; drainRetry is the wait between passes. (Variables
// so that a test can shorten them.)
var drainLimit, drainRetry = time.Minute, 5 * time.Second

// drain removes the unit's idle runners, busy ones too when busyToo, and
// creates none, pass after pass until a pass succeeds and the manager shows
// none of them left, or drainLimit passes; the status says how many of
// what are left meanwhile. A busy runner's GitHub record outlives its
// instance until GitHub has failed its job; GitHub then drops it (an
// ephemeral runner's record goes after a day unconnected at the latest),
// so it does not hold up the drain.
func (c *Charm) drain(ctx context.Context, busyToo bool, what string) error {
	deadline := time.Now().Add(drainLimit)
	for {
		_, err := c.Manager.Drain(ctx, busyToo)
		if errors.Is(err, api.ErrNotRunning) {
			return fmt.Errorf("cannot remove %s: %w", what, err) // nothing to retry with
		}
		report, rerr := c.Manager.Runners(ctx)
		if rerr != nil && err == nil {
			return nil // the drain went through; its result cannot be read back
		}
		left := 0
		for _, r := range report.Runners {
			if r.State != string(runner.NoInstance) && (busyToo || r.State != string(runner.Busy)) {
				left++
			}
		}
		if err == nil && left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("%d instances left", left)
			}
			return fmt.Errorf("cannot remove %s within %s: %w", what, drainLimit, err)
		}
		c.Tools.StatusSet(ctx, Maintenance, fmt.Sprintf("removing %s: %d left", what, left))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(drainRetry):
		}
	}
}

// remove tears the unit down if stop did not (see teardown), then ends
// Pebble, its systemd unit if any, and deletes the unit's state, the
// token's file with it.
func (c *Charm) remove(ctx context.Context) error {
	if err := c.teardown(ctx); err != nil {
		return err
	}
	if err := c.Supervisor.Shutdown(ctx); err != nil {
		return err
	}
	if err := os.RemoveAll(c.StateDir); err != nil {
		return fmt.Errorf("cannot remove %s: %w", c.StateDir, err)
	}
	return nil
}

// refreshStatus sets the unit's status to currentStatus.
func (c *Charm) refreshStatus(ctx context.Context) error {
	status, message, err := c.currentStatus(ctx)
	if err != nil {
		return err
	}
	return c.Tools.StatusSet(ctx, status, message)
}

// currentStatus is the unit's status from the configuration, the machine
// and the manager's report; whatever makes the unit Blocked is here, so
// actions refuse to run for the same reasons (see handleAction).
func (c *Charm) currentStatus(ctx context.Context) (Status, string, error) {
	s, err := c.readSettings(ctx)
	if err != nil {
		var invalid *InvalidConfigError
		if errors.As(err, &invalid) {
			return Blocked, invalid.Error(), nil
		}
		if waiting := (*WaitingError)(nil); errors.As(err, &waiting) {
			return Waiting, waiting.Error(), nil
		}
		return "", "", err
	}
	if s.OpenStack == nil && c.LXD != nil && c.LXD.find() != nil {
		return Maintenance, noLXD, nil
	}
	if problem := c.Supervisor.SocketProblem(); problem != "" {
		return Blocked, problem, nil
	}
	report, err := c.Manager.Runners(ctx)
	if err != nil {
		if errors.Is(err, api.ErrNotRunning) {
			if why := c.Supervisor.StartFailure(ctx); why != "" {
				return Blocked, cannotStart + why, nil
			}
			return Waiting, "waiting for the runner manager service to start", nil
		}
		return Waiting, "cannot read runners from the runner manager: " + err.Error(), nil
	}
	status, message := statusFromReport(report)
	return status, message, nil
}

// statusFromReport turns the manager's view into what `juju status` shows;
// while runners the Python charm left are being removed, it says so first.
// The cloud's note (slow starts on a dir pool) follows the runners' count.
func statusFromReport(r api.RunnersReport) (Status, string) {
	status, message := statusOfRunners(r)
	if r.Note != "" && (status == Active || status == Waiting) {
		message += "; " + r.Note
	}
	if r.PythonCharm > 0 && (status == Active || status == Waiting) {
		return Maintenance, fmt.Sprintf("removing the Python charm's runners: %d left, %d busy; %s", r.PythonCharm, r.PythonCharmBusy, message)
	}
	return status, message
}

func statusOfRunners(r api.RunnersReport) (Status, string) {
	idle := r.Online - r.Busy
	switch {
	case r.Problem != "" && r.Blocking:
		return Blocked, r.Problem
	case !r.PreparingSince.IsZero():
		message := "preparing the runner image (" + soFar(time.Since(r.PreparingSince)) + " so far)"
		if r.Preparing != "" {
			message += ": " + r.Preparing
		}
		if r.Problem != "" {
			message += "; the cycle before: " + r.Problem
		}
		return Maintenance, message
	case r.Problem != "":
		return Maintenance, r.Problem
	case r.AsOf.IsZero():
		return Waiting, "waiting for the runner manager's first reconcile cycle"
	case r.OnDemand && r.Online < r.Expected:
		return Waiting, fmt.Sprintf("%d of %d runners online (%s on demand): %d busy, %d idle", r.Online, r.Expected, demandBounds(r), r.Busy, idle)
	case r.OnDemand:
		return Active, fmt.Sprintf("%d runners (%s on demand): %d busy, %d idle", r.Online, demandBounds(r), r.Busy, idle)
	case r.Online < r.Expected:
		return Waiting, fmt.Sprintf("%d of %d runners online: %d idle, %d busy", r.Online, r.Expected, idle, r.Busy)
	default:
		return Active, fmt.Sprintf("%d runners: %d idle, %d busy", r.Online, idle, r.Busy)
	}
}

// demandBounds is how many runners a scale set's unit keeps: "1–4", or
// "1 or more" without a cap. Only the base is waited for: the runners
// above it come and go with the jobs.
func demandBounds(r api.RunnersReport) string {
	if r.Max == 0 {
		return fmt.Sprintf("%d or more", r.Expected)
	}
	return fmt.Sprintf("%d–%d", r.Expected, r.Max)
}

// soFar is a duration as a status says it: seconds under a minute, then
// whole minutes.
func soFar(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d.Seconds()))
	}
	return fmt.Sprintf("%dm", int(d.Minutes()))
}
