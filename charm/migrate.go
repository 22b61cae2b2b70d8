package charm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// After `juju refresh --switch` from Canonical's Python charm, its services
// are still on the machine: a per-unit github-runner-manager@<app>-<n>
// service that keeps creating runners (its config file holds the token),
// or, in its older versions, the ghro.reconcile-runners timer that
// dispatches a reconcile every few minutes, a repo-policy-compliance
// service whose unit file holds the token, a cron job rebuilding the LXD
// image and logrotate files. install and upgrade-charm stop and remove
// them (removeUnitFiles), before the manager starts, every time: it costs
// a few stats when there is nothing left. The Python charm's runners are
// the manager's to take over (see runner.FromPythonCharm); its logs are
// kept.

// hostRootEnv moves the files the Python charm left, as migrate looks for
// them, under another root. Juju never sets it; the hook harness does, so
// tests prepare a machine in a directory. Under any root but "/" migrate
// never runs systemctl: the files are not the machine's units.
const hostRootEnv = "GITHUB_RUNNER_HOST_ROOT"

// Where the Python charm put what it installed (upstream src/event_timer.py,
// src/manager_service.py, src/logrotate.py, src/charm.py).
const (
	systemdDir        = "etc/systemd/system"
	pythonManagerDir  = "var/lib/github-runner-manager"
	pythonTimer       = "ghro.reconcile-runners.timer"
	pythonTimerTarget = "ghro.reconcile-runners.service"
	// pythonSingleton is the one manager service per machine of the
	// versions before per-unit services.
	pythonSingleton  = "github-runner-manager.service"
	pythonRepoPolicy = "repo-policy-compliance.service"
)

// pythonMachineFiles are what the Python charm installed once per machine
// whichever of its units did; they go with the last of its units on the
// machine.
var pythonMachineFiles = []string{
	"etc/cron.d/build-runner-image",
	"etc/logrotate.d/github-runner-manager",
	"etc/logrotate.d/github-runner-metrics",
	"etc/logrotate.d/reactive-runner",
	"home/ubuntu/repo_policy_compliance_service",
	filepath.Join(pythonManagerDir, "port-alloc.lock"),
}

// pythonUnitService matches the Python charm's per-unit service files.
var pythonUnitService = regexp.MustCompile(`^github-runner-manager@(.+)\.service$`)

// dispatchedUnit reads the unit the ghro.reconcile-runners service
// dispatches its event to: juju-exec "<unit>" "JUJU_DISPATCH_PATH=…".
var dispatchedUnit = regexp.MustCompile(`juju-(?:exec|run) "([^"]+)" "JUJU_DISPATCH_PATH=`)

// pythonCharm is what the Python charm left on this machine for unit.
type pythonCharm struct {
	root string // "/" on a machine
	unit string // "app/3"
	// systemctl runs systemctl, or is nil where it must not run: no
	// systemd as PID 1, or a root other than "/".
	systemctl func(ctx context.Context, args ...string) error
}

func (c *Charm) pythonCharm() *pythonCharm {
	p := &pythonCharm{root: c.Getenv(hostRootEnv), unit: c.Unit}
	if p.root == "" {
		p.root = "/"
	}
	if p.root == "/" && systemdIsInit() {
		p.systemctl = systemctl
	}
	return p
}

// migrateFromPythonCharm removes the Python charm's services and files,
// saying so in the log; nothing left is no work.
func (c *Charm) migrateFromPythonCharm(ctx context.Context) error {
	removed, err := c.pythonCharm().remove(ctx)
	for _, path := range removed {
		c.Log.Info("removed what the Python charm installed", "path", path)
	}
	if err != nil {
		return fmt.Errorf("cannot remove what the Python charm installed: %w", err)
	}
	return nil
}

func (p *pythonCharm) path(rel string) string { return filepath.Join(p.root, rel) }

// normalised is the unit as the Python charm named its files: "app-3".
func (p *pythonCharm) normalised() string { return strings.ReplaceAll(p.unit, "/", "-") }

// otherUnits are the Python charm's other units on the machine (another
// application's, still on the Python charm): their per-unit services, and
// the unit the reconcile timer dispatches to if it is not this one.
func (p *pythonCharm) otherUnits() ([]string, error) {
	var others []string
	entries, err := os.ReadDir(p.path(systemdDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("cannot list %s: %w", p.path(systemdDir), err)
	}
	for _, e := range entries {
		if m := pythonUnitService.FindStringSubmatch(e.Name()); m != nil && m[1] != p.normalised() {
			others = append(others, m[1])
		}
	}
	if unit, err := p.timerUnit(); err != nil {
		return nil, err
	} else if unit != "" && unit != p.unit {
		others = append(others, unit)
	}
	sort.Strings(others)
	return others, nil
}

// timerUnit is the unit the ghro.reconcile-runners service dispatches to,
// "" when there is none or it names none.
func (p *pythonCharm) timerUnit() (string, error) {
	data, err := os.ReadFile(p.path(filepath.Join(systemdDir, pythonTimerTarget)))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", p.path(filepath.Join(systemdDir, pythonTimerTarget)), err)
	}
	if m := dispatchedUnit.FindSubmatch(data); m != nil {
		return string(m[1]), nil
	}
	return "", nil
}

// remove stops and removes the Python charm's services of this unit, and
// what it installed once per machine if no other unit of it is left there;
// it returns what it removed. It is idempotent.
func (p *pythonCharm) remove(ctx context.Context) (removed []string, err error) {
	others, err := p.otherUnits()
	if err != nil {
		return nil, err
	}
	timerUnit, err := p.timerUnit()
	if err != nil {
		return nil, err
	}
	last := len(others) == 0
	units := []string{"github-runner-manager@" + p.normalised() + ".service"}
	if timerUnit == p.unit || (timerUnit == "" && last) {
		units = append(units, pythonTimer, pythonTimerTarget)
	}
	if last {
		units = append(units, pythonSingleton, pythonRepoPolicy)
	}
	paths := []string{filepath.Join(pythonManagerDir, p.normalised())} // its config (the token) and port
	if last {
		paths = append(paths, pythonMachineFiles...)
	}
	var present []string
	for _, unit := range units {
		if _, err := os.Lstat(p.path(filepath.Join(systemdDir, unit))); err == nil {
			present = append(present, unit)
		}
	}
	var errs []error
	stopped := present[:0:0]
	for _, unit := range present {
		// Stopped before its file goes (the timer first, so it starts no
		// reconcile): a unit that cannot be stopped keeps its file, and
		// the hook, retried, tries again.
		if p.systemctl != nil {
			if err := p.systemctl(ctx, "disable", "--now", unit); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		stopped = append(stopped, unit)
		paths = append(paths, filepath.Join(systemdDir, unit))
	}
	for _, rel := range paths {
		path := p.path(rel)
		if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, fmt.Errorf("cannot remove %s: %w", path, err))
			continue
		}
		removed = append(removed, path)
	}
	if last {
		// Its directory, once nothing else is in it.
		if err := os.Remove(p.path(pythonManagerDir)); err == nil {
			removed = append(removed, p.path(pythonManagerDir))
		}
	}
	if p.systemctl != nil && len(stopped) > 0 {
		if err := p.systemctl(ctx, "daemon-reload"); err != nil {
			errs = append(errs, err)
		}
		for _, unit := range stopped {
			p.systemctl(ctx, "reset-failed", unit) // a unit that never failed is no error to care about
		}
	}
	return removed, errors.Join(errs...)
}
