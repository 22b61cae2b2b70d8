package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const secondaryLimitBody = `{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",` +
	`"documentation_url":"https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}`

// TestErrorKinds drives every error answer through ListRunners and checks
// the kind, the operator sentence and the retry time. These answers are
// hand-made here so each header combination is explicit.
func TestErrorKinds(t *testing.T) {
	reset := time.Now().Add(30 * time.Minute).Truncate(time.Second)
	resetHeader := strconv.FormatInt(reset.Unix(), 10)
	tests := []struct {
		name       string
		path       string
		status     int
		header     map[string]string
		body       string
		wantKind   error
		wantStatus int
		wantWords  []string
		wantRetry  time.Duration // 0: RetryAt must say no; <0: RetryAt must be ResetAt
	}{{
		name: "401 bad token", path: "canonical/repo", status: 401, body: `{"message":"Bad credentials"}`,
		wantKind: ErrBadCredentials, wantStatus: 401, wantWords: []string{"invalid or expired", "new token"},
	}, {
		name: "403 repo permission", path: "canonical/repo", status: 403,
		header:   map[string]string{"X-Accepted-Github-Permissions": "administration=write"},
		body:     `{"message":"Resource not accessible by personal access token"}`,
		wantKind: ErrPermission, wantStatus: 403,
		wantWords: []string{"repository canonical/repo", "repo scope", `"Administration: read and write"`},
	}, {
		name: "403 org permission", path: "canonical", status: 403, body: `{"message":"Must have admin rights"}`,
		wantKind: ErrPermission, wantStatus: 403,
		wantWords: []string{"organisation canonical", "admin:org", `"Self-hosted runners: read and write"`},
	}, {
		name: "403 primary limit", path: "canonical/repo", status: 403,
		header:   map[string]string{"X-Ratelimit-Remaining": "0", "X-Ratelimit-Limit": "5000", "X-Ratelimit-Reset": resetHeader},
		body:     `{"message":"API rate limit exceeded"}`,
		wantKind: ErrRateLimited, wantStatus: 403, wantWords: []string{"rate limit exhausted until " + hhmmUTC(reset)}, wantRetry: -1,
	}, {
		name: "429 primary limit", path: "canonical/repo", status: 429,
		header:   map[string]string{"X-Ratelimit-Remaining": "0", "X-Ratelimit-Limit": "5000", "X-Ratelimit-Reset": resetHeader},
		body:     `{"message":"API rate limit exceeded"}`,
		wantKind: ErrRateLimited, wantStatus: 429, wantWords: []string{"rate limit exhausted until " + hhmmUTC(reset)}, wantRetry: -1,
	}, {
		name: "403 secondary limit with Retry-After", path: "canonical/repo", status: 403,
		header: map[string]string{"Retry-After": "90", "X-Ratelimit-Remaining": "4000"}, body: secondaryLimitBody,
		wantKind: ErrSecondaryRateLimited, wantStatus: 403, wantWords: []string{"secondary rate limit", "1m30s"}, wantRetry: 90 * time.Second,
	}, {
		name: "403 secondary limit by documentation URL only", path: "canonical/repo", status: 403,
		header: map[string]string{"X-Ratelimit-Remaining": "4000"}, body: secondaryLimitBody,
		wantKind: ErrSecondaryRateLimited, wantStatus: 403, wantWords: []string{"waiting 1m0s"}, wantRetry: time.Minute,
	}, {
		name: "429 secondary limit with Retry-After", path: "canonical", status: 429,
		header: map[string]string{"Retry-After": "30", "X-Ratelimit-Remaining": "4000"}, body: secondaryLimitBody,
		wantKind: ErrSecondaryRateLimited, wantStatus: 429, wantWords: []string{"waiting 30s"}, wantRetry: 30 * time.Second,
	}, {
		name: "429 without any sign", path: "canonical", status: 429, body: `{"message":"Too Many Requests"}`,
		wantKind: ErrSecondaryRateLimited, wantStatus: 429, wantWords: []string{"waiting 1m0s"}, wantRetry: time.Minute,
	}, {
		name: "404 repo", path: "canonical/missing", status: 404, body: `{"message":"Not Found"}`,
		wantKind: ErrNotFound, wantStatus: 404, wantWords: []string{"repository canonical/missing not found or not visible to the token"},
	}, {
		name: "404 org", path: "nowhere", status: 404, body: `{"message":"Not Found"}`,
		wantKind: ErrNotFound, wantStatus: 404, wantWords: []string{"organisation nowhere not found or not visible to the token"},
	}, {
		name: "400 other", path: "canonical", status: 400, body: `{"message":"Problems parsing JSON"}`,
		wantKind: ErrRejected, wantStatus: 400, wantWords: []string{"Problems parsing JSON"},
	}, {
		name: "503 after retries", path: "canonical", status: 503, body: `{"message":"Service Unavailable"}`,
		wantKind: ErrUnavailable, wantStatus: 503, wantWords: []string{"HTTP 503 after 3 attempts"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				writeJSON(w, tt.status, tt.body)
			})
			logs := &syncBuffer{}
			c := mustNew(t, testConfig(tt.path, srv.apiURL(), logs))
			_, err := c.ListRunners(context.Background(), "")
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("error = %v, want kind %v", err, tt.wantKind)
			}
			var ghErr *Error
			if !errors.As(err, &ghErr) || ghErr.StatusCode != tt.wantStatus {
				t.Fatalf("error = %#v, want *Error with status %d", err, tt.wantStatus)
			}
			if !strings.HasPrefix(err.Error(), "cannot list runners for "+tt.path+": ") {
				t.Errorf("error text %q does not say what failed", err)
			}
			msg := OperatorMessage(err)
			for _, w := range tt.wantWords {
				if !strings.Contains(msg, w) {
					t.Errorf("operator message %q lacks %q", msg, w)
				}
			}
			at, ok := retryAt(err)
			switch {
			case tt.wantRetry == 0 && ok:
				t.Errorf("RetryAt = %v, want none", at)
			case tt.wantRetry < 0 && (!ok || !at.Equal(reset)):
				t.Errorf("RetryAt = %v, %v; want the reset %v", at, ok, reset)
			case tt.wantRetry > 0 && (!ok || absDuration(time.Until(at)-tt.wantRetry) > 5*time.Second):
				t.Errorf("RetryAt = %v (in %v), want in %v", at, time.Until(at), tt.wantRetry)
			}
			assertNoSecret(t, "error", err.Error()+msg, testToken)
			assertNoSecret(t, "logs", logs.String(), testToken)
		})
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// TestRateLimitHoldsFurtherCalls: after a rate-limit answer, 403 or 429,
// the next call is refused without a request until the limit lifts.
func TestRateLimitHoldsFurtherCalls(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		header   map[string]string
		body     string
		wantKind error
	}{
		{"403 primary", 403, map[string]string{"X-Ratelimit-Remaining": "0"}, `{"message":"API rate limit exceeded"}`, ErrRateLimited},
		{"429 primary", 429, map[string]string{"X-Ratelimit-Remaining": "0"}, `{"message":"API rate limit exceeded"}`, ErrRateLimited},
		{"403 secondary", 403, map[string]string{"Retry-After": "1", "X-Ratelimit-Remaining": "4000"}, secondaryLimitBody, ErrSecondaryRateLimited},
		{"429 secondary", 429, map[string]string{"Retry-After": "1", "X-Ratelimit-Remaining": "4000"}, secondaryLimitBody, ErrSecondaryRateLimited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each waits for its limit to lift
			var limited atomic.Bool
			limited.Store(true)
			srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
				if limited.Load() {
					for k, v := range tt.header {
						w.Header().Set(k, v)
					}
					if tt.header["X-Ratelimit-Remaining"] == "0" {
						// The primary limit resets in one to two seconds.
						w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Unix()+2, 10))
					}
					writeJSON(w, tt.status, tt.body)
					return
				}
				writeJSON(w, 200, `{"total_count":0,"runners":[]}`)
			})
			c := mustNew(t, testConfig("canonical", srv.apiURL(), &syncBuffer{}))
			ctx := context.Background()
			if _, err := c.ListRunners(ctx, ""); !errors.Is(err, tt.wantKind) {
				t.Fatalf("first call error = %v, want %v", err, tt.wantKind)
			}
			limited.Store(false)
			_, err := c.ListRunners(ctx, "")
			if !errors.Is(err, tt.wantKind) {
				t.Fatalf("second call error = %v, want %v (held locally)", err, tt.wantKind)
			}
			if got := srv.requests.Load(); got != 1 {
				t.Fatalf("requests = %d, want 1: a held call must not reach GitHub", got)
			}
			if !strings.Contains(OperatorMessage(err), "rate limit") {
				t.Errorf("held call's operator message %q does not mention the limit", OperatorMessage(err))
			}
			at, ok := retryAt(err)
			if !ok {
				t.Fatalf("RetryAt on a held call says no")
			}
			time.Sleep(time.Until(at) + 50*time.Millisecond)
			if _, err := c.ListRunners(ctx, ""); err != nil {
				t.Fatalf("call after the limit lifted: %v", err)
			}
			if got := srv.requests.Load(); got != 2 {
				t.Fatalf("requests = %d, want 2", got)
			}
		})
	}
}

