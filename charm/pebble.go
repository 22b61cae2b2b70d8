package charm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	pebble "github.com/canonical/pebble/client"

	"github.com/canonical/github-runner-charm/src/config"
)

// serviceName is the manager's service in the Pebble plan.
const serviceName = "github-runner-manager"

// pebbleCallTimeout bounds one call to the local Pebble daemon.
const pebbleCallTimeout = 30 * time.Second

// managerKillDelay is how long Pebble lets the manager finish its cycle
// after SIGTERM before it kills it.
const managerKillDelay = 2 * time.Minute

// systemctlTimeout bounds one systemctl call; a restart waits for Pebble
// to stop the manager, which its kill-delay bounds.
const systemctlTimeout = managerKillDelay + time.Minute

// Supervisor keeps this unit's Pebble daemon running and the manager
// service in its plan. Everything lives in the unit's state directory
// (mode 0700: Pebble's socket is world-writable by design, the directory
// is what keeps other users out), so two units on one machine never meet.
type Supervisor struct {
	CharmDir string
	StateDir string
	Unit     string

	digests map[string]digestEntry // this process's digests, by path
}

func (s *Supervisor) pebbleDir() string     { return filepath.Join(s.StateDir, "pebble") }
func (s *Supervisor) socket() string        { return filepath.Join(s.pebbleDir(), ".pebble.socket") }
func (s *Supervisor) pidFile() string       { return filepath.Join(s.StateDir, "pebble.pid") }
func (s *Supervisor) ConfigPath() string    { return filepath.Join(s.StateDir, "config.yaml") }
func (s *Supervisor) pebbleBinary() string  { return filepath.Join(s.CharmDir, "bin", "pebble") }
func (s *Supervisor) managerBinary() string { return filepath.Join(s.CharmDir, "bin", serviceName) }
func (s *Supervisor) layerPath() string {
	return filepath.Join(s.pebbleDir(), "layers", "001-github-runner.yaml")
}

// startedFromPath records the sha256 of the binary the running Pebble was
// started from: after juju refresh the charm's bin/pebble may be another.
func (s *Supervisor) startedFromPath() string { return filepath.Join(s.StateDir, "pebble.sha256") }
func (s *Supervisor) digestCachePath() string { return filepath.Join(s.StateDir, "digests.json") }
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
	started, err := s.digest(s.pebbleBinary())
	if err != nil {
		return err
	}
	if systemdIsInit() {
		if err := s.startWithSystemd(ctx); err != nil {
			return err
		}
	} else if err := s.startDetached(); err != nil {
		return err
	}
	if err := s.waitAnswers(ctx); err != nil {
		return err
	}
	return s.recordStartedFrom(started)
}

// SocketProblem says why Pebble could not listen in the unit's state
// directory ("" when it can): its socket's path is too long. (src/config
// checks the manager's own socket, which is shorter.)
func (s *Supervisor) SocketProblem() string {
	if path := s.socket(); len(path) > config.MaxSocketPath {
		return fmt.Sprintf("the runner manager cannot start: the unit's state directory %s is too deep for Pebble's socket (%s is %d bytes, a unix socket's path at most %d)", s.StateDir, path, len(path), config.MaxSocketPath)
	}
	return ""
}

// pebbleOutdated tells whether the running Pebble was started from another
// binary than the charm's bin/pebble. A Pebble whose binary nobody recorded
// (started by a charm version that did not record it) counts as outdated.
func (s *Supervisor) pebbleOutdated() (bool, error) {
	want, err := s.digest(s.pebbleBinary())
	if err != nil {
		return false, err
	}
	recorded, err := os.ReadFile(s.startedFromPath())
	if errors.Is(err, os.ErrNotExist) {
		return true, nil
	} else if err != nil {
		return false, fmt.Errorf("cannot read %s: %w", s.startedFromPath(), err)
	}
	return strings.TrimSpace(string(recorded)) != want, nil
}

func (s *Supervisor) recordStartedFrom(digest string) error {
	if err := os.WriteFile(s.startedFromPath(), []byte(digest+"\n"), 0o600); err != nil {
		return fmt.Errorf("cannot record which Pebble runs: %w", err)
	}
	return nil
}

