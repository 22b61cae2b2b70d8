// Package scaleset is the demand side of the manager: the unit's own
// GitHub runner scale set, over github.com/actions/scaleset. It makes sure
// the set exists (in the configured runner group, with the configured
// labels), registers the unit's runners in it (JIT configurations), and
// listens to the set's message session, handing GitHub's demand (the
// assigned jobs) and job events to a listener.Scaler. What it cannot fix
// itself (a GitHub Enterprise Server without scale sets, labels dropped, a
// session another listener holds) it says in words through Problem.
package scaleset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gh "github.com/actions/scaleset"
	"github.com/actions/scaleset/listener"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
)

// App is GitHub App authentication.
type App struct {
	ID             int64
	ClientID       string // the App's client ID; when set, the JWTs' issuer instead of ID
	InstallationID int64
	PrivateKey     string // PEM
}

// issuer is the App's JWT issuer: its client ID, or its numeric ID.
func (a *App) issuer() string {
	if a.ClientID != "" {
		return a.ClientID
	}
	return strconv.FormatInt(a.ID, 10)
}

// Config is the unit's scale set: where (what config.File.GitHub holds),
// whose, and how many runners it can supply.
type Config struct {
	// APIURL is the REST API root as the config file holds it (empty:
	// github.com); Path is "org" or "owner/repo".
	APIURL, Path string
	// Token is a personal access token; App authenticates as a GitHub
	// App installation instead.
	Token string
	App   *App
	// Group is the runner group's name; empty or "default" is the default
	// group (id 1), as for repositories always.
	Group string
	// Option is the runner-scale-set option's value: the set's first
	// label, and the start of its name (runner.Identity.ScaleSetName).
	Option string
	// Labels follow Option as the set's labels.
	Labels   []string
	Identity runner.Identity
	// MaxRunners is what the unit can supply (0: no cap), the capacity
	// each poll tells GitHub so it assigns no more jobs than that.
	MaxRunners int
	Logger     *slog.Logger
	// Timing: zero values are the defaults (see DefaultTiming).
	Timing Timing
}

// Timing bounds every call and paces the retries.
type Timing struct {
	// Request bounds each HTTP attempt of a call; Poll each long poll of
	// the message queue (the broker holds one about 50 s).
	Request, Poll time.Duration
	// Retries is how many times the client retries a transport error or
	// a 5xx (with its own backoff, 1 s to 30 s); 0: the default, negative:
	// none.
	Retries int
	// Call bounds one Ensure or Register, retries included.
	Call time.Duration
	// Close bounds the session's DELETE on stop.
	Close time.Duration
	// Conflict is how often a session held by another listener (409) is
	// asked for again; after ConflictPatience the problem is reported and
	// it is asked for every ConflictSlow. A crashed manager's session
	// expires server-side within minutes.
	Conflict, ConflictPatience, ConflictSlow time.Duration
	// BackoffMin and BackoffMax pace new sessions after a failure,
	// doubling; a session that answers a poll resets it.
	BackoffMin, BackoffMax time.Duration
}

// DefaultTiming is a manager's: calls that fail give up within minutes,
// never the client's default 5 minutes an attempt.
var DefaultTiming = Timing{
	Request: time.Minute, Poll: 90 * time.Second, Retries: 4,
	Call: 3 * time.Minute, Close: 10 * time.Second,
	Conflict: 10 * time.Second, ConflictPatience: 3 * time.Minute, ConflictSlow: time.Minute,
	BackoffMin: time.Second, BackoffMax: 2 * time.Minute,
}

func (t Timing) withDefaults() Timing {
	d := DefaultTiming
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.Request, &d.Request}, {&t.Poll, &d.Poll}, {&t.Call, &d.Call}, {&t.Close, &d.Close},
		{&t.Conflict, &d.Conflict}, {&t.ConflictPatience, &d.ConflictPatience}, {&t.ConflictSlow, &d.ConflictSlow},
		{&t.BackoffMin, &d.BackoffMin}, {&t.BackoffMax, &d.BackoffMax},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if t.Retries == 0 {
		t.Retries = d.Retries
	}
	return t
}