func TestServerErrorRetriedThenSucceeds(t *testing.T) {
	for _, status := range []int{500, 502, 503, 504} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			srv := newCountingServer(t, nil)
			srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if srv.requests.Add(1) < 3 {
					writeJSON(w, status, `{"message":"oops"}`)
					return
				}
				writeJSON(w, 200, `{"total_count":1,"runners":[{"id":7,"name":"r-1","os":"linux","status":"online","busy":false,"labels":[]}]}`)
			})
			c := mustNew(t, testConfig("canonical", srv.apiURL(), &syncBuffer{}))
			runners, err := c.ListRunners(context.Background(), "")
			if err != nil {
				t.Fatalf("ListRunners: %v", err)
			}
			if len(runners) != 1 || runners[0].ID != 7 {
				t.Fatalf("runners = %+v, want runner 7", runners)
			}
			if got := srv.requests.Load(); got != 3 {
				t.Fatalf("requests = %d, want 3 (two failures, one success)", got)
			}
		})
	}
}

func TestClientErrorsAreNotRetried(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 422} {
		srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, status, `{"message":"no"}`)
		})
		c := mustNew(t, testConfig("canonical", srv.apiURL(), &syncBuffer{}))
		if _, err := c.ListRunners(context.Background(), ""); err == nil {
			t.Fatalf("status %d: no error", status)
		}
		if got := srv.requests.Load(); got != 1 {
			t.Errorf("status %d: requests = %d, want 1", status, got)
		}
	}
}

