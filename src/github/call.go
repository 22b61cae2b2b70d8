package github

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	gh "github.com/google/go-github/v62/github"
)

// defaultSecondaryWait is how long to back off from a secondary limit that
// names no time: GitHub's documentation says "wait at least one minute".
const defaultSecondaryWait = time.Minute

// callerDeadline is the detail of an error caused by the caller's context.
const callerDeadline = "caller's deadline passed"

// request is one go-github call, run under the per-attempt context.
type request func(ctx context.Context) (*gh.Response, error)

// call runs req with a per-request timeout, retrying 5xx and dropped
// connections with exponential backoff, and turns any failure into *Error.
func (c *Client) call(ctx context.Context, op string, req request) error {
	if held := c.checkHold(op); held != nil {
		return held
	}
	for attempt := 1; ; attempt++ {
		attemptCtx, cancel := context.WithTimeout(ctx, c.requestTimeout)
		resp, err := req(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		e := c.classify(ctx, op, resp, err)
		e.Attempts = attempt
		if e.Kind != ErrUnavailable || attempt >= c.maxAttempts {
			c.finish(e)
			return e
		}
		delay := c.backoff(attempt)
		c.logger.Warn("GitHub request failed, retrying",
			slog.String("op", op), slog.Int("status", e.StatusCode), slog.String("detail", e.Detail),
			slog.Int("attempt", attempt), slog.Duration("delay", delay))
		select {
		case <-ctx.Done():
			e := c.contextError(ctx, op)
			c.finish(e)
			return e
		case <-time.After(delay):
		}
	}
}

// backoff doubles from RetryBaseDelay, with jitter so that many units do not
// retry in step.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.retryBaseDelay << (attempt - 1)
	if d > maxRetryDelay || d <= 0 {
		d = maxRetryDelay
	}
	return d/2 + rand.N(d/2+1)
}

// checkHold refuses a call while a rate limit we were told about is in
// force. go-github v62 already refuses calls locally after a 403 rate-limit
// answer (and after any response with x-ratelimit-remaining 0), but not
// after a 429, which it does not recognise. We hold for both so the two
// status codes behave alike and we never hammer GitHub while limited, which
// GitHub punishes with longer bans.
func (c *Client) checkHold(op string) *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold == nil {
		return nil
	}
	if !time.Now().Before(c.hold.until) {
		c.hold = nil
		return nil
	}
	e := *c.hold
	e.Op = op
	e.StatusCode = 0
	e.Detail = "not calling GitHub until the limit lifts"
	if e.Kind == ErrSecondaryRateLimited {
		e.RetryAfter = time.Until(e.until).Round(time.Second)
	}
	c.finish(&e)
	return &e
}

func (c *Client) setHold(e *Error) {
	if e.until.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold == nil || e.until.After(c.hold.until) {
		held := *e
		c.hold = &held
	}
}

// classify maps a go-github or transport error to *Error. The go-github
// error itself is dropped: it holds the *http.Response and its request.
func (c *Client) classify(ctx context.Context, op string, resp *gh.Response, err error) *Error {
	e := &Error{Op: op, Path: c.scope.String()}
	if ctx.Err() != nil {
		return c.contextError(ctx, op)
	}

	var rateErr *gh.RateLimitError
	var abuseErr *gh.AbuseRateLimitError
	var errResp *gh.ErrorResponse
	var appErr *ghinstallation.HTTPError
	switch {
	case errors.As(err, &rateErr):
		// A real 403 with remaining 0, or go-github's local refusal (whose
		// fake response has no headers, so the Rate is what we have).
		e.StatusCode = http.StatusForbidden
		e.Detail = rateErr.Message
		e.Kind = ErrRateLimited
		e.ResetAt = rateErr.Rate.Reset.Time
		e.until = e.ResetAt
	case errors.As(err, &abuseErr):
		e.StatusCode = http.StatusForbidden
		e.Detail = abuseErr.Message
		e.Kind = ErrSecondaryRateLimited
		e.RetryAfter = defaultSecondaryWait
		if abuseErr.RetryAfter != nil && *abuseErr.RetryAfter > 0 {
			e.RetryAfter = *abuseErr.RetryAfter
		}
		e.until = time.Now().Add(e.RetryAfter)
	case errors.As(err, &errResp):
		c.classifyStatus(e, errResp)
	case errors.As(err, &appErr):
		c.classifyAppTokenFailure(e, appErr)
	case errors.Is(err, context.DeadlineExceeded):
		e.Kind = ErrTimeout
		e.Detail = "no answer within " + c.requestTimeout.String()
		e.cause = context.DeadlineExceeded
	default:
		// Dropped connections, resets, truncated bodies: worth a retry.
		// go-github has already stripped secrets from URLs in *url.Error.
		e.Kind = ErrUnavailable
		e.Detail = err.Error()
	}
	if e.Kind == ErrRateLimited || e.Kind == ErrSecondaryRateLimited {
		c.setHold(e)
	}
	return e
}

