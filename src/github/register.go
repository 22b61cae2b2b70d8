package github

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	gh "github.com/google/go-github/v62/github"
)

// Registration is what a new runner needs to register itself: GitHub
// created its record, and the runner starts with `run.sh --jitconfig
// <EncodedJITConfig>`. It holds a secret: its String and LogValue methods
// leave the secret out, so it is safe to log or print.
type Registration struct {
	// RunnerID is the id GitHub gave the runner.
	RunnerID int64
	// EncodedJITConfig is the base64 JIT config. Secret.
	EncodedJITConfig string
}

func (r Registration) String() string {
	return fmt.Sprintf("jit registration for runner %d", r.RunnerID)
}

// GoString keeps %#v from printing the secret.
func (r Registration) GoString() string { return r.String() }

// LogValue keeps slog from printing the secret.
func (r Registration) LogValue() slog.Value {
	return slog.GroupValue(slog.String("method", "jit"), slog.Int64("runner-id", r.RunnerID))
}

// RegisterRunner asks GitHub for a just-in-time config for a runner of this
// name and labels, in the configured runner group (organisations) or group 1
// (repositories). JIT does not add the default labels: pass "self-hosted",
// "linux" and the like if jobs ask for them. A server without the JIT
// endpoint (GitHub Enterprise Server before 3.10) answers ErrNotFound: the
// manager runs ephemeral runners from JIT configs only.
func (c *Client) RegisterRunner(ctx context.Context, name string, labels []string) (Registration, error) {
	if name == "" || len(labels) == 0 {
		return Registration{}, c.errorf("generate JIT runner config", ErrRejected, "a runner needs a name and at least one label")
	}
	groupID, fromCache, err := c.runnerGroupID(ctx)
	if err != nil {
		return Registration{}, err
	}
	reg, err := c.generateJIT(ctx, name, labels, groupID)
	if errors.Is(err, ErrNotFound) && fromCache {
		// The cached group may have been deleted (JIT answers 404 for an
		// unknown group): look it up afresh before blaming the endpoint.
		c.forgetRunnerGroup()
		freshID, _, lookupErr := c.runnerGroupID(ctx)
		if lookupErr != nil {
			return Registration{}, lookupErr
		}
		if freshID != groupID {
			reg, err = c.generateJIT(ctx, name, labels, freshID)
		}
	}
	return reg, err
}

func (c *Client) generateJIT(ctx context.Context, name string, labels []string, groupID int64) (Registration, error) {
	req := &gh.GenerateJITConfigRequest{Name: name, RunnerGroupID: groupID, Labels: labels}
	var jit *gh.JITRunnerConfig
	err := c.call(ctx, "generate JIT runner config", func(ctx context.Context) (*gh.Response, error) {
		var resp *gh.Response
		var err error
		if c.scope.IsOrg() {
			jit, resp, err = c.api.Actions.GenerateOrgJITConfig(ctx, c.scope.Owner, req)
		} else {
			jit, resp, err = c.api.Actions.GenerateRepoJITConfig(ctx, c.scope.Owner, c.scope.Repo, req)
		}
		return resp, err
	})
	if err != nil {
		return Registration{}, err
	}
	if jit.GetEncodedJITConfig() == "" || jit.GetRunner().GetID() == 0 {
		return Registration{}, c.errorf("generate JIT runner config", ErrRejected, "GitHub's answer lacks the runner id or the config")
	}
	return Registration{
		RunnerID:         jit.GetRunner().GetID(),
		EncodedJITConfig: jit.GetEncodedJITConfig(),
	}, nil
}

// runnerGroupID is 1 for a repository; for an organisation it looks the
// configured group name up across all pages, and caches the id.
func (c *Client) runnerGroupID(ctx context.Context) (id int64, fromCache bool, err error) {
	if !c.scope.IsOrg() {
		return repoRunnerGroup, false, nil
	}
	c.mu.Lock()
	cached := c.groupID
	c.mu.Unlock()
	if cached != 0 {
		return cached, true, nil
	}
	id, err = c.lookUpRunnerGroup(ctx)
	if err != nil {
		return 0, false, err
	}
	c.mu.Lock()
	c.groupID = id
	c.mu.Unlock()
	return id, false, nil
}

func (c *Client) forgetRunnerGroup() {
	c.mu.Lock()
	c.groupID = 0
	c.mu.Unlock()
}

// lookUpRunnerGroup matches the name exactly first, then ignoring case: the
// charm's default is "default" while GitHub names the group "Default".
func (c *Client) lookUpRunnerGroup(ctx context.Context) (int64, error) {
	opts := &gh.ListOrgRunnerGroupOptions{ListOptions: gh.ListOptions{PerPage: pageSize, Page: 1}}
	var caseInsensitiveMatch int64
	for pages := 1; ; pages++ {
		var groups *gh.RunnerGroups
		var next int
		err := c.call(ctx, "list runner groups", func(ctx context.Context) (*gh.Response, error) {
			var resp *gh.Response
			var err error
			groups, resp, err = c.api.Actions.ListOrganizationRunnerGroups(ctx, c.scope.Owner, opts)
			if resp != nil {
				next = resp.NextPage
			}
			return resp, err
		})
		if err != nil {
			return 0, err
		}
		for _, g := range groups.RunnerGroups {
			if g.GetName() == c.group {
				return g.GetID(), nil
			}
			if caseInsensitiveMatch == 0 && strings.EqualFold(g.GetName(), c.group) {
				caseInsensitiveMatch = g.GetID()
			}
		}
		if next == 0 || next <= opts.Page || pages >= maxPages {
			break
		}
		opts.Page = next
	}
	if caseInsensitiveMatch != 0 {
		return caseInsensitiveMatch, nil
	}
	return 0, c.errorf("look up runner group", ErrRunnerGroupNotFound, "no runner group named %q", c.group)
}
