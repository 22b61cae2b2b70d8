package service

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/metrics"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/scaleset"
	"github.com/canonical/github-runner-charm/src/service/api"
)

// CloudFactory picks the cloud a config file names; the cloud connects
// itself on first use.
type CloudFactory func(f *config.File, log *slog.Logger) (cloud.Provider, error)

// Run runs the manager for a config file until ctx ends (SIGTERM): the
// HTTP API on the unit's socket, and a reconcile every interval. It fails
// only when the service cannot start at all; GitHub or cloud failures are
// reported as the problem and retried every cycle.
func Run(ctx context.Context, f *config.File, newCloud CloudFactory, log *slog.Logger) error {
	id, err := runner.ParseIdentity(f.Model, f.Unit)
	if err != nil {
		return err
	}
	gh, err := github.New(GitHubConfig(f, log))
	if err != nil {
		return err
	}
	events, err := metrics.OpenEventsLog(f.EventsLogPath())
	if err != nil {
		return err
	}
	defer events.Close()
	c, err := newCloud(f, log)
	if err != nil {
		return err
	}
	scope := runner.NewScope(f.GitHub.APIURL, f.GitHub.Path)
	platform := newPlatform(gh, id, scope, f.GitHub.RunnerLabels())
	if platform.remembered, err = openScopes(filepath.Join(f.StateDir, scopesFile), log); err != nil {
		return err
	}
	platform.current = GitHubConfig(f, log)
	if err := platform.remembered.remember(scope, platform.current); err != nil {
		return err
	}
	// A scale set's unit registers its runners in the set and scales on
	// its demand; a classic one keeps its fixed pool.
	var set *scaleset.Set
	if f.GitHub.ScaleSet != "" {
		if set, err = scaleset.New(ScaleSetConfig(f, id, log)); err != nil {
			return err
		}
		platform.scaleSet = set
	}
	engine := manager.New(c, platform, manager.Settings{
		Identity: id, Scope: scope, Target: f.Runners, Max: f.MaxRunners, OnDemand: set != nil,
		Timeouts: manager.Timeouts{Creation: f.Timeouts.Creation, Offline: f.Timeouts.Offline, Unresponsive: f.Timeouts.Unresponsive},
		// Each new runner gets one of the debug-ssh relation's tmate servers.
		Environments: f.Runner.TmateEnvironments(),
	}, log)
	updater := &updater{github: gh, cloud: c, cacheDir: filepath.Join(f.StateDir, "runner-application"), log: log}
	srv := &Server{
		Engine: engine, Expected: f.Runners, Interval: f.ReconcileInterval, Log: log,
		Metrics: metrics.New(appName(f.Unit), events),
		Explain: github.OperatorMessage,
		RateLimit: func() (int, int, bool) {
			b, ok := gh.RateBudget()
			return b.Remaining, b.Limit, ok
		},
		Prepare:            updater.refresh,
		PrepareWoken:       updater.refreshIfStale,
		UpdateDependencies: updater.update,
		Teardown:           c.Teardown,
	}
	if b, ok := c.(cloud.ImageBuilder); ok {
		b.OnImageBuild(srv.Metrics.ObserveImageBuild)
	}
	if p, ok := c.(cloud.ProgressReporter); ok {
		srv.PrepareProgress = p.PrepareProgress
	}
	if n, ok := c.(cloud.Noter); ok {
		srv.Note = n.Note
	}
	listener, err := Listen(filepath.Join(f.StateDir, api.SocketName))
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go httpServer.Serve(listener)
	if f.MetricsPort != 0 {
		endpoint := &metricsEndpoint{port: f.MetricsPort, unit: f.Unit, registry: srv.Metrics.Registry, log: log}
		srv.MetricsProblem = endpoint.Problem
		served := make(chan struct{})
		go func() { endpoint.run(ctx); close(served) }()
		defer func() { <-served }()
	}
	if w, ok := c.(cloud.Watcher); ok {
		// A runner that finished is replaced at once, not at the next
		// interval.
		go w.Watch(ctx, srv.Wake)
	}
	if set != nil {
		srv.DemandProblem, srv.DemandBlocks, srv.OnDemand, srv.Max = set.Problem, set.NeedsOperator, true, f.MaxRunners
		listening := listenForDemand(ctx, set, newDemand(engine, srv.Metrics, srv))
		// The session is closed on the way out: the next manager's
		// would otherwise wait for it to expire (409).
		defer func() { <-listening }()
	}
	srv.Run(ctx)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return httpServer.Shutdown(shutdownCtx)
}

