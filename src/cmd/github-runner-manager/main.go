// Command github-runner-manager is the long-running service that owns one
// unit's runners: it reconciles them every interval and answers the charm
// on a unix socket. The charm supervises it with Pebble; operators can also
// run it by hand with a config file (see README.md).
//
//	github-runner-manager --config FILE          run the service
//	github-runner-manager --config FILE health   exit 0 if the service answers
//	github-runner-manager --version
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/logfile"
	"github.com/canonical/github-runner-charm/src/service"
	"github.com/canonical/github-runner-charm/src/service/api"
)

// version is set by the packer with -ldflags.
var version = "dev"

func main() {
	os.Exit(run())
}

func run() int {
	configPath := flag.String("config", "", "the manager's config file (written by the charm)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return 0
	}
	if *configPath == "" {
		fmt.Fprintln(os.Stderr, "error: --config is required")
		return 2
	}
	f, err := config.Read(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	if flag.Arg(0) == "health" {
		return health(f)
	}
	// SIGHUP re-reads the log level (the charm sends it when only the
	// level changed), so a level change restarts nothing.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	level := new(slog.LevelVar)
	level.Set(f.Level())
	out, closeLog, logErr := logOutput(f.LogFile)
	defer closeLog()
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	if logErr != nil {
		log.Error("logging to stderr only", "error", logErr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go reloadLevel(ctx, hup, *configPath, level, log)
	log.Info("github-runner-manager starting", "version", version, "unit", f.Unit, "runners", f.Runners)
	if err := service.Run(ctx, f, openCloud, log); err != nil {
		log.Error("github-runner-manager stopped", "error", err)
		return 1
	}
	log.Info("github-runner-manager stopped")
	return 0
}

// health is Pebble's liveness check.
func health(f *config.File) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := api.NewClient(filepath.Join(f.StateDir, api.SocketName), 5*time.Second)
	if err := client.Health(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		return 1
	}
	return 0
}

// logOutput is where the manager logs: stderr (Pebble's log), and the
// log file if the config names one, rotated by size (see logfile). A log
// file that cannot be opened is no reason to stop the runners: the
// manager logs to stderr only, and says why.
func logOutput(path string) (io.Writer, func(), error) {
	if path == "" {
		return os.Stderr, func() {}, nil
	}
	file, err := logfile.Open(path, 0, 0)
	if err != nil {
		return os.Stderr, func() {}, err
	}
	return tee{os.Stderr, file}, func() { file.Close() }, nil
}

// tee writes each record to every writer, whole, whatever the others do:
// a closed stderr must not stop the file's lines (io.MultiWriter stops at
// the first error).
type tee []io.Writer

func (t tee) Write(p []byte) (int, error) {
	for _, w := range t {
		w.Write(p)
	}
	return len(p), nil
}

// reloadLevel sets the log level from the config file at each SIGHUP.
func reloadLevel(ctx context.Context, hup <-chan os.Signal, path string, level *slog.LevelVar, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		f, err := config.Read(path)
		if err != nil {
			log.Warn("cannot reload the log level", "error", err)
			continue
		}
		if was := level.Level(); was != f.Level() {
			level.Set(f.Level())
			log.Info("log level changed", "from", was, "to", f.Level())
		}
	}
}
