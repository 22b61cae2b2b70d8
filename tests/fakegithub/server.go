package fakegithub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultToken is the token a Server accepts when Options.Tokens is empty. It
// may use every repository and organisation.
const DefaultToken = "fake-github-token"

// DefaultRunnerVersion is the runner application version the downloads
// endpoint offers unless Options.RunnerVersion says otherwise.
const DefaultRunnerVersion = "2.336.0"

// apiPrefix is where GitHub Enterprise Server serves the REST API.
const apiPrefix = "/api/v3"

// Options configure a Server. The zero value is ready to use.
type Options struct {
	// Tokens the API accepts. Empty means one token, DefaultToken, with
	// access to everything.
	Tokens []Token
	// RateLimit is the primary rate limit per token and hour (default 5000).
	RateLimit int
	// RunnerVersion of the runner application offered by the downloads
	// endpoint (default DefaultRunnerVersion).
	RunnerVersion string
	// StatusLag is how long a runner that has connected stays "offline"
	// before GitHub shows it "online".
	StatusLag time.Duration
	// JobLostTimeout is how long a job's runner process may go unheard
	// (it renews the job every sixth of this, and polls while idle)
	// before GitHub fails the job as lost (Job.Lost): its process or its
	// machine died mid-job. Zero means never: a job whose runner vanished
	// stays in progress until CompleteJob. A Server with it set runs a
	// watcher until Close.
	JobLostTimeout time.Duration
	// AdvertiseURL is the base URL runners and downloads use to reach the
	// fake, e.g. "http://10.1.2.1:8080" when the API is reached on loopback
	// but runners live behind an LXD bridge. Empty means the scheme and
	// host of the API request that produced the URL.
	AdvertiseURL string
	// Logger receives one debug line per request; nil discards. Tokens and
	// JIT configs are never logged.
	Logger *slog.Logger

	// GHESVersion makes the fake a GitHub Enterprise Server of that
	// version, e.g. "3.17": before 3.9 there are no scale sets
	// (runner-registration answers 404); before 3.18 a scale set keeps
	// only its name as its label, the others silently dropped. Empty: like
	// github.com.
	GHESVersion string
	// ScaleSetMode is ScaleSetModeGitHub (the default: jobs assigned
	// server-side, JobAssigned) or ScaleSetModeGHES (JobAvailable, then
	// assigned once the listener acquires them).
	ScaleSetMode string
	// ScaleSetLongPoll is how long a message poll waits before 202
	// (default 2s; GitHub's is about 50s).
	ScaleSetLongPoll time.Duration
	// ScaleSetSessionExpiry ends a message session nobody polled for that
	// long (default 1m; negative: never).
	ScaleSetSessionExpiry time.Duration
	// ScaleSetAssignTimeout is how long a job assigned to a scale set may
	// wait for one of its runners before it is canceled and assigned again
	// (default 5m).
	ScaleSetAssignTimeout time.Duration
	// ScaleSetTokenLifetime is the lifetime of the admin and message-queue
	// tokens (JWT exp; default 1h). The client renews an admin token with
	// less than a minute left before every call.
	ScaleSetTokenLifetime time.Duration
}

// Token is an API credential and what it may reach.
type Token struct {
	// Value is the secret sent as "Authorization: Bearer <Value>" or
	// "Authorization: token <Value>".
	Value string
	// Scope limits the token to one repository ("owner/repo") or one
	// organisation ("org", which includes the organisation's repositories).
	// Empty means everything. Like GitHub, the fake answers 404 for
	// repositories and organisations outside the scope, and 403 for an
	// organisation whose repository alone the token may use.
	Scope string
	// Forbidden makes the token authenticate but lack the administration
	// permission the runner endpoints need: they answer 403 "Resource not
	// accessible by personal access token".
	Forbidden bool
}

// Server is a fake GitHub REST API for self-hosted runners, a broker for
// fake runner processes, and a download site for the fake runner
// application. It is an http.Handler; use Start, NewTest or httptest to
// serve it. All methods are safe for concurrent use.
type Server struct {
	logger       *slog.Logger
	advertiseURL string

	mu        sync.Mutex
	tokens    map[string]Token
	rateLimit int
	budgets   map[string]*budget // by token; "" is the unauthenticated budget
	faults    []*activeFault
	counts    map[string]int
	requestID uint64
	state     // runners, groups, jobs, downloads: see state.go

	fakeMux *http.ServeMux

	httpServer *http.Server
	url        string
	closed     chan struct{}
	closeOnce  sync.Once
}