// classifyStatus handles an HTTP error answer. go-github v62 leaves a 429
// as a plain ErrorResponse, so the rate-limit signs are read here for 403
// and 429 alike.
func (c *Client) classifyStatus(e *Error, errResp *gh.ErrorResponse) {
	status := errResp.Response.StatusCode
	header := errResp.Response.Header
	e.StatusCode = status
	e.Detail = errResp.Message
	switch {
	case status == http.StatusUnauthorized:
		e.Kind = ErrBadCredentials
	case (status == http.StatusForbidden || status == http.StatusTooManyRequests) && header.Get("X-Ratelimit-Remaining") == "0":
		e.Kind = ErrRateLimited
		e.ResetAt = parseEpoch(header.Get("X-Ratelimit-Reset"))
		e.until = e.ResetAt
		if e.until.IsZero() {
			e.until = time.Now().Add(defaultSecondaryWait)
		}
	case status == http.StatusTooManyRequests || (status == http.StatusForbidden && isSecondaryLimit(errResp)):
		e.Kind = ErrSecondaryRateLimited
		e.RetryAfter = defaultSecondaryWait
		if secs, err := strconv.Atoi(header.Get("Retry-After")); err == nil && secs > 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
		e.until = time.Now().Add(e.RetryAfter)
	case status == http.StatusForbidden:
		e.Kind = ErrPermission
		if accepted := sanitizePermissions(header.Get("X-Accepted-Github-Permissions")); accepted != "" {
			e.Detail += " (GitHub accepts: " + accepted + ")"
		}
	case status == http.StatusNotFound:
		e.Kind = ErrNotFound
	case status == http.StatusConflict:
		e.Kind = ErrRunnerExists
	case status >= 500:
		e.Kind = ErrUnavailable
	default:
		e.Kind = ErrRejected
	}
}

func isSecondaryLimit(errResp *gh.ErrorResponse) bool {
	if errResp.Response.Header.Get("Retry-After") != "" {
		return true
	}
	doc := errResp.DocumentationURL
	return strings.Contains(doc, "secondary-rate-limits") || strings.Contains(doc, "abuse-rate-limits") ||
		strings.Contains(strings.ToLower(errResp.Message), "secondary rate limit")
}

// classifyAppTokenFailure handles ghinstallation failing to get an
// installation token: the App's id, installation id or key is wrong, or
// GitHub is down.
func (c *Client) classifyAppTokenFailure(e *Error, appErr *ghinstallation.HTTPError) {
	e.Op += " (getting a GitHub App installation token)"
	if appErr.Response == nil {
		e.Kind = ErrUnavailable
		if appErr.RootCause != nil {
			e.Detail = appErr.RootCause.Error()
		}
		return
	}
	// ghinstallation leaves the body open for inspection; we do not need it.
	appErr.Response.Body.Close()
	e.StatusCode = appErr.Response.StatusCode
	switch {
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusNotFound:
		// 401: bad JWT (app id or key); 404: no such installation.
		e.Kind = ErrBadCredentials
	case e.StatusCode == http.StatusForbidden:
		e.Kind = ErrPermission
	case e.StatusCode >= 500:
		e.Kind = ErrUnavailable
	default:
		e.Kind = ErrRejected
	}
}

// contextError reports the caller's cancellation or deadline.
func (c *Client) contextError(ctx context.Context, op string) *Error {
	e := &Error{Op: op, Path: c.scope.String(), cause: ctx.Err()}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		e.Kind = ErrTimeout
		e.Detail = callerDeadline
	} else {
		e.Kind = context.Canceled
	}
	return e
}

func parseEpoch(s string) time.Time {
	secs, err := strconv.ParseInt(s, 10, 64)
	if err != nil || secs <= 0 {
		return time.Time{}
	}
	return time.Unix(secs, 0)
}

// sanitizePermissions keeps a header value only if it looks like a
// permission list ("administration=write; organization_self_hosted_runners=write").
func sanitizePermissions(v string) string {
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || r == '=' || r == ',' || r == ';' || r == ' ' || r == '-' || r == ':') {
			return ""
		}
	}
	return strings.TrimSpace(v)
}