// Set is the unit's runner scale set. Its methods are safe for concurrent
// use: the engine registers runners while Listen runs.
type Set struct {
	cfg       Config
	timing    Timing
	name      string
	owner     string
	labels    []string
	hosted    bool
	configURL string
	log       *slog.Logger
	client    *gh.Client

	// ensureMu makes concurrent Ensures (Listen's, the engine's
	// Registers') one.
	ensureMu sync.Mutex
	// id is the set's id once Ensure found or made it; 0: unknown (or
	// deleted by GitHub since).
	id  atomic.Int64
	max atomic.Int64

	mu    sync.Mutex
	setup string // Ensure's problem
	// setupBlocks: only the operator can clear Ensure's problem (a
	// GitHub without scale sets).
	setupBlocks bool
	session     string // the session's problem
	listener    *listener.Listener
}

// New returns the unit's scale set; it connects on first use.
func New(cfg Config) (*Set, error) {
	if cfg.Option == "" {
		return nil, errors.New("cannot use a runner scale set without a name")
	}
	configURL, err := ConfigURL(cfg.APIURL, cfg.Path)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timing := cfg.Timing.withDefaults()
	retries := timing.Retries
	if retries < 0 {
		retries = 0 // set after the client's defaults: none
	}
	opts := []gh.HTTPOption{gh.WithTimeout(timing.Request), gh.WithRetryMax(retries), gh.WithLogger(log)}
	info := gh.SystemInfo{System: "github-runner-charm", Subsystem: "manager"}
	var client *gh.Client
	if cfg.App != nil {
		client, err = gh.NewClientWithGitHubApp(gh.ClientWithGitHubAppConfig{
			GitHubConfigURL: configURL,
			GitHubAppAuth: gh.GitHubAppAuth{
				ClientID: cfg.App.issuer(), InstallationID: cfg.App.InstallationID, PrivateKey: cfg.App.PrivateKey,
			},
			SystemInfo: info,
		}, opts...)
	} else {
		client, err = gh.NewClientWithPersonalAccessToken(gh.NewClientWithPersonalAccessTokenConfig{
			GitHubConfigURL: configURL, PersonalAccessToken: cfg.Token, SystemInfo: info,
		}, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot make the scale set client for %s: %w", cfg.Path, err)
	}
	s := &Set{
		cfg: cfg, timing: timing, log: log, client: client, configURL: configURL,
		name:   cfg.Identity.ScaleSetName(cfg.Option),
		owner:  cfg.Identity.UnitName() + "-" + cfg.Identity.ModelTag(),
		labels: setLabels(cfg.Option, cfg.Labels),
		hosted: isHosted(configURL),
	}
	s.SetMaxRunners(cfg.MaxRunners)
	return s, nil
}

// setLabels is the set's labels: the option first, then the others once.
func setLabels(option string, labels []string) []string {
	out := []string{option}
	for _, l := range labels {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

// ConfigURL is the "GitHub config URL" the client wants (the scope's web
// address) for our REST API root and path: https://api.github.com →
// https://github.com/<path>; https://api.SUB.ghe.com → https://SUB.ghe.com/<path>;
// https://HOST/api/v3 → https://HOST/<path>. The client derives the API
// root back from it (api.<host>, or <host>/api/v3).
func ConfigURL(apiURL, path string) (string, error) {
	api, err := config.ParseAPIURL(apiURL)
	if err != nil {
		return "", fmt.Errorf("cannot use the GitHub API URL for a scale set: it %w", err)
	}
	path = strings.Trim(path, "/")
	if path == "" {
		return "", errors.New("cannot use a runner scale set without a GitHub path")
	}
	u := url.URL{Scheme: api.Scheme, Host: api.Host, Path: "/" + path}
	if host := strings.ToLower(api.Hostname()); host == "api.github.com" || strings.HasSuffix(host, ".ghe.com") {
		u.Host = strings.TrimPrefix(api.Host, "api.")
	}
	return u.String(), nil
}

// isHosted is the client's rule: github.com and ghe.com are GitHub's own,
// anything else a GitHub Enterprise Server.
func isHosted(configURL string) bool {
	u, err := url.Parse(configURL)
	if err != nil {
		return false
	}
	host := strings.ToLower(u.Host)
	return host == "github.com" || strings.HasSuffix(host, ".ghe.com")
}

// Name is the set's name.
func (s *Set) Name() string { return s.name }

// Labels is the set's labels, as asked for.
func (s *Set) Labels() []string { return slices.Clone(s.labels) }

// Problem is what keeps the set from working as configured, in words; ""
// when nothing does.
func (s *Set) Problem() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for _, p := range []string{s.setup, s.session} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "; ")
}

// NeedsOperator tells whether Problem is one only the operator can clear.
func (s *Set) NeedsOperator() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setupBlocks
}