// New returns a Server that is not yet listening.
func New(opts Options) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	rateLimit := opts.RateLimit
	if rateLimit <= 0 {
		rateLimit = 5000
	}
	version := opts.RunnerVersion
	if version == "" {
		version = DefaultRunnerVersion
	}
	s := &Server{
		logger:       logger,
		advertiseURL: strings.TrimSuffix(opts.AdvertiseURL, "/"),
		tokens:       make(map[string]Token),
		rateLimit:    rateLimit,
		budgets:      make(map[string]*budget),
		counts:       make(map[string]int),
		closed:       make(chan struct{}),
	}
	if err := s.initState(version, opts.StatusLag, opts.JobLostTimeout); err != nil {
		return nil, fmt.Errorf("cannot create fake GitHub: %w", err)
	}
	if err := s.initScaleSets(opts); err != nil {
		return nil, fmt.Errorf("cannot create fake GitHub: %w", err)
	}
	if opts.JobLostTimeout < 0 {
		return nil, errors.New("cannot create fake GitHub: negative JobLostTimeout")
	}
	s.fakeMux = s.newFakeMux()
	tokens := opts.Tokens
	if len(tokens) == 0 {
		tokens = []Token{{Value: DefaultToken}}
	}
	for _, t := range tokens {
		if t.Value == "" {
			return nil, errors.New("cannot create fake GitHub: empty token")
		}
		s.tokens[t.Value] = t
	}
	if opts.JobLostTimeout > 0 {
		go s.watchLostJobs()
	}
	return s, nil
}

// NewTest starts a Server on a loopback port for the duration of a test.
func NewTest(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Start serves the fake on addr ("127.0.0.1:0", "0.0.0.0:8080", an LXD
// bridge address…) until Close. URL then returns the base URL.
func (s *Server) Start(addr string) error {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", addr, err)
	}
	s.mu.Lock()
	s.httpServer = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	s.url = "http://" + reachableHostPort(listener.Addr().(*net.TCPAddr))
	s.mu.Unlock()
	go func() {
		err := s.httpServer.Serve(listener)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("cannot serve", "error", err)
		}
	}()
	return nil
}

// reachableHostPort turns a wildcard listen address into loopback, so that
// URL is something a client can dial.
func reachableHostPort(addr *net.TCPAddr) string {
	ip := addr.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(addr.Port))
}

// URL is the base URL of a started Server, without a trailing slash, e.g.
// "http://127.0.0.1:41234". go-github wants URL()+"/" as BaseURL, or
// WithEnterpriseURLs(URL(), URL()), which talks to URL()+"/api/v3/".
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close stops a started Server and releases every waiting long poll.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	s.mu.Lock()
	httpServer := s.httpServer
	s.mu.Unlock()
	if httpServer == nil {
		return nil
	}
	return httpServer.Close()
}

// AddToken adds a token, or replaces the token with the same value: use it
// to change a token's scope or permission in the middle of a test.
func (s *Server) AddToken(t Token) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[t.Value] = t
}

// RemoveToken revokes a token: it answers 401 "Bad credentials" from now on.
func (s *Server) RemoveToken(value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, value)
}

// call is what the API handlers know about one request.
type call struct {
	endpoint *endpoint
	vars     map[string]string
	token    Token
	scope    string // "owner/repo" or "org", the runner scope the path names
	budget   *budget
	// omitBusy: an OmitBusyRunners fault leaves busy runners out of a list.
	omitBusy bool
}

