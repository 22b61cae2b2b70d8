// Package managertest has in-memory stand-ins for a cloud and for GitHub,
// for tests and benchmarks of the engine's decisions. Real clouds and the
// fake GitHub server are tested elsewhere; these keep the engine's own tests
// exhaustive and fast.
package managertest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/runner"
)

// Model is the model UUID of Identity.
const Model = "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10"

// Identity is the deployment the stand-ins serve unless told otherwise:
// github-runner/0 of Model.
var Identity = runner.Identity{Model: Model, App: "github-runner", Unit: 0}

// Scope is where Platform registers runners unless told otherwise.
var Scope = runner.NewScope("https://api.github.com", "canonical/runners")

// Cloud is an in-memory cloud shared by any number of deployments, as one
// LXD daemon or OpenStack project may be.
type Cloud struct {
	*store
	// Identity is whose instances Instances lists and Create makes.
	Identity runner.Identity
	// FailCreate, when set, fails Create for names it returns true for.
	FailCreate func(name string) bool
	// FailList fails Instances.
	FailList error
	Now      func() time.Time
	Creates  int
	Deletes  int
}

// store is the instances of every deployment on one cloud.
type store struct {
	mu        sync.Mutex
	instances map[string]cloud.Instance
}

// NewCloud returns an empty cloud of Identity.
func NewCloud() *Cloud {
	return &Cloud{store: &store{instances: map[string]cloud.Instance{}}, Now: time.Now, Identity: Identity}
}

// As returns the same cloud as another deployment sees and uses it.
func (c *Cloud) As(id runner.Identity) *Cloud {
	return &Cloud{store: c.store, Now: c.Now, Identity: id}
}

// Instances lists what the real clouds list: instances whose name and
// metadata are both the identity's, and those the Python charm may have
// made for it (runner.FromPythonCharm).
func (c *Cloud) Instances(context.Context) ([]cloud.Instance, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.FailList != nil {
		return nil, c.FailList
	}
	out := make([]cloud.Instance, 0, len(c.instances))
	for _, i := range c.instances {
		if c.Identity.OwnsInstance(i.Name, i.Owner) || c.Identity.FromPythonCharm(i.Name, i.Owner) {
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
	c.instances[req.Name] = cloud.Instance{Name: req.Name, RunnerID: req.RunnerID, CreatedAt: c.Now(), Status: cloud.Running,
		Owner: c.Identity.Owner(), Scope: req.Scope}
	return nil
}

func (c *Cloud) Delete(_ context.Context, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Deletes++
	delete(c.instances, name)
	return nil
}

// Put adds or replaces an instance; one without an owner gets the cloud's
// identity.
func (c *Cloud) Put(i cloud.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i.Owner == (runner.Owner{}) {
		i.Owner = c.Identity.Owner()
	}
	c.instances[i.Name] = i
}

// PutBare adds or replaces an instance as is, without metadata if it has
// none, as the Python charm left its instances.
func (c *Cloud) PutBare(i cloud.Instance) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.instances[i.Name] = i
}

// SetStatus changes an instance's status; it reports whether it exists.
func (c *Cloud) SetStatus(name string, status cloud.Status) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.instances[name]
	i.Status = status
	if ok {
		c.instances[name] = i
	}
	return ok
}

// Get returns an instance.
func (c *Cloud) Get(name string) (cloud.Instance, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i, ok := c.instances[name]
	return i, ok
}

// Names lists every instance name, of every deployment.
func (c *Cloud) Names() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for n := range c.instances {
		out = append(out, n)
	}
	return out
}