func (s *Set) setBlocks(blocks bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setupBlocks = blocks
}

func (s *Set) setProblem(field *string, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*field = text
}

// SetMaxRunners changes what the unit can supply (0: no cap); the next
// poll tells GitHub.
func (s *Set) SetMaxRunners(n int) {
	capacity := int64(n)
	if n <= 0 || n > math.MaxInt32 {
		capacity = math.MaxInt32
	}
	s.max.Store(capacity)
	s.mu.Lock()
	l := s.listener
	s.mu.Unlock()
	if l != nil {
		l.SetMaxRunners(int(capacity))
	}
}

// Ensure finds the unit's scale set, or makes it, with the configured
// labels. Its failures, and labels GitHub dropped, are also the problem.
func (s *Set) Ensure(ctx context.Context) error {
	s.ensureMu.Lock()
	defer s.ensureMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, s.timing.Call)
	defer cancel()
	set, err := s.ensure(ctx)
	if err != nil {
		// The engine reports a Register's error as its problem: the
		// same words as Problem's.
		explained := s.explain(err)
		s.setProblem(&s.setup, explained.text)
		s.setBlocks(errors.Is(explained, ErrUnsupported))
		return explained
	}
	s.setBlocks(false)
	s.id.Store(int64(set.ID))
	s.setProblem(&s.setup, s.droppedLabels(set))
	return nil
}

func (s *Set) ensure(ctx context.Context) (*gh.RunnerScaleSet, error) {
	group, err := s.groupID(ctx)
	if err != nil {
		return nil, err
	}
	set, err := s.client.GetRunnerScaleSet(ctx, group, s.name)
	if err != nil {
		return nil, fmt.Errorf("cannot look up runner scale set %s: %w", s.name, err)
	}
	if set == nil {
		set, err = s.client.CreateRunnerScaleSet(ctx, &gh.RunnerScaleSet{
			Name: s.name, RunnerGroupID: group, Labels: s.wantLabels(),
			// As ARC: the image carries a current runner, and a runner
			// updating itself mid-life would outlive its instance's.
			RunnerSetting: gh.RunnerSetting{DisableUpdate: true},
		})
		if err != nil {
			return nil, fmt.Errorf("cannot create runner scale set %s: %w", s.name, err)
		}
		s.log.Info("runner scale set created", "scale-set", s.name, "scale-set-id", set.ID, "runner-group-id", group)
		return set, nil
	}
	if !slices.Equal(labelNames(set.Labels), s.labels) {
		// The labels option changed since the set was made.
		set, err = s.client.UpdateRunnerScaleSet(ctx, set.ID, &gh.RunnerScaleSet{Labels: s.wantLabels(), RunnerSetting: gh.RunnerSetting{DisableUpdate: true}})
		if err != nil {
			return nil, fmt.Errorf("cannot update the labels of runner scale set %s: %w", s.name, err)
		}
	}
	return set, nil
}

func (s *Set) groupID(ctx context.Context) (int, error) {
	if s.cfg.Group == "" || strings.EqualFold(s.cfg.Group, gh.DefaultRunnerGroup) || strings.Contains(s.cfg.Path, "/") {
		return 1, nil
	}
	g, err := s.client.GetRunnerGroupByName(ctx, s.cfg.Group)
	if err != nil {
		return 0, fmt.Errorf("cannot find runner group %q: %w", s.cfg.Group, err)
	}
	return g.ID, nil
}

