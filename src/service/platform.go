package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/lxd"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/openstack"
)

// defaultLabels are what GitHub's own config.sh adds and JIT does not;
// workflows ask for them ("runs-on: [self-hosted, linux]").
var defaultLabels = []string{"self-hosted", "linux"}

// platform is the engine's view of GitHub, over the go-github client.
type platform struct {
	client *github.Client
	prefix string
	labels []string
}

func newPlatform(client *github.Client, prefix string, labels []string) *platform {
	all := append(append([]string(nil), defaultLabels...), labels...)
	return &platform{client: client, prefix: prefix, labels: all}
}

func (p *platform) Runners(ctx context.Context) ([]manager.Runner, error) {
	runners, err := p.client.ListRunners(ctx, p.prefix+"-")
	if err != nil {
		return nil, err
	}
	out := make([]manager.Runner, 0, len(runners))
	for _, r := range runners {
		out = append(out, manager.Runner{ID: r.ID, Name: r.Name, Online: r.Status == github.RunnerOnline, Busy: r.Busy})
	}
	return out, nil
}

func (p *platform) Register(ctx context.Context, name string) (manager.Registration, error) {
	reg, err := p.client.RegisterRunner(ctx, name, p.labels)
	if err != nil {
		return manager.Registration{}, err
	}
	if reg.Method != github.RegistrationJIT {
		// Ephemeral runners are started from a JIT config only; a server
		// without JIT (GitHub Enterprise Server before 3.10) is reported
		// rather than half-supported.
		return manager.Registration{}, fmt.Errorf("cannot register runner %s: this GitHub server offers no just-in-time runner configuration (GitHub Enterprise Server 3.10 or later is needed)", name)
	}
	return manager.Registration{RunnerID: reg.RunnerID, JITConfig: reg.EncodedJITConfig}, nil
}

func (p *platform) Remove(ctx context.Context, id int64) error {
	err := p.client.DeleteRunner(ctx, id)
	if errors.Is(err, github.ErrRunnerBusy) {
		return fmt.Errorf("%w: %w", manager.ErrBusy, err)
	}
	return err
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
