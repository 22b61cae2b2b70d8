package github

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Kinds of failure. Every error the Client returns for a GitHub call is an
// *Error whose Kind is one of these, so callers check with errors.Is:
//
//	if errors.Is(err, github.ErrRunnerBusy) { keep the instance }
var (
	// ErrBadCredentials: 401, the token (or the App's credentials) is invalid or expired.
	ErrBadCredentials = errors.New("GitHub credentials are invalid or expired")
	// ErrPermission: 403 without rate-limit signs, the credentials lack a permission.
	ErrPermission = errors.New("GitHub credentials lack a permission")
	// ErrRateLimited: the primary rate limit is exhausted until Error.ResetAt.
	ErrRateLimited = errors.New("GitHub API rate limit exhausted")
	// ErrSecondaryRateLimited: a secondary limit was hit; wait Error.RetryAfter.
	ErrSecondaryRateLimited = errors.New("GitHub secondary rate limit hit")
	// ErrNotFound: 404 on the path, the repository or organisation does not
	// exist or is not visible to the credentials.
	ErrNotFound = errors.New("GitHub repository or organisation not found")
	// ErrUnavailable: 5xx or a dropped connection, still failing after the retries.
	ErrUnavailable = errors.New("GitHub API unavailable")
	// ErrTimeout: GitHub did not answer within the per-request timeout.
	ErrTimeout = errors.New("GitHub API timed out")
	// ErrRejected: any other 4xx (validation failures and the like).
	ErrRejected = errors.New("GitHub rejected the request")
	// ErrRunnerBusy: 422 on delete, the runner is running a job.
	ErrRunnerBusy = errors.New("runner is busy running a job")
	// ErrRunnerExists: 409 on JIT, a runner of that name is already registered.
	ErrRunnerExists = errors.New("runner name already registered")
	// ErrRunnerGroupNotFound: the organisation has no runner group of the configured name.
	ErrRunnerGroupNotFound = errors.New("runner group not found")
	// ErrNoRunnerApplication: GitHub lists no runner application for this OS and architecture.
	ErrNoRunnerApplication = errors.New("no runner application for this platform")
	// ErrChecksum: the runner application's checksum is missing, malformed or wrong.
	ErrChecksum = errors.New("runner application checksum verification failed")
)

// Error is a failed GitHub operation. Its text never contains request or
// response headers, tokens, private keys or JIT configs: only the operation,
// the path, the status and GitHub's message.
type Error struct {
	// Kind is one of the Err* values above (or context.Canceled when the
	// caller cancelled).
	Kind error
	// Op says what we were doing, e.g. "list runners".
	Op string
	// Path is the configured "org" or "owner/repo".
	Path string
	// StatusCode is the HTTP status, 0 when there was no response.
	StatusCode int
	// Detail is GitHub's message or the transport failure.
	Detail string
	// ResetAt is when the primary rate limit resets (ErrRateLimited).
	ResetAt time.Time
	// RetryAfter is how long GitHub asked us to wait (ErrSecondaryRateLimited).
	RetryAfter time.Duration
	// Attempts is how many requests were made (ErrUnavailable).
	Attempts int

	// until is when a rate-limited call may be made again.
	until time.Time

	// operator is the sentence for the Juju status (see OperatorMessage).
	operator string
	// cause is kept only for context errors, so errors.Is(err,
	// context.DeadlineExceeded) works; go-github errors are not kept because
	// they carry the *http.Response (and thereby the request and its headers).
	cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("cannot ")
	b.WriteString(e.Op)
	if e.Path != "" {
		b.WriteString(" for ")
		b.WriteString(e.Path)
	}
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Unwrap makes errors.Is match the Kind (and the context error, if any).
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Kind, e.cause}
	}
	return []error{e.Kind}
}

// OperatorMessage turns any error from this package into one sentence an
// operator can act on, fit for the charm's Juju status.
func OperatorMessage(err error) string {
	if err == nil {
		return ""
	}
	var ghErr *Error
	if errors.As(err, &ghErr) && ghErr.operator != "" {
		return ghErr.operator
	}
	return err.Error()
}

// hhmmUTC formats a reset time the way operators read it in juju status.
func hhmmUTC(t time.Time) string {
	return t.UTC().Format("15:04") + " UTC"
}