func (s *Set) wantLabels() []gh.Label {
	out := make([]gh.Label, len(s.labels))
	for i, l := range s.labels {
		out[i] = gh.Label{Name: l, Type: "System"}
	}
	return out
}

func labelNames(labels []gh.Label) []string {
	out := make([]string, len(labels))
	for i, l := range labels {
		out[i] = l.Name
	}
	return out
}

// droppedLabels says which labels GitHub did not keep; "" when it kept
// them all.
func (s *Set) droppedLabels(set *gh.RunnerScaleSet) string {
	kept := labelNames(set.Labels)
	var dropped []string
	for _, l := range s.labels {
		if !slices.Contains(kept, l) {
			dropped = append(dropped, l)
		}
	}
	if len(dropped) == 0 {
		return ""
	}
	runsOn := strings.Join(kept, ", ")
	if runsOn == "" {
		runsOn = s.name
	}
	if !s.hosted {
		return fmt.Sprintf("GitHub Enterprise Server dropped the runner labels %s of scale set %s: more than one label on a scale set needs GHES 3.18 or later with the feature flag DistributedTask.AllowRunnerScaleSetCustomLabels (on by default from 3.21); until then jobs reach these runners with runs-on: %s",
			strings.Join(dropped, ", "), s.name, runsOn)
	}
	return fmt.Sprintf("GitHub dropped the runner labels %s of scale set %s; jobs reach these runners with runs-on: %s", strings.Join(dropped, ", "), s.name, runsOn)
}

// Register makes a JIT configuration for a runner of the set named name.
// A registration of that name left in the set (a create that failed after
// GitHub answered) is removed and the name registered again.
func (s *Set) Register(ctx context.Context, name string) (runnerID int64, jit string, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.timing.Call)
	defer cancel()
	for attempt := 0; ; attempt++ {
		id, err := s.setID(ctx)
		if err != nil {
			return 0, "", err
		}
		cfg, err := s.client.GenerateJitRunnerConfig(ctx, &gh.RunnerScaleSetJitRunnerSetting{Name: name}, id)
		if err == nil {
			if cfg == nil || cfg.Runner == nil || cfg.EncodedJITConfig == "" {
				return 0, "", fmt.Errorf("cannot register runner %s in scale set %s: GitHub answered no JIT configuration", name, s.name)
			}
			return int64(cfg.Runner.ID), cfg.EncodedJITConfig, nil
		}
		if attempt > 0 {
			return 0, "", fmt.Errorf("cannot register runner %s in scale set %s: %w", name, s.name, err)
		}
		switch {
		case errors.Is(err, gh.RunnerExistsError):
			if err := s.removeStale(ctx, name, id); err != nil {
				return 0, "", err
			}
		case isScaleSetNotFound(err):
			s.id.CompareAndSwap(int64(id), 0) // GitHub deleted the set: make it again
		default:
			return 0, "", fmt.Errorf("cannot register runner %s in scale set %s: %w", name, s.name, err)
		}
	}
}

// setID is the set's id, after Ensure if it is not known.
func (s *Set) setID(ctx context.Context) (int, error) {
	if id := s.id.Load(); id != 0 {
		return int(id), nil
	}
	if err := s.Ensure(ctx); err != nil {
		return 0, err
	}
	return int(s.id.Load()), nil
}

// removeStale removes runner name's registration if it is of this set.
func (s *Set) removeStale(ctx context.Context, name string, setID int) error {
	ref, err := s.client.GetRunnerByName(ctx, name)
	if err != nil {
		return fmt.Errorf("cannot look up runner %s, already registered: %w", name, err)
	}
	if ref == nil {
		return nil // gone since
	}
	if ref.RunnerScaleSetID != setID {
		return fmt.Errorf("cannot register runner %s in scale set %s: a runner of that name is registered elsewhere (scale set %d)", name, s.name, ref.RunnerScaleSetID)
	}
	s.log.Info("removing a stale registration", "runner", name, "runner-id", ref.ID)
	if err := s.client.RemoveRunner(ctx, int64(ref.ID)); err != nil {
		return fmt.Errorf("cannot remove the stale registration of runner %s: %w", name, err)
	}
	return nil
}