// restartPebble replaces the running Pebble with the charm's bin/pebble.
// Pebble stops the manager on SIGTERM, within its kill-delay, and the new
// one starts it again from the layer on disk; runners are not touched.
func (s *Supervisor) restartPebble(ctx context.Context) error {
	started, err := s.digest(s.pebbleBinary())
	if err != nil {
		return err
	}
	if systemdIsInit() {
		changed, err := s.writeSystemdUnit()
		if err != nil {
			return err
		}
		if changed {
			if err := systemctl(ctx, "daemon-reload"); err != nil {
				return err
			}
		}
		if err := systemctl(ctx, "restart", s.systemdUnit()); err != nil {
			return err
		}
	} else {
		if err := s.stopDetached(ctx, managerKillDelay+30*time.Second); err != nil {
			return err
		}
		// A Pebble the charm has no pid of would otherwise get a second one
		// beside it, on the same socket, with a second manager.
		if s.listening() {
			return fmt.Errorf("cannot restart Pebble: it still answers on %s after the one in %s was stopped", s.socket(), s.pidFile())
		}
		if err := s.startDetached(); err != nil {
			return err
		}
	}
	if err := s.waitAnswers(ctx); err != nil {
		return err
	}
	return s.recordStartedFrom(started)
}

func (s *Supervisor) answers(ctx context.Context) bool {
	c, err := s.client()
	if err != nil {
		return false
	}
	_, err = bounded(ctx, c.SysInfo)
	return err == nil
}

