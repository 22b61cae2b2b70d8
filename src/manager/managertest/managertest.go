// Package managertest has in-memory stand-ins for a cloud and for GitHub,
// for tests and benchmarks of the engine's decisions. Real clouds and the
// fake GitHub server are tested elsewhere; these keep the engine's own tests
// exhaustive and fast.
package managertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
)

// Cloud is an in-memory cloud.
type Cloud struct {
	mu        sync.Mutex
	instances map[string]cloud.Instance
	// FailCreate, when set, fails Create for names it returns true for.
	FailCreate func(name string) bool
	// FailList fails Instances.
	FailList error
	Now      func() time.Time
	Creates  int
	Deletes  int
}

// NewCloud returns an empty cloud.
func NewCloud() *Cloud {
	return &Cloud{instances: map[string]cloud.Instance{}, Now: time.Now}
}

func (c *Cloud) Instances(_ context.Context, prefix string) ([]cloud.Instance, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.FailList != nil {
		return nil, c.FailList
	}
	out := make([]cloud.Instance, 0, len(c.instances))
	for name, i := range c.instances {
		if strings.HasPrefix(name, prefix+"-") {
			out = append(out, i)
		}
	}
	return out, nil
}

func (c *Cloud) Create(_ context.Context, req cloud.CreateRequest) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Creates++
	if c.FailCreate != nil && c.FailCreate(req.Name) {
		return errors.New("out of capacity")
	}
	c.instances[req.Name] = cloud.Instance{Name: req.Name, RunnerID: req.RunnerID, CreatedAt: c.Now(), Status: cloud.Running}
	return nil
}

func (c *Cloud) Delete(_ context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Deletes++
	delete(c.instances, name)
	return nil
}

// Put adds or replaces an instance.
func (c *Cloud) Put(i cloud.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.instances[i.Name] = i
}

// Get returns an instance.
func (c *Cloud) Get(name string) (cloud.Instance, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.instances[name]
	return i, ok
}

// Names lists every instance name.
func (c *Cloud) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.instances {
		out = append(out, n)
	}
	return out
}

// Platform is an in-memory GitHub.
type Platform struct {
	mu      sync.Mutex
	runners map[int64]*manager.Runner
	nextID  int64
	// FailList fails Runners; FailRegister fails Register.
	FailList, FailRegister error
	// OnRemove runs before a removal is applied, under no lock; it may make
	// the runner busy to model a job arriving at that moment.
	OnRemove func(id int64)
	Removes  int
}

// NewPlatform returns a GitHub with no runners.
func NewPlatform() *Platform {
	return &Platform{runners: map[int64]*manager.Runner{}}
}

func (p *Platform) Runners(context.Context) ([]manager.Runner, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.FailList != nil {
		return nil, p.FailList
	}
	out := make([]manager.Runner, 0, len(p.runners))
	for _, r := range p.runners {
		out = append(out, *r)
	}
	return out, nil
}

func (p *Platform) Register(_ context.Context, name string) (manager.Registration, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.FailRegister != nil {
		return manager.Registration{}, p.FailRegister
	}
	for _, r := range p.runners {
		if r.Name == name {
			return manager.Registration{}, fmt.Errorf("runner %s exists", name)
		}
	}
	p.nextID++
	p.runners[p.nextID] = &manager.Runner{ID: p.nextID, Name: name}
	return manager.Registration{RunnerID: p.nextID, JITConfig: "jit-secret-" + name}, nil
}

func (p *Platform) Remove(_ context.Context, id int64) error {
	if p.OnRemove != nil {
		p.OnRemove(id)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Removes++
	if r, ok := p.runners[id]; ok && r.Busy {
		return manager.ErrBusy
	}
	delete(p.runners, id)
	return nil
}

// Set changes a runner's status, by name; it reports whether it exists.
func (p *Platform) Set(name string, online, busy bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.runners {
		if r.Name == name {
			r.Online, r.Busy = online, busy
			return true
		}
	}
	return false
}

// Add registers a runner directly (as a crashed manager might have left it).
func (p *Platform) Add(name string, online, busy bool) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	p.runners[p.nextID] = &manager.Runner{ID: p.nextID, Name: name, Online: online, Busy: busy}
	return p.nextID
}

// Delete removes a runner as GitHub does after an ephemeral runner's job.
func (p *Platform) Delete(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, r := range p.runners {
		if r.Name == name {
			delete(p.runners, id)
		}
	}
}

// Names lists every runner name.
func (p *Platform) Names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.runners {
		out = append(out, r.Name)
	}
	return out
}