// Listen hands the set's demand and job events to scaler (and rec, if not
// nil) until ctx ends: one message session at a time, opened again after
// any failure, with backoff; the set made again if GitHub deleted it. On
// return the session is closed. Failures that last are the problem.
func (s *Set) Listen(ctx context.Context, scaler listener.Scaler, rec listener.MetricsRecorder) {
	t := &trouble{set: s}
	backoff := s.timing.BackoffMin
	wait := func() {
		sleep(ctx, backoff)
		backoff = min(2*backoff, s.timing.BackoffMax)
	}
	for ctx.Err() == nil {
		id, err := s.setID(ctx)
		if err != nil { // Ensure's problem says it
			s.log.Warn("cannot set up the runner scale set", "scale-set", s.name, "error", redact(err))
			wait()
			continue
		}
		session, err := s.client.MessageSessionClient(ctx, id, s.owner, gh.WithTimeout(s.timing.Poll))
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case isConflict(err):
			pause := s.timing.Conflict
			if t.failed(fmt.Sprintf("another listener holds the message session of runner scale set %s: a manager that stopped uncleanly leaves one for a few minutes; if it lasts, another unit or model uses this scale set's name", s.name)) {
				pause = s.timing.ConflictSlow
			}
			s.log.Info("the scale set's session is held by another listener; asking again", "scale-set", s.name, "in", pause)
			sleep(ctx, pause)
			continue
		case isScaleSetNotFound(err) || isStatus(err, 404):
			s.log.Warn("the runner scale set is gone; making it again", "scale-set", s.name, "scale-set-id", id)
			s.id.CompareAndSwap(int64(id), 0)
			wait()
			continue
		default:
			t.failed(fmt.Sprintf("cannot open the message session of runner scale set %s, retrying: %s", s.name, redact(err)))
			s.log.Warn("cannot open the scale set's message session", "scale-set", s.name, "error", redact(err))
			wait()
			continue
		}
		healthy := func() {
			t.healthy()
			backoff = s.timing.BackoffMin
		}
		err = s.run(ctx, session, id, &watchedScaler{Scaler: scaler, healthy: healthy}, rec)
		s.close(session)
		if ctx.Err() != nil {
			return
		}
		t.failed(fmt.Sprintf("the listener of runner scale set %s keeps failing, retrying: %s", s.name, redact(err)))
		s.log.Warn("the scale set's listener stopped; opening a new session", "scale-set", s.name, "error", redact(err), "in", backoff)
		wait()
	}
}

// trouble is how long Listen has been failing: a failure is the problem
// once failures lasted ConflictPatience (a crashed manager's session, a
// broker hiccup clear by themselves sooner).
type trouble struct {
	set   *Set
	since time.Time
}

// failed notes a failure, and reports it as the problem (true) once
// failures lasted.
func (t *trouble) failed(text string) bool {
	if t.since.IsZero() {
		t.since = time.Now()
	}
	if time.Since(t.since) < t.set.timing.ConflictPatience {
		return false
	}
	t.set.setProblem(&t.set.session, text)
	return true
}

func (t *trouble) healthy() {
	t.since = time.Time{}
	t.set.setProblem(&t.set.session, "")
}

// watchedScaler calls healthy once a session has answered a poll: the
// listener's second desired count (its first is the session's own
// statistics).
type watchedScaler struct {
	listener.Scaler
	calls   int
	healthy func()
}

func (w *watchedScaler) HandleDesiredRunnerCount(ctx context.Context, count int) (int, error) {
	if w.calls++; w.calls == 2 {
		w.healthy()
	}
	return w.Scaler.HandleDesiredRunnerCount(ctx, count)
}