// listening tells whether anything accepts connections on Pebble's socket.
// Unlike answers it does not wait: the Pebble client retries a refused
// request for seconds.
func (s *Supervisor) listening() bool {
	conn, err := net.DialTimeout("unix", s.socket(), time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
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

func (s *Supervisor) systemdUnitText() string {
	return fmt.Sprintf(`[Unit]
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
`, s.Unit, s.pebbleDir(), s.pebbleBinary())
}

// writeSystemdUnit writes the unit file and tells whether it changed.
func (s *Supervisor) writeSystemdUnit() (bool, error) {
	unit := []byte(s.systemdUnitText())
	path := filepath.Join("/etc/systemd/system", s.systemdUnit())
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, unit) {
		return false, nil
	}
	if err := os.WriteFile(path, unit, 0o644); err != nil {
		return false, fmt.Errorf("cannot write %s: %w", path, err)
	}
	return true, nil
}

func (s *Supervisor) startWithSystemd(ctx context.Context) error {
	if _, err := s.writeSystemdUnit(); err != nil {
		return err
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", s.systemdUnit()}} {
		if err := systemctl(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

func systemctl(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, systemctlTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("cannot run systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (s *Supervisor) startDetached() error {
	logFile, err := os.OpenFile(filepath.Join(s.StateDir, "pebble.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("cannot open Pebble's log: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(s.pebbleBinary(), "run", "--create-dirs")
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

// Layer is the manager service and its health check for a config file's
// content. The config file's hash and the manager binary's are in the
// environment, so that Replan restarts the service exactly when its
// configuration or its binary (after juju refresh) changed; the log
// level is left out of the hash, since the manager re-reads it at SIGHUP
// (Reload).
func (s *Supervisor) Layer(config []byte) ([]byte, error) {
	managerDigest, err := s.digest(s.managerBinary())
	if err != nil {
		return nil, err
	}
	configSum := sha256.Sum256(restartHash(config)) // all but the log level
	return []byte(fmt.Sprintf(`summary: GitHub runner manager of %[1]s
services:
  %[2]s:
    override: replace
    summary: keeps this unit's ephemeral GitHub runners
    command: %[3]s --config %[4]s
    startup: enabled
    environment:
      GITHUB_RUNNER_CONFIG_SHA256: %[5]s
      GITHUB_RUNNER_MANAGER_SHA256: %[6]s
    on-failure: restart
    on-check-failure:
      manager-up: restart
    backoff-delay: 1s
    backoff-limit: 1m
    kill-delay: %[7]s
checks:
  manager-up:
    override: replace
    level: alive
    period: 30s
    timeout: 10s
    threshold: 3
    exec:
      command: %[3]s --config %[4]s health
`, s.Unit, serviceName, s.managerBinary(), s.ConfigPath(), hex.EncodeToString(configSum[:]), managerDigest, managerKillDelay)), nil
}

// UpToDate tells whether Apply of config would change nothing: Pebble runs
// from the charm's own bin/pebble, and its layer on disk (written once
// Pebble took it) is the one for config and the charm's manager binary.
// It does not ask Pebble whether the service runs.
func (s *Supervisor) UpToDate(config []byte) (bool, error) {
	layer, err := s.Layer(config)
	if err != nil {
		return false, err
	}
	if onDisk, err := os.ReadFile(s.layerPath()); err != nil || !bytes.Equal(onDisk, layer) {
		return false, nil
	}
	outdated, err := s.pebbleOutdated()
	return !outdated, err
}

// Apply brings Pebble and the manager service in line with the config
// file's content and the charm's binaries. A Pebble started from another
// binary is restarted first. The layer is written where Pebble reads it at
// start (API layers do not survive a Pebble restart), once Pebble took it:
// so the layer on disk says what Pebble runs, and a hook cut short before
// the replan does it again rather than trusting a layer never applied.
func (s *Supervisor) Apply(ctx context.Context, config []byte) error {
	layer, err := s.Layer(config)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.layerPath()), 0o700); err != nil {
		return fmt.Errorf("cannot create %s: %w", filepath.Dir(s.layerPath()), err)
	}
	outdated, err := s.pebbleOutdated()
	if err != nil {
		return err
	}
	if outdated {
		// The new Pebble starts the manager from the new layer, so the
		// manager restarts once, not once for each.
		if err := s.writeLayer(layer); err != nil {
			return err
		}
		if err := s.restartPebble(ctx); err != nil {
			return err
		}
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
	if err := s.change(ctx, c, "replan", c.Replan, nil); err != nil {
		return err
	}
	return s.writeLayer(layer)
}

func (s *Supervisor) writeLayer(layer []byte) error {
	tmp := s.layerPath() + ".tmp"
	if err := os.WriteFile(tmp, layer, 0o600); err != nil {
		return fmt.Errorf("cannot write the Pebble layer: %w", err)
	}
	// Atomic: Pebble reads every file in layers/ at start, a half-written
	// one would stop it.
	if err := os.Rename(tmp, s.layerPath()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot write the Pebble layer: %w", err)
	}
	return nil
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
		systemctl(ctx, "disable", "--now", s.systemdUnit()) // gone already, or going
		os.Remove(filepath.Join("/etc/systemd/system", s.systemdUnit()))
		return nil
	}
	return s.stopDetached(ctx, 30*time.Second)
}

// stopDetached ends the Pebble the charm started itself: SIGTERM, on which
// Pebble stops the manager within its kill-delay and exits; SIGKILL if it
// is still there after grace.
func (s *Supervisor) stopDetached(ctx context.Context, grace time.Duration) error {
	data, err := os.ReadFile(s.pidFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil // never started
	} else if err != nil {
		return fmt.Errorf("cannot read %s: %w", s.pidFile(), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", s.pidFile(), err)
	}
	// The pid file may be stale and the pid reused: only signal a Pebble.
	if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), "pebble") {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(ctx, pid, grace) {
			syscall.Kill(pid, syscall.SIGKILL)
			if !waitGone(ctx, pid, 10*time.Second) {
				return fmt.Errorf("cannot stop Pebble (pid %d): it is still running after SIGKILL", pid)
			}
		}
	}
	if err := os.Remove(s.pidFile()); err != nil {
		return fmt.Errorf("cannot remove %s: %w", s.pidFile(), err)
	}
	return nil
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

// digestEntry is a file's sha256 and the identity of the file it was taken
// of: a file replaced or rewritten gets another inode or change time.
type digestEntry struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // nanoseconds
	SHA256       string
}

// digestSettle is how old a file's change time must be before its digest
// is kept in the cache: timestamps are coarse, so a file written again
// within the same tick could change without its identity changing. (A
// variable so that a test can have a fresh file cached.)
var digestSettle = 2 * time.Second

// digest is the sha256 of a file, hex. Hashing both binaries costs tens of
// milliseconds a hook, so digests are kept in the unit's state directory
// by file identity, and a binary is hashed again only when it changed.
func (s *Supervisor) digest(path string) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("cannot read %s: no file identity", path)
	}
	key := digestEntry{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
	same := func(e digestEntry) bool { e.SHA256 = ""; return e == key }
	if e, ok := s.digests[path]; ok && same(e) {
		return e.SHA256, nil
	}
	cache := map[string]digestEntry{}
	if data, err := os.ReadFile(s.digestCachePath()); err == nil {
		// A cache that does not parse is only a cache: start afresh.
		json.Unmarshal(data, &cache)
	}
	if e, ok := cache[path]; ok && same(e) {
		s.remember(path, e)
		return e.SHA256, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	}
	key.SHA256 = hex.EncodeToString(h.Sum(nil))
	s.remember(path, key)
	if time.Since(time.Unix(0, key.Ctime)) > digestSettle {
		cache[path] = key
		if data, err := json.Marshal(cache); err == nil {
			// Best effort: without the cache the next hook hashes again.
			os.WriteFile(s.digestCachePath(), data, 0o600)
		}
	}
	return key.SHA256, nil
}

func (s *Supervisor) remember(path string, e digestEntry) {
	if s.digests == nil {
		s.digests = map[string]digestEntry{}
	}
	s.digests[path] = e
}

// StartFailure is why the manager service is not running, in the manager's
// own words: the error it exited with, read back from Pebble's log of the
// service ("" when it is running, or its last words were no error). The
// manager's errors carry no secret, and only that sentence is kept.
func (s *Supervisor) StartFailure(ctx context.Context) string {
	c, err := s.client()
	if err != nil {
		return ""
	}
	services, err := bounded(ctx, func() ([]*pebble.ServiceInfo, error) {
		return c.Services(&pebble.ServicesOptions{Names: []string{serviceName}})
	})
	if err != nil || len(services) != 1 {
		return ""
	}
	if services[0].Current == pebble.StatusActive {
		return ""
	}
	var lines []string
	if _, err := bounded(ctx, func() (struct{}, error) {
		return struct{}{}, c.Logs(&pebble.LogsOptions{Services: []string{serviceName}, N: exitLogLines,
			WriteLog: func(e pebble.LogEntry) error { lines = append(lines, e.Message); return nil }})
	}); err != nil {
		return ""
	}
	return exitError(lines)
}

// exitLogLines is how many of the service's last log lines are searched for
// the error it exited with (a panic's trace runs to tens of lines).
const exitLogLines = 60

// exitError finds the error the manager exited with in its last log lines:
// its slog record of level ERROR (the error attribute, else the message),
// "error: …" (a config it cannot read), or a Go panic. Its last words
// decide: a record of another level after them (a later run that stopped
// normally) means there is none.
func exitError(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		line := strings.TrimSpace(lines[i])
		switch {
		case strings.Contains(line, " level=") && !strings.Contains(line, " level=ERROR"):
			return ""
		case strings.HasPrefix(line, "error: "):
			return strings.TrimPrefix(line, "error: ")
		case strings.HasPrefix(line, "panic: "):
			return "it crashed: " + strings.TrimPrefix(line, "panic: ")
		case strings.Contains(line, "level=ERROR"):
			if v := slogAttr(line, "error"); v != "" {
				return v
			}
			if v := slogAttr(line, "msg"); v != "" {
				return v
			}
		}
	}
	return ""
}

// slogAttr is the value of key in a line of log/slog's text format, which
// quotes a value with strconv.Quote when it must.
func slogAttr(line, key string) string {
	for rest := line; rest != ""; {
		i := strings.Index(rest, key+"=")
		if i < 0 {
			return ""
		}
		if i > 0 && rest[i-1] != ' ' {
			rest = rest[i+len(key)+1:]
			continue
		}
		value := rest[i+len(key)+1:]
		if strings.HasPrefix(value, `"`) {
			quoted, err := strconv.QuotedPrefix(value)
			if err != nil {
				return ""
			}
			unquoted, _ := strconv.Unquote(quoted)
			return unquoted
		}
		value, _, _ = strings.Cut(value, " ")
		return value
	}
	return ""
}
