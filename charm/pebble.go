package charm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	pebble "github.com/canonical/pebble/client"
)

// serviceName is the manager's service in the Pebble plan.
const serviceName = "github-runner-manager"

// pebbleCallTimeout bounds one call to the local Pebble daemon.
const pebbleCallTimeout = 30 * time.Second

// Supervisor keeps this unit's Pebble daemon running and the manager
// service in its plan. Everything lives in the unit's state directory
// (mode 0700: Pebble's socket is world-writable by design, the directory
// is what keeps other users out), so two units on one machine never meet.
type Supervisor struct {
	CharmDir string
	StateDir string
	Unit     string
}

func (s *Supervisor) pebbleDir() string  { return filepath.Join(s.StateDir, "pebble") }
func (s *Supervisor) socket() string     { return filepath.Join(s.pebbleDir(), ".pebble.socket") }
func (s *Supervisor) pidFile() string    { return filepath.Join(s.StateDir, "pebble.pid") }
func (s *Supervisor) ConfigPath() string { return filepath.Join(s.StateDir, "config.yaml") }
func (s *Supervisor) systemdUnit() string {
	return "github-runner-pebble-" + strings.ReplaceAll(s.Unit, "/", "-") + ".service"
}

func (s *Supervisor) client() (*pebble.Client, error) {
	c, err := pebble.New(&pebble.Config{Socket: s.socket()})
	if err != nil {
		return nil, fmt.Errorf("cannot make a Pebble client: %w", err)
	}
	return c, nil
}

// bounded runs a Pebble call with a deadline: the client has none of its own.
func bounded[T any](ctx context.Context, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() { v, err := f(); done <- result{v, err} }()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(pebbleCallTimeout):
		var zero T
		return zero, errors.New("cannot talk to Pebble: no answer within " + pebbleCallTimeout.String())
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// EnsureRunning starts Pebble unless it already answers. Where systemd is
// PID 1 (a normal machine), a systemd unit runs it, so it survives reboots
// and crashes; in containers and CI there is no systemd, so the charm
// starts Pebble detached itself and restarts it from any later hook.
func (s *Supervisor) EnsureRunning(ctx context.Context) error {
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", s.StateDir, err)
	}
	if err := os.Chmod(s.StateDir, 0o700); err != nil {
		return fmt.Errorf("cannot restrict %s: %w", s.StateDir, err)
	}
	if s.answers(ctx) {
		return nil
	}
	if systemdIsInit() {
		if err := s.startWithSystemd(ctx); err != nil {
			return err
		}
	} else if err := s.startDetached(); err != nil {
		return err
	}
	return s.waitAnswers(ctx)
}

func (s *Supervisor) answers(ctx context.Context) bool {
	c, err := s.client()
	if err != nil {
		return false
	}
	_, err = bounded(ctx, c.SysInfo)
	return err == nil
}

