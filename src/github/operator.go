package github

import (
	"context"
	"fmt"
	"time"
)

// finish writes the operator sentence for e (see OperatorMessage). It lives
// on the Client because the right words depend on the path (organisation or
// repository) and the kind of credentials.
func (c *Client) finish(e *Error) {
	e.operator = c.operatorSentence(e)
}

func (c *Client) operatorSentence(e *Error) string {
	switch e.Kind {
	case ErrBadCredentials:
		if c.usesApp {
			return "GitHub rejected the GitHub App credentials: check the client id (or app id), installation id and private key, and that the App is installed on " + c.scope.String()
		}
		return "GitHub rejected the token as invalid or expired: configure a new token"
	case ErrPermission:
		return c.permissionSentence()
	case ErrRateLimited:
		if e.ResetAt.IsZero() {
			return "GitHub API rate limit exhausted: waiting for it to reset"
		}
		return "GitHub API rate limit exhausted until " + hhmmUTC(e.ResetAt) + ": runners are reconciled again after the reset"
	case ErrSecondaryRateLimited:
		return fmt.Sprintf("GitHub secondary rate limit hit: waiting %s before calling GitHub again", e.RetryAfter.Round(time.Second))
	case ErrNotFound:
		return c.notFoundSentence()
	case ErrUnavailable:
		if e.StatusCode != 0 {
			return fmt.Sprintf("GitHub API unavailable (HTTP %d after %d attempts): retrying at the next reconcile", e.StatusCode, e.Attempts)
		}
		return fmt.Sprintf("cannot reach the GitHub API (after %d attempts): check the network and proxy; retrying at the next reconcile", e.Attempts)
	case ErrTimeout:
		if e.Detail == callerDeadline {
			return "GitHub API calls did not finish before the reconcile's deadline: retrying at the next reconcile"
		}
		return fmt.Sprintf("GitHub API did not answer within %s: retrying at the next reconcile", c.requestTimeout)
	case ErrRunnerGroupNotFound:
		return fmt.Sprintf("runner group %q not found in organisation %s: check the group option", c.group, c.scope.Owner)
	case ErrRunnerBusy:
		return "runner is busy running a job: it is kept until the job ends"
	case ErrRunnerExists:
		return "GitHub already has a runner of that name: it is removed as an offline runner at a later reconcile"
	case ErrChecksum, ErrNoRunnerApplication:
		return e.Error()
	case context.Canceled:
		return "GitHub request cancelled"
	}
	return e.Error()
}

// permissionSentence names what the runner endpoints need, per path kind
// and credential kind (see the GitHub REST docs for self-hosted runners).
func (c *Client) permissionSentence() string {
	if c.scope.IsOrg() {
		if c.usesApp {
			return "the GitHub App cannot manage self-hosted runners of organisation " + c.scope.Owner +
				`: grant it the organisation permission "Self-hosted runners: read and write"`
		}
		return "the GitHub token cannot manage self-hosted runners of organisation " + c.scope.Owner +
			`: a classic token needs the admin:org scope, a fine-grained token the organisation permission "Self-hosted runners: read and write"`
	}
	if c.usesApp {
		return "the GitHub App cannot manage self-hosted runners of repository " + c.scope.String() +
			`: grant it the repository permission "Administration: read and write"`
	}
	return "the GitHub token cannot manage self-hosted runners of repository " + c.scope.String() +
		`: a classic token needs the repo scope, a fine-grained token the repository permission "Administration: read and write"`
}

func (c *Client) notFoundSentence() string {
	who := "the token"
	if c.usesApp {
		who = "the GitHub App installation"
	}
	if c.scope.IsOrg() {
		return "GitHub organisation " + c.scope.Owner + " not found or not visible to " + who + ": check the path option and " + who + "'s access"
	}
	return "GitHub repository " + c.scope.String() + " not found or not visible to " + who + ": check the path option and " + who + "'s access"
}
