package github

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testToken is a recognisable secret: no log line or error may contain it.
const testToken = "ghp_SECRETsecretSECRET0123456789abcdef"

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testConfig is a PAT config for path against baseURL with fast timeouts,
// logging at debug level into logs.
func testConfig(path, baseURL string, logs *syncBuffer) Config {
	return Config{
		Path:           path,
		BaseURL:        baseURL,
		Token:          testToken,
		RequestTimeout: 2 * time.Second,
		MaxAttempts:    3,
		RetryBaseDelay: time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func mustNew(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

// countingServer serves handler under /api/v3 (the GHES layout) and counts
// the requests that reach it.
type countingServer struct {
	*httptest.Server
	requests atomic.Int64
}

func newCountingServer(t *testing.T, handler http.HandlerFunc) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if !strings.HasPrefix(r.URL.Path, "/api/v3/") && !strings.HasPrefix(r.URL.Path, "/download/") {
			http.Error(w, `{"message":"Not Found"}`, http.StatusNotFound)
			return
		}
		handler(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// apiURL is the base URL a user would configure for this "GHES".
func (s *countingServer) apiURL() string { return s.URL }

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(body))
}

// assertNoSecret fails if s contains any of the secrets.
func assertNoSecret(t *testing.T, what, s string, secrets ...string) {
	t.Helper()
	for _, secret := range secrets {
		if secret != "" && strings.Contains(s, secret) {
			t.Errorf("%s contains a secret %q: %s", what, secret[:6]+"…", s)
		}
	}
}
