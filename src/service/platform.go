package service

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/scaleset"
)

// platform is the engine's view of GitHub, over the go-github client. It
// is the one place that knows credentials: today's, and those remembered
// of the scopes the service ran in before.
type platform struct {
	client *github.Client
	id     runner.Identity
	scope  runner.Scope
	labels []string
	// current is today's client configuration. Another path on today's API
	// URL whose own credentials are not remembered is asked with it; zero:
	// never.
	current github.Config
	// remembered holds the credentials of the scopes the service ran in,
	// and the tombstones.
	remembered *scopes
	// newClient opens a client (github.New).
	newClient func(github.Config) (*github.Client, error)
	// scaleSet, when the unit owns a runner scale set, registers its
	// runners (JIT configurations of the set); listing and removing them
	// stay the REST API's, as for every runner.
	scaleSet registrar

	mu     sync.Mutex
	others map[otherClient]*github.Client
}

// otherClient is a client for another scope: with its own credentials, or
// with today's.
type otherClient struct {
	scope runner.Scope
	own   bool
}

// newPlatform returns a platform for today's scope that remembers in
// memory only; Run gives it the state directory's scopes.
func newPlatform(client *github.Client, id runner.Identity, scope runner.Scope, labels []string) *platform {
	// What config.sh would give the runner first (JIT adds none), once
	// each: labels is the config file's RunnerLabels.
	all := config.RunnerLabels(nil, labels)
	return &platform{client: client, id: id, scope: scope, labels: all, remembered: &scopes{}, newClient: github.New,
		others: map[otherClient]*github.Client{}}
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

// registrar registers runners in the unit's scale set (scaleset.Set).
type registrar interface {
	Register(ctx context.Context, name string) (runnerID int64, jit string, err error)
}

func (p *platform) Register(ctx context.Context, name string) (manager.Registration, error) {
	if p.scaleSet != nil {
		id, jit, err := p.scaleSet.Register(ctx, name)
		if err != nil {
			return manager.Registration{}, err
		}
		return manager.Registration{RunnerID: id, JITConfig: jit}, nil
	}
	reg, err := p.client.RegisterRunner(ctx, name, p.labels)
	if err != nil {
		return manager.Registration{}, err
	}
	return manager.Registration{RunnerID: reg.RunnerID, JITConfig: reg.EncodedJITConfig}, nil
}

// Remove deletes runner id in the scope it was registered in, with that
// scope's remembered credentials, or on today's API URL with today's if
// those cannot read it (a token rotated since). In another scope than
// today's, GitHub's 404 proves the runner gone only once the credentials
// are known to reach that scope at all; and credentials are only ever sent
// to their own API. GitHub's word that the runner is gone forgets its
// tombstone.
func (p *platform) Remove(ctx context.Context, scope runner.Scope, id int64) error {
	client := p.client
	if scope.IsZero() {
		scope = p.scope
	}
	if scope != p.scope {
		var err error
		if client, err = p.clientFor(ctx, scope); err != nil {
			return fmt.Errorf("cannot ask GitHub about runner %d of %s, where it was registered: %w", id, scope, err)
		}
	}
	err := client.DeleteRunner(ctx, id)
	if errors.Is(err, github.ErrRunnerBusy) {
		return fmt.Errorf("%w: %w", manager.ErrBusy, err)
	}
	if err != nil {
		return err
	}
	return p.remembered.forget(scope, id)
}

// clientFor returns a client for another scope that can read its runners:
// with the scope's own remembered credentials, else, on today's API URL,
// with today's.
func (p *platform) clientFor(ctx context.Context, scope runner.Scope) (*github.Client, error) {
	var errs []error
	for _, own := range []bool{true, false} {
		c, err := p.open(scope, own)
		if err == nil {
			if err = c.CheckRunnersAccess(ctx); err == nil {
				return c, nil
			}
		}
		if err != errNoCredentials {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no credentials for it are remembered, and the charm's go to %s only; it is deleted when it stops, or after a day", p.scope.APIURL)
	}
	return nil, errors.Join(errs...)
}

var errNoCredentials = errors.New("no credentials")

// open opens, once, a client for scope: with its own remembered
// credentials, or with today's on today's API URL.
func (p *platform) open(scope runner.Scope, own bool) (*github.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := otherClient{scope, own}
	if c, ok := p.others[key]; ok {
		return c, nil
	}
	var cfg github.Config
	switch remembered, ok := p.remembered.credentials(scope, p.current); {
	case own && ok:
		cfg = remembered
	case !own && scope.APIURL == p.scope.APIURL && p.current.Path != "":
		cfg = p.current
		cfg.Path = scope.Path
	default:
		return nil, errNoCredentials
	}
	c, err := p.newClient(cfg)
	if err != nil {
		return nil, err
	}
	p.others[key] = c
	return c, nil
}

func (p *platform) Tombstones(context.Context) ([]manager.Tombstone, error) {
	return p.remembered.tombstones(), nil
}

func (p *platform) Bury(_ context.Context, t manager.Tombstone) error {
	if t.Scope.IsZero() {
		t.Scope = p.scope
	}
	return p.remembered.bury(t)
}

func (p *platform) Forget(_ context.Context, scope runner.Scope, id int64) error {
	if scope.IsZero() {
		scope = p.scope
	}
	return p.remembered.forget(scope, id)
}

// InUse forgets the credentials of the scopes no instance or tombstone is
// in any more; today's are always kept.
func (p *platform) InUse(_ context.Context, scopes []runner.Scope) error {
	return p.remembered.retain(append(scopes, p.scope))
}

// needsOperator are GitHub's problems only the operator can fix (Blocked);
// the clouds mark theirs (cloud.NeedsOperator). Everything else (rate
// limits, outages, full disks) time or a retry should clear (Maintenance).
var needsOperator = []error{
	github.ErrBadCredentials, github.ErrPermission, github.ErrNotFound, github.ErrRunnerGroupNotFound,
	scaleset.ErrUnsupported,
}

// blocksOperator tells whether a problem needs the operator.
func blocksOperator(err error) bool {
	if cloud.NeedsOperator(err) {
		return true
	}
	for _, kind := range needsOperator {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}