// hijackAndClose drops the connection without an answer.
func hijackAndClose(t *testing.T, w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	conn.Close()
}

func TestDroppedConnection(t *testing.T) {
	t.Run("every attempt", func(t *testing.T) {
		srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { hijackAndClose(t, w) })
		c := mustNew(t, testConfig("canonical", srv.apiURL(), &syncBuffer{}))
		_, err := c.ListRunners(context.Background(), "")
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("error = %v, want ErrUnavailable", err)
		}
		if got := srv.requests.Load(); got != 3 {
			t.Errorf("requests = %d, want 3 attempts", got)
		}
		if msg := OperatorMessage(err); !strings.Contains(msg, "cannot reach the GitHub API (after 3 attempts)") {
			t.Errorf("operator message = %q", msg)
		}
	})
	t.Run("once", func(t *testing.T) {
		srv := newCountingServer(t, nil)
		srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if srv.requests.Add(1) == 1 {
				hijackAndClose(t, w)
				return
			}
			writeJSON(w, 200, `{"total_count":0,"runners":[]}`)
		})
		c := mustNew(t, testConfig("canonical", srv.apiURL(), &syncBuffer{}))
		if _, err := c.ListRunners(context.Background(), ""); err != nil {
			t.Fatalf("ListRunners: %v", err)
		}
		if got := srv.requests.Load(); got != 2 {
			t.Errorf("requests = %d, want 2", got)
		}
	})
}

func TestRequestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	cfg := testConfig("canonical", srv.apiURL(), &syncBuffer{})
	cfg.RequestTimeout = 100 * time.Millisecond
	c := mustNew(t, cfg)
	start := time.Now()
	_, err := c.ListRunners(context.Background(), "")
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want ErrTimeout and context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("took %v, want about the 100ms timeout", elapsed)
	}
	if got := srv.requests.Load(); got != 1 {
		t.Errorf("requests = %d, want 1: a timeout is not retried", got)
	}
	if msg := OperatorMessage(err); !strings.Contains(msg, "did not answer within 100ms") {
		t.Errorf("operator message = %q", msg)
	}
}

func TestCancelDuringBackoff(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 502, `{"message":"Bad Gateway"}`)
	})
	cfg := testConfig("canonical", srv.apiURL(), &syncBuffer{})
	cfg.RetryBaseDelay = time.Hour // backoff would be long; cancellation must cut it
	c := mustNew(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.ListRunners(ctx, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("took %v, cancellation did not cut the backoff", elapsed)
	}
}

func TestOperatorMessageOfOtherErrors(t *testing.T) {
	if got := OperatorMessage(nil); got != "" {
		t.Errorf("OperatorMessage(nil) = %q", got)
	}
	plain := errors.New("cannot do a thing")
	if got := OperatorMessage(fmt.Errorf("wrapped: %w", plain)); got != "wrapped: cannot do a thing" {
		t.Errorf("OperatorMessage(plain) = %q", got)
	}
}

// TestSecondaryLimitWithoutRetryAfterWaitsAMinute: go-github v62 would take
// x-ratelimit-reset (the primary window, here an hour away) as the wait for
// a 403 secondary limit without Retry-After; GitHub says one minute.
func TestSecondaryLimitWithoutRetryAfterWaitsAMinute(t *testing.T) {
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Ratelimit-Remaining", "4000")
		w.Header().Set("X-Ratelimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
		writeJSON(w, 403, secondaryLimitBody)
	})
	c := mustNew(t, testConfig("canonical", srv.apiURL(), &syncBuffer{}))
	_, err := c.ListRunners(context.Background(), "")
	if !errors.Is(err, ErrSecondaryRateLimited) {
		t.Fatalf("error = %v, want ErrSecondaryRateLimited", err)
	}
	at, _ := retryAt(err)
	if wait := time.Until(at); wait < 50*time.Second || wait > 70*time.Second {
		t.Errorf("RetryAt in %v, want about a minute", wait)
	}
	// The held call must say the same: go-github's own hold is a minute too.
	_, err = c.ListRunners(context.Background(), "")
	if at2, _ := retryAt(err); time.Until(at2) > 70*time.Second {
		t.Errorf("held call's RetryAt in %v, want within a minute", time.Until(at2))
	}
}

// retryAt tells when a rate-limited operation may be tried again: what the
// client holds calls until (see checkHold). ok is false
// for errors that are not rate limits.
func retryAt(err error) (at time.Time, ok bool) {
	var ghErr *Error
	if !errors.As(err, &ghErr) {
		return time.Time{}, false
	}
	switch ghErr.Kind {
	case ErrRateLimited, ErrSecondaryRateLimited:
		return ghErr.until, !ghErr.until.IsZero()
	}
	return time.Time{}, false
}
