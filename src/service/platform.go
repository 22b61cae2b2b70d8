package service

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/lxd"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/openstack"
	"github.com/canonical/github-runner-charm/src/runner"
)

// defaultLabels are what GitHub's own config.sh adds and JIT does not;
// workflows ask for them ("runs-on: [self-hosted, linux]").
var defaultLabels = []string{"self-hosted", "linux"}

// platform is the engine's view of GitHub, over the go-github client.
type platform struct {
	client *github.Client
	id     runner.Identity
	scope  runner.Scope
	labels []string
	// elsewhere opens a client for another path on the same API, to ask
	// about runners registered before the path changed; nil: none.
	elsewhere func(path string) (*github.Client, error)

	mu     sync.Mutex
	others map[runner.Scope]*github.Client
}

func newPlatform(client *github.Client, id runner.Identity, scope runner.Scope, labels []string) *platform {
	all := append(append([]string(nil), defaultLabels...), labels...)
	return &platform{client: client, id: id, scope: scope, labels: all, others: map[runner.Scope]*github.Client{}}
}

// Runners lists the unit's runners, of both namings; the application's
// name starts both.
func (p *platform) Runners(ctx context.Context) ([]manager.Runner, error) {
	runners, err := p.client.ListRunners(ctx, p.id.App+"-")
	if err != nil {
		return nil, err
	}
	out := make([]manager.Runner, 0, len(runners))
	for _, r := range runners {
		if p.id.Generation(r.Name) != runner.NotOurs {
			out = append(out, manager.Runner{ID: r.ID, Name: r.Name, Online: r.Status == github.RunnerOnline, Busy: r.Busy})
		}
	}
	return out, nil
}
func (p *platform) Register(ctx context.Context, name string) (manager.Registration, error) {
	reg, err := p.client.RegisterRunner(ctx, name, p.labels)
	if err != nil {
		return manager.Registration{}, err
	}
	return manager.Registration{RunnerID: reg.RunnerID, JITConfig: reg.EncodedJITConfig}, nil
}

// Remove deletes runner id in the scope it was registered in. In another
// scope than today's, GitHub's 404 proves the runner gone only once the
// credentials are known to reach that scope at all; and credentials are
// never sent to an API other than the configured one.
func (p *platform) Remove(ctx context.Context, scope runner.Scope, id int64) error {
	client := p.client
	if !scope.IsZero() && scope != p.scope {
		var err error
		if client, err = p.clientFor(scope); err != nil {
			return err
		}
		if err := client.CheckRunnersAccess(ctx); err != nil {
			return fmt.Errorf("cannot ask GitHub about runner %d of %s, where it was registered: %w", id, scope.Path, err)
		}
	}
	err := client.DeleteRunner(ctx, id)
	if errors.Is(err, github.ErrRunnerBusy) {
		return fmt.Errorf("%w: %w", manager.ErrBusy, err)
	}
	return err
}

func (p *platform) clientFor(scope runner.Scope) (*github.Client, error) {
	if scope.APIURL != p.scope.APIURL || p.elsewhere == nil {
		return nil, fmt.Errorf("cannot ask about a runner registered at %s: the charm's credentials go to %s only; it is deleted when it stops, or after a day", scope.APIURL, p.scope.APIURL)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.others[scope]; ok {
		return c, nil
	}
	c, err := p.elsewhere(scope.Path)
	if err != nil {
		return nil, err
	}
	p.others[scope] = c
	return c, nil
}

// needsOperator are the problems only the operator can fix (Blocked);
// everything else (rate limits, outages, full disks) time or a retry
// should clear (Maintenance).
var needsOperator = []error{
	github.ErrBadCredentials, github.ErrPermission, github.ErrNotFound, github.ErrRunnerGroupNotFound,
	openstack.ErrImageNotFound, openstack.ErrFlavorNotFound, openstack.ErrNetworkNotFound,
	openstack.ErrUnauthorized, openstack.ErrCloudsYAMLSyntax, openstack.ErrCloudsYAMLIncomplete, openstack.ErrTLS,
	lxd.ErrImageNotFound,
}

// blocksOperator tells whether a problem needs the operator.
func blocksOperator(err error) bool {
	for _, kind := range needsOperator {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}