func (s *Set) run(ctx context.Context, session *gh.MessageSessionClient, id int, scaler listener.Scaler, rec listener.MetricsRecorder) error {
	l, err := listener.New(session, listener.Config{ScaleSetID: id, MaxRunners: int(s.max.Load()), Logger: slog.New(quieter{s.log.Handler()})},
		listener.WithMetricsRecorder(rec))
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.listener = l
	s.mu.Unlock()
	// A SetMaxRunners between New and the store above is caught here.
	l.SetMaxRunners(int(s.max.Load()))
	defer func() {
		s.mu.Lock()
		s.listener = nil
		s.mu.Unlock()
	}()
	s.log.Info("listening to the runner scale set", "scale-set", s.name, "scale-set-id", id, "owner", s.owner)
	return l.Run(ctx, scaler)
}

// quieter lowers the listener's Info lines to Debug: it writes one for
// every poll and every message, which would bury the service's log.
type quieter struct{ slog.Handler }

func (q quieter) Enabled(ctx context.Context, l slog.Level) bool {
	return q.Handler.Enabled(ctx, demote(l))
}

func (q quieter) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return q.Handler.Handle(ctx, r)
}

func (q quieter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return quieter{q.Handler.WithAttrs(attrs)}
}
func (q quieter) WithGroup(name string) slog.Handler { return quieter{q.Handler.WithGroup(name)} }

func demote(l slog.Level) slog.Level {
	if l == slog.LevelInfo {
		return slog.LevelDebug
	}
	return l
}

// close deletes the session, within its own bound: the service is
// stopping, or the session failed (and, still alive server-side, would
// answer the next one 409).
func (s *Set) close(session *gh.MessageSessionClient) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timing.Close)
	defer cancel()
	if err := session.Close(ctx); err != nil {
		s.log.Info("cannot close the scale set's message session (it expires by itself)", "scale-set", s.name, "error", redact(err))
	}
}

// ErrUnsupported: GitHub has no runner scale sets (a GitHub Enterprise
// Server before 3.9); only the operator can change that.
var ErrUnsupported = errors.New("runner scale sets are not supported")

// explainedError is an error in the words the operator reads.
type explainedError struct {
	text string
	errs []error // the client's, and ErrUnsupported if it applies
}

func (e *explainedError) Error() string   { return e.text }
func (e *explainedError) Unwrap() []error { return e.errs }

// explain is Ensure's error in words.
func (s *Set) explain(err error) *explainedError {
	if isRegistrationNotFound(err) && !s.hosted {
		return &explainedError{text: "this GitHub Enterprise Server does not support runner scale sets (they need 3.9 or later): unset runner-scale-set to use classic runners",
			errs: []error{ErrUnsupported, err}}
	}
	return &explainedError{text: fmt.Sprintf("cannot set up runner scale set %s: %s", s.name, redact(err)), errs: []error{err}}
}

// The client's errors carry no type for most statuses; its text does
// (`…failed(status="409 Conflict"): … TypeName: message`), and GitHub's
// exception type names are stable.
func isConflict(err error) bool {
	return strings.Contains(err.Error(), "SessionConflictException") || isStatus(err, 409)
}

func isScaleSetNotFound(err error) bool {
	return strings.Contains(err.Error(), "RunnerScaleSetNotFoundException")
}

// isRegistrationNotFound: GitHub has no runner-registration endpoint, as
// a GitHub Enterprise Server before 3.9.
func isRegistrationNotFound(err error) bool {
	return strings.Contains(err.Error(), "/actions/runner-registration") && isStatus(err, 404)
}

func isStatus(err error, code int) bool {
	return strings.Contains(err.Error(), fmt.Sprintf(`status="%d `, code))
}

// queries matches a URL's query in an error: a queue URL's may carry a
// token, which must not reach a log or the status.
var queries = regexp.MustCompile(`\?[^\s"]*`)

func redact(err error) string {
	if err == nil {
		return ""
	}
	return queries.ReplaceAllString(err.Error(), "?…")
}

// sleep waits d or until ctx ends; false if ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