func (s *Supervisor) waitAnswers(ctx context.Context) error {
	deadline := time.After(30 * time.Second)
	for !s.answers(ctx) {
		select {
		case <-deadline:
			return fmt.Errorf("cannot start Pebble: it did not answer within 30s (see %s)", filepath.Join(s.StateDir, "pebble.log"))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func systemdIsInit() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

func (s *Supervisor) startWithSystemd(ctx context.Context) error {
	unit := fmt.Sprintf(`[Unit]
Description=Pebble supervising the GitHub runner manager of %s
After=network-online.target

[Service]
Environment=PEBBLE=%s
ExecStart=%s run --create-dirs
Restart=always
KillMode=process
TimeoutStopSec=150

[Install]
WantedBy=multi-user.target
`, s.Unit, s.pebbleDir(), filepath.Join(s.CharmDir, "bin", "pebble"))
	path := filepath.Join("/etc/systemd/system", s.systemdUnit())
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", s.systemdUnit()}} {
		if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("cannot run systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func (s *Supervisor) startDetached() error {
	logFile, err := os.OpenFile(filepath.Join(s.StateDir, "pebble.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open Pebble's log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(filepath.Join(s.CharmDir, "bin", "pebble"), "run", "--create-dirs")
	cmd.Env = []string{"PEBBLE=" + s.pebbleDir(), "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: Pebble must outlive the hook process that starts it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start Pebble: %w", err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	return os.WriteFile(s.pidFile(), []byte(strconv.Itoa(pid)+"\n"), 0o600)
}

// layer is the manager service and its health check. The config file's
// hash is in the environment so that Replan restarts the service exactly
// when its configuration changed.
func (s *Supervisor) layer(configHash string) string {
	manager := filepath.Join(s.CharmDir, "bin", "github-runner-manager")
	return fmt.Sprintf(`summary: GitHub runner manager of %[1]s
services:
  %[2]s:
    override: replace
    summary: keeps this unit's ephemeral GitHub runners
    command: %[3]s --config %[4]s
    startup: enabled
    environment:
      GITHUB_RUNNER_CONFIG_SHA256: %[5]s
    on-failure: restart
    on-check-failure:
      manager-up: restart
    backoff-delay: 1s
    backoff-limit: 1m
    kill-delay: 2m
checks:
  manager-up:
    override: replace
    level: alive
    period: 30s
    timeout: 10s
    threshold: 3
    exec:
      command: %[3]s --config %[4]s health
`, s.Unit, serviceName, manager, s.ConfigPath(), configHash)
}

// Apply writes the layer where Pebble reads it at start (API layers do not
// survive a Pebble restart), adds it to the running plan and replans.
func (s *Supervisor) Apply(ctx context.Context, config []byte) error {
	sum := sha256.Sum256(config)
	layer := []byte(s.layer(hex.EncodeToString(sum[:])))
	layersDir := filepath.Join(s.pebbleDir(), "layers")
	if err := os.MkdirAll(layersDir, 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", layersDir, err)
	}
	if err := os.WriteFile(filepath.Join(layersDir, "001-github-runner.yaml"), layer, 0o600); err != nil {
		return fmt.Errorf("cannot write the Pebble layer: %w", err)
	}
	c, err := s.client()
	if err != nil {
		return err
	}
	if _, err := bounded(ctx, func() (struct{}, error) {
		return struct{}{}, c.AddLayer(&pebble.AddLayerOptions{Combine: true, Label: "github-runner", LayerData: layer})
	}); err != nil {
		return fmt.Errorf("cannot add the Pebble layer: %w", err)
	}
	return s.change(ctx, c, "replan", c.Replan, nil)
}

// Stop stops the manager service, waiting for it to end its cycle.
func (s *Supervisor) Stop(ctx context.Context) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	return s.change(ctx, c, "stop", c.Stop, []string{serviceName})
}

func (s *Supervisor) change(ctx context.Context, c *pebble.Client, what string, do func(*pebble.ServiceOptions) (string, error), names []string) error {
	id, err := bounded(ctx, func() (string, error) { return do(&pebble.ServiceOptions{Names: names}) })
	if err != nil {
		return fmt.Errorf("cannot %s the runner manager: %w", what, err)
	}
	// The service's kill-delay lets a cycle finish; wait a little longer.
	chg, err := c.WaitChange(id, &pebble.WaitChangeOptions{Timeout: 3 * time.Minute})
	if err != nil {
		return fmt.Errorf("cannot %s the runner manager: %w", what, err)
	}
	if chg.Err != "" {
		return fmt.Errorf("cannot %s the runner manager: %s", what, chg.Err)
	}
	return nil
}

// Running tells whether the manager service is active.
func (s *Supervisor) Running(ctx context.Context) bool {
	c, err := s.client()
	if err != nil {
		return false
	}
	services, err := bounded(ctx, func() ([]*pebble.ServiceInfo, error) {
		return c.Services(&pebble.ServicesOptions{Names: []string{serviceName}})
	})
	return err == nil && len(services) == 1 && services[0].Current == pebble.StatusActive
}

// Shutdown ends Pebble itself (the unit is being removed) and waits for it
// to go, so that the unit's directory can be removed after it.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	if systemdIsInit() {
		exec.CommandContext(ctx, "systemctl", "disable", "--now", s.systemdUnit()).Run()
		os.Remove(filepath.Join("/etc/systemd/system", s.systemdUnit()))
		return nil
	}
	data, err := os.ReadFile(s.pidFile())
	if err != nil {
		return nil // never started
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", s.pidFile(), err)
	}
	// The pid file may be stale and the pid reused: only signal a Pebble.
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), "pebble") {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(ctx, pid, 30*time.Second) {
			syscall.Kill(pid, syscall.SIGKILL)
			waitGone(ctx, pid, 10*time.Second)
		}
	}
	return os.Remove(s.pidFile())
}

// waitGone waits for a process that is not our child to exit. Once it has,
// it may linger as a zombie until its parent (init) reaps it, so a zombie
// counts as gone.
func waitGone(ctx context.Context, pid int, limit time.Duration) bool {
	deadline := time.After(limit)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(fields) > 0 && fields[0] == "Z" {
			return true
		}
		select {
		case <-deadline:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}
