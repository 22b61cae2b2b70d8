package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/config"
)

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("closed") }

// A writer that fails (Pebble's stderr gone) does not stop the others.
func TestTeeWritesEveryWriter(t *testing.T) {
	var a, b bytes.Buffer
	log := slog.New(slog.NewTextHandler(tee{&a, failingWriter{}, &b}, nil))
	log.Info("one line")
	if !strings.Contains(a.String(), "one line") || a.String() != b.String() {
		t.Errorf("writers got %q and %q", a.String(), b.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// At each SIGHUP the level is read again from the config file; a file
// that does not parse keeps the level, and says why.
func TestReloadLevel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	f := &config.File{
		Unit: "github-runner/0", Model: "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10", StateDir: "/var/lib/github-runner/github-runner-0",
		Runners: 1, ReconcileInterval: 5 * time.Minute,
		GitHub: config.GitHub{Path: "org/repo", APIURL: "https://api.github.com", Token: "ghp_SECRET", Group: "default"},
		LXD:    &config.LXD{Type: "container", BaseImage: "noble", CPU: 2, Memory: 7 << 30, Disk: 10 << 30},
	}
	if err := f.Write(path); err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	var logs lockedBuffer
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reloadLevel(ctx, hup, path, level, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level})))
	wait := func(want slog.Level, logged string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); level.Level() != want || !strings.Contains(logs.String(), logged); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("level %v, want %v; log:\n%s", level.Level(), want, logs.String())
			}
		}
	}
	f.LogLevel = "DEBUG"
	f.Write(path)
	hup <- syscall.SIGHUP
	wait(slog.LevelDebug, `msg="log level changed" from=INFO to=DEBUG`)
	os.WriteFile(path, []byte("runners: [\n"), 0o600)
	hup <- syscall.SIGHUP
	wait(slog.LevelDebug, "cannot reload the log level")
	f.LogLevel = "ERROR"
	f.Write(path)
	hup <- syscall.SIGHUP
	wait(slog.LevelError, "") // the change is logged at INFO, below ERROR
	if strings.Contains(logs.String(), "SECRET") {
		t.Error("the token was logged")
	}
}
