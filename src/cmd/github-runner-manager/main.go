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
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/canonical/github-runner-charm/src/config"
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
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel(f.LogLevel)}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
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

func logLevel(s string) slog.Level {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return level
}
