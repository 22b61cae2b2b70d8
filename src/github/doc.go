// Package github is the runner manager's view of GitHub: the self-hosted
// runners of one organisation or repository, reached through go-github.
//
// A Client is made once from a Config (path, optional GitHub Enterprise
// URL, and exactly one of a personal access token or GitHub App
// credentials) and offers what one reconcile cycle needs:
//
//   - RegisterRunner: a JIT config for a new runner;
//   - ListRunners: every runner whose name has a prefix, in ceil(n/100)
//     requests;
//   - DeleteRunner: nil when deleted or already gone, ErrRunnerBusy when
//     the runner is running a job;
//   - DownloadRunnerApplication: the actions/runner tarball, verified
//     against GitHub's SHA-256 and cached by file name (which carries the
//     version and architecture);
//   - RateBudget: the latest x-ratelimit-* values, for pacing and metrics.
//
// # Errors
//
// Every failed call returns an *Error whose Kind (ErrBadCredentials,
// ErrPermission, ErrRateLimited, ErrSecondaryRateLimited, ErrNotFound,
// ErrUnavailable, ErrTimeout, ...) is matched with errors.Is.
// OperatorMessage gives the sentence for the Juju status, with the time
// a rate-limited call may be tried again. Error texts never contain
// headers, tokens, private keys or JIT configs.
//
// Each API request runs under Config.RequestTimeout. 5xx answers and
// dropped connections are retried up to Config.MaxAttempts times with
// exponential backoff; a timeout is not retried (the next reconcile will
// try again, and retrying a slow POST risks registering a runner twice).
//
// # Rate limits
//
// A 403 or 429 with x-ratelimit-remaining 0 is the primary limit
// (ErrRateLimited, until x-ratelimit-reset); a 403 or 429 with Retry-After,
// a secondary-limit documentation URL or message, or any other 429 is a
// secondary limit (ErrSecondaryRateLimited, wait Retry-After or one
// minute). After either, the Client refuses further calls locally until the
// limit lifts. go-github v62 already does that for 403 answers, but treats
// a 429 as a plain error; the Client makes both behave alike.
package github