// Platform is an in-memory GitHub: runners in any number of scopes, one of
// which (Scope) the engine lists and registers in.
type Platform struct {
	mu      sync.Mutex
	runners map[int64]*record
	nextID  int64
	scope   runner.Scope
	// FailList fails Runners; FailRegister fails Register.
	FailList, FailRegister error
	// FailRemove, when set, fails Remove with what it returns (nil: no
	// failure); the removal is not applied.
	FailRemove func(scope runner.Scope, id int64) error
	// Hide, when set, leaves runners it returns true for out of lists,
	// as offset paging over a changing list or an eventually consistent
	// one does.
	Hide func(manager.Runner) bool
	// OnRemove runs before a removal is applied, under no lock; it may make
	// the runner busy to model a job arriving at that moment.
	OnRemove func(id int64)
	// OnList runs at the start of every Runners call, under no lock; it
	// may block, as a slow GitHub does.
	OnList  func()
	Removes int
	// RemovedBusy counts removals that succeeded on a busy runner: GitHub
	// never allows one, so a test may require it to stay 0.
	RemovedBusy int
	// FailBury, when set, fails Bury.
	FailBury error
	// tombstones stand for the platform's durable ones: they outlive any
	// engine (a restarted manager) given the same Platform.
	tombstones map[tombstoneKey]manager.Tombstone
	// InUseScopes is what the engine last said InUse.
	InUseScopes []runner.Scope
}

type tombstoneKey struct {
	scope runner.Scope
	id    int64
}

type record struct {
	manager.Runner
	scope runner.Scope
}

// NewPlatform returns a GitHub with no runners, listing Scope.
func NewPlatform() *Platform {
	return &Platform{runners: map[int64]*record{}, scope: Scope, tombstones: map[tombstoneKey]manager.Tombstone{}}
}

// SetScope changes the scope Runners lists and Register registers in, as a
// change of path or API URL does.
func (p *Platform) SetScope(s runner.Scope) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.scope = s
}

func (p *Platform) Runners(context.Context) ([]manager.Runner, error) {
	if p.OnList != nil {
		p.OnList()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.FailList != nil {
		return nil, p.FailList
	}
	out := make([]manager.Runner, 0, len(p.runners))
	for _, r := range p.runners {
		if r.scope == p.scope && (p.Hide == nil || !p.Hide(r.Runner)) {
			out = append(out, r.Runner)
		}
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
		if r.Name == name && r.scope == p.scope {
			return manager.Registration{}, fmt.Errorf("runner %s exists", name)
		}
	}
	p.nextID++
	p.runners[p.nextID] = &record{manager.Runner{ID: p.nextID, Name: name}, p.scope}
	return manager.Registration{RunnerID: p.nextID, JITConfig: "jit-secret-" + name}, nil
}

func (p *Platform) Remove(_ context.Context, scope runner.Scope, id int64) error {
	if p.OnRemove != nil {
		p.OnRemove(id)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Removes++
	if p.FailRemove != nil {
		if err := p.FailRemove(scope, id); err != nil {
			return err
		}
	}
	r, ok := p.runners[id]
	if !ok || r.scope != scope {
		delete(p.tombstones, tombstoneKey{scope, id})
		return nil // 404: gone, or never in that scope
	}
	if r.Busy {
		return manager.ErrBusy
	}
	delete(p.runners, id)
	delete(p.tombstones, tombstoneKey{scope, id})
	return nil
}

// Tombstones lists the tombstones kept, oldest first.
func (p *Platform) Tombstones(context.Context) ([]manager.Tombstone, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]manager.Tombstone, 0, len(p.tombstones))
	for _, t := range p.tombstones {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b manager.Tombstone) int { return a.Since.Compare(b.Since) })
	return out, nil
}

func (p *Platform) Bury(_ context.Context, t manager.Tombstone) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.FailBury != nil {
		return p.FailBury
	}
	p.tombstones[tombstoneKey{t.Scope, t.RunnerID}] = t
	return nil
}

func (p *Platform) Forget(_ context.Context, scope runner.Scope, id int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.tombstones, tombstoneKey{scope, id})
	return nil
}

func (p *Platform) InUse(_ context.Context, scopes []runner.Scope) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.InUseScopes = slices.Clone(scopes)
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

// Get returns a runner, by name, in any scope.
func (p *Platform) Get(name string) (manager.Runner, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range p.runners {
		if r.Name == name {
			return r.Runner, true
		}
	}
	return manager.Runner{}, false
}

// Add registers a runner directly in the current scope (as a crashed
// manager might have left it).
func (p *Platform) Add(name string, online, busy bool) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	p.runners[p.nextID] = &record{manager.Runner{ID: p.nextID, Name: name, Online: online, Busy: busy}, p.scope}
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

// Names lists every runner name, in every scope.
func (p *Platform) Names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.runners {
		out = append(out, r.Name)
	}
	return out
}