// ServeHTTP answers the GitHub API under "/" and "/api/v3/", and the fake's
// own endpoints under "/_fake/".
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if s.serveScaleSets(w, r) {
		return
	}
	if strings.HasPrefix(path, fakePrefix) {
		s.serveFake(w, r)
		return
	}
	if strings.HasPrefix(path, apiPrefix+"/") {
		path = strings.TrimPrefix(path, apiPrefix)
	}
	e, vars := route(r.Method, path)
	if e == nil {
		s.logger.Debug("request", "method", r.Method, "path", r.URL.Path, "status", http.StatusNotFound)
		s.writeError(w, http.StatusNotFound, nil, "Not Found", docsBase)
		return
	}
	s.serveAPI(w, r, e, vars)
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, e *endpoint, vars map[string]string) {
	c := &call{endpoint: e, vars: vars, scope: scopeOf(vars)}
	s.mu.Lock()
	s.counts[e.key]++
	token, authErr := s.authenticate(r)
	c.token = token
	c.budget = s.budgetFor(token.Value)
	s.mu.Unlock()
	s.logger.Debug("request", "endpoint", e.key, "path", r.URL.Path)

	if authErr != "" {
		s.writeError(w, http.StatusUnauthorized, c.budget, authErr, docsBase)
		return
	}
	if e.key != GetRateLimit && !s.spend(c.budget) {
		s.writePrimaryRateLimit(w, http.StatusForbidden, c.budget, time.Time{})
		return
	}
	if s.applyFaults(w, r, c) {
		return
	}
	if status, message := s.authorize(c); status != 0 {
		s.writeError(w, status, c.budget, message, e.docURL)
		return
	}
	e.handle(s, w, r, c)
}

// authenticate returns the token of the request, or the message GitHub
// sends with 401. The caller holds s.mu.
func (s *Server) authenticate(r *http.Request) (Token, string) {
	header := r.Header.Get("Authorization")
	if header == "" {
		return Token{}, "Requires authentication"
	}
	scheme, value, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "bearer") && !strings.EqualFold(scheme, "token") {
		return Token{}, "Bad credentials"
	}
	token, ok := s.tokens[strings.TrimSpace(value)]
	if !ok {
		return Token{}, "Bad credentials"
	}
	return token, ""
}

// authorize applies the token's scope and permission to the path, the way
// GitHub hides what a token cannot see (404) and refuses what it sees but
// may not administer (403).
func (s *Server) authorize(c *call) (status int, message string) {
	if c.scope == "" {
		return 0, ""
	}
	visible, admin := tokenReaches(c.token.Scope, c.scope)
	switch {
	case !visible:
		return http.StatusNotFound, "Not Found"
	case !admin || c.token.Forbidden:
		return http.StatusForbidden, "Resource not accessible by personal access token"
	}
	return 0, ""
}

// tokenReaches says whether a token scoped to tokenScope sees target and may
// administer it. An organisation-wide token reaches the organisation's
// repositories; a repository token sees its owner but may not administer it.
func tokenReaches(tokenScope, target string) (visible, admin bool) {
	if tokenScope == "" || tokenScope == target {
		return true, true
	}
	targetOwner, _, targetIsRepo := strings.Cut(target, "/")
	tokenOwner, _, tokenIsRepo := strings.Cut(tokenScope, "/")
	switch {
	case !tokenIsRepo && targetIsRepo && targetOwner == tokenScope:
		return true, true
	case tokenIsRepo && !targetIsRepo && tokenOwner == target:
		return true, false
	}
	return false, false
}

// scopeOf is the runner scope a path names: "owner/repo" or "org".
func scopeOf(vars map[string]string) string {
	if org, ok := vars["org"]; ok {
		return org
	}
	if owner, ok := vars["owner"]; ok {
		return owner + "/" + vars["repo"]
	}
	return ""
}

// Counts returns how many API requests each endpoint received since the
// last ResetCounts, keyed like ListRepoRunners. Every request that matched
// an endpoint counts, including those answered with an error or a fault;
// requests to the fake's own /_fake/ endpoints do not.
func (s *Server) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := make(map[string]int, len(s.counts))
	for k, v := range s.counts {
		counts[k] = v
	}
	return counts
}

// Count returns the requests endpoint received since the last ResetCounts.
func (s *Server) Count(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[endpoint]
}

// TotalCount returns the API requests received since the last ResetCounts.
func (s *Server) TotalCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for _, v := range s.counts {
		total += v
	}
	return total
}

// ResetCounts sets every request counter to zero.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.counts)
}

// sleep waits for d unless the request or the server goes away first.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	case <-s.closed:
		return false
	}
}