// GitHubConfig is the GitHub client configuration of a config file, as the
// service starts its client (the charm's tests check what it writes with it).
func GitHubConfig(f *config.File, log *slog.Logger) github.Config {
	c := github.Config{Path: f.GitHub.Path, BaseURL: f.GitHub.APIURL, Token: f.GitHub.Token, RunnerGroup: f.GitHub.Group, Logger: log}
	if a := f.GitHub.App; a != nil {
		c.App = &github.AppCredentials{AppID: a.ID, ClientID: a.ClientID, InstallationID: a.InstallationID, PrivateKeyPEM: []byte(a.PrivateKey)}
	}
	return c
}

// appName is the application of a unit name, the Python charm's "flavor".
func appName(unit string) string {
	app, _, _ := strings.Cut(unit, "/")
	return app
}

// updater keeps the runner application and the cloud's image current.
type updater struct {
	github   *github.Client
	cloud    cloud.Provider
	cacheDir string
	log      *slog.Logger
	mu       sync.Mutex
	version  string
	// pending: a Prepare outside a cycle (update-dependencies) saw the
	// image change, and no cycle has replaced the idle runners for it yet.
	pending bool
	// prepared is when a Prepare last succeeded (see refreshEvery).
	prepared time.Time
}

// refreshEvery is how long a successful Prepare holds for the woken
// cycles after it (cycles on the interval, or for an action, always
// prepare). Cycles woken by demand or a finished runner come seconds
// apart, and each Prepare costs a GitHub downloads request, a checksum of
// the cached runner application and the cloud's image checks: time that
// a replacement or a cold job start would wait for, and GitHub calls a
// burst would spend, to learn nothing new. A new runner version or image
// is seen by the first cycle after it; update-dependencies prepares at
// once.
const refreshEvery = time.Minute

// refresh runs before each cycle on the interval or for an action: the
// application is cached, so it costs one downloads request when nothing
// changed, and none for clouds whose image already holds the runner (and
// an image API that fails is seen by the cycle an operator asks for). It
// reports a change since the last cycle's, whoever's Prepare saw it, and
// so consumes it.
func (u *updater) refresh(ctx context.Context) (changed bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.prepareLocked(ctx)
}

// refreshIfStale is refresh for the cycles a Wake asks for: it prepares
// only when the last Prepare is refreshEvery old.
func (u *updater) refreshIfStale(ctx context.Context) (changed bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.prepared.IsZero() && time.Since(u.prepared) < refreshEvery {
		changed, u.pending = u.pending, false
		return changed, nil
	}
	return u.prepareLocked(ctx)
}

func (u *updater) prepareLocked(ctx context.Context) (changed bool, err error) {
	changed, err = u.cloud.Prepare(ctx, u.fetch)
	if err != nil {
		return false, err
	}
	u.prepared = time.Now()
	changed, u.pending = changed || u.pending, false
	return changed, nil
}

func (u *updater) fetch(ctx context.Context) (string, string, error) {
	if err := os.MkdirAll(u.cacheDir, 0o700); err != nil {
		return "", "", fmt.Errorf("cannot create %s: %w", u.cacheDir, err)
	}
	app, err := u.github.DownloadRunnerApplication(ctx, u.cacheDir, "")
	if err != nil {
		return "", "", err
	}
	if u.version != app.Version {
		u.log.Info("runner application ready", "version", app.Version)
		u.version = app.Version
	}
	if user, ok := u.cloud.(cloud.RunnerSourceUser); ok {
		user.SetRunnerSource(cloud.RunnerSource{URL: app.URL, Token: app.DownloadToken, SHA256: app.SHA256, Version: app.Version, Arch: app.Arch})
	}
	return app.Path, app.Version, nil
}

// update is the update-dependencies action. A change it sees stays
// pending for the next cycle, which replaces the idle runners.
func (u *updater) update(ctx context.Context) (api.UpdateResult, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	changed, err := u.cloud.Prepare(ctx, u.fetch)
	if err != nil {
		return api.UpdateResult{}, err
	}
	u.prepared = time.Now()
	u.pending = u.pending || changed
	return api.UpdateResult{Updated: changed, RunnerVersion: u.version}, nil
}
