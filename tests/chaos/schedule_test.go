package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// kind is what a step of the schedule does.
type kind string

const (
	jobStep       kind = "job"              // a job of n seconds for an idle runner
	flushIdleStep kind = "flush-idle"       // flush-runners flush-busy=false
	flushBusyStep kind = "flush-busy"       // flush-runners flush-busy=true
	labelsStep    kind = "labels"           // config labels: one of labelSets
	machinesStep  kind = "virtual-machines" // config virtual-machines=n
	pathStep      kind = "path"             // config path: the other repository
	reconcileStep kind = "reconcile"        // reconcile-runners
	killStep      kind = "kill-manager"     // SIGKILL the manager; Pebble restarts it
	freezeStep    kind = "freeze"           // freeze a busy runner's instance for n seconds
	omitBusyStep  kind = "omit-busy"        // the next n runner lists leave busy runners out
	burstStep     kind = "5xx-burst"        // the next n API requests (of one endpoint, or any) fail 5xx
)

// weights is how often each kind comes up, out of their sum.
var weights = []struct {
	kind   kind
	weight int
}{
	{jobStep, 34}, {flushIdleStep, 5}, {flushBusyStep, 2}, {labelsStep, 3}, {machinesStep, 5}, {pathStep, 3},
	{reconcileStep, 5}, {killStep, 6}, {freezeStep, 7}, {omitBusyStep, 5}, {burstStep, 5},
}

var labelSets = []string{label, label + ",large", label + ",small"}

// Endpoints a 5xx burst may hit ("" is any); the paths are repositories'.
var burstEndpoints = []string{"", fakegithub.ListRepoRunners, fakegithub.DeleteRepoRunner, fakegithub.RepoJITConfig}

// step is one thing the schedule does, at a time from its start. Its
// parameters come from the seed; pick chooses among what the state offers
// when it runs (which idle runner, which busy instance), by sorted name.
type step struct {
	at   time.Duration
	kind kind
	dep  int // 0 for A, 1 for B; faults of the shared GitHub hit both
	n    int
	pick uint64
}

func (s step) String() string {
	switch s.kind {
	case jobStep:
		return fmt.Sprintf("job of %ds", s.n)
	case machinesStep:
		return fmt.Sprintf("virtual-machines=%d", s.n)
	case freezeStep:
		return fmt.Sprintf("freeze a busy instance for %ds", s.n)
	case omitBusyStep:
		return fmt.Sprintf("the next %d runner lists omit busy runners", s.n)
	case burstStep:
		endpoint := burstEndpoints[s.pick%uint64(len(burstEndpoints))]
		if endpoint == "" {
			endpoint = "any endpoint"
		}
		return fmt.Sprintf("5xx burst: %d × %d on %s", s.n, burstStatus(s), endpoint)
	}
	return string(s.kind)
}

func burstStatus(s step) int { return []int{500, 502, 503}[(s.pick>>8)%3] }

// plan draws the schedule from the seed: a step every 3 to 12 seconds
// until duration.
func plan(seed uint64, duration time.Duration) []step {
	rng := rand.New(rand.NewPCG(seed, 0x6368616f73)) // "chaos"
	total := 0
	for _, w := range weights {
		total += w.weight
	}
	var steps []step
	at := 5 * time.Second
	for at < duration {
		s := step{at: at, dep: rng.IntN(2), pick: rng.Uint64()}
		roll := rng.IntN(total)
		for _, w := range weights {
			if roll < w.weight {
				s.kind = w.kind
				break
			}
			roll -= w.weight
		}
		switch s.kind {
		case jobStep:
			// Mostly short jobs, some of a minute or two.
			switch p := rng.IntN(10); {
			case p < 6:
				s.n = 2 + rng.IntN(19)
			case p < 9:
				s.n = 20 + rng.IntN(41)
			default:
				s.n = 60 + rng.IntN(61)
			}
		case machinesStep:
			s.n = 1 + rng.IntN(3) // 2 cores: a few runners per deployment
		case labelsStep:
			s.n = 1 + rng.IntN(len(labelSets)-1)
		case freezeStep:
			s.n = 10 + rng.IntN(31)
		case omitBusyStep:
			s.n = 2 + rng.IntN(11)
		case burstStep:
			s.n = 3 + rng.IntN(18)
		}
		steps = append(steps, s)
		at += 3*time.Second + time.Duration(rng.Int64N(int64(9*time.Second)))
	}
	return steps
}

// summarise counts steps by kind.
func summarise(steps []step) string {
	counts := map[string]int{}
	for _, s := range steps {
		counts[string(s.kind)]++
	}
	var parts []string
	for _, k := range sortedKeys(counts) {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// execute runs one step: the unit's hooks and actions go to its queue, the
// rest happens at once.
func (c *chaos) execute(i int, s step) {
	d := c.deps[s.dep]
	what := fmt.Sprintf("#%d %s", i, s)
	c.mu.Lock()
	c.counts["step "+string(s.kind)]++
	c.mu.Unlock()
	switch s.kind {
	case jobStep:
		c.assignJob(d, what, s)
	case flushIdleStep, flushBusyStep:
		c.enqueue(d, what, func() { c.flush(d, what, s.kind == flushBusyStep) })
	case reconcileStep:
		c.enqueue(d, what, func() {
			start := time.Now()
			r := d.bed.Unit.Action("reconcile-runners", nil)
			c.note("%s %s: %s delta=%v %s (%v)", d.name, what, r.Status, r.Results["delta"], r.Message, since(start))
		})
	case machinesStep:
		c.enqueue(d, what, func() { c.configure(d, what, "virtual-machines", s.n) })
	case labelsStep:
		c.enqueue(d, what, func() {
			c.mu.Lock()
			current := slices.Index(labelSets, d.labels)
			c.mu.Unlock()
			c.configure(d, what, "labels", labelSets[(current+s.n)%len(labelSets)])
		})
	case pathStep:
		c.enqueue(d, what, func() {
			c.mu.Lock()
			next := otherRepo
			if d.path == otherRepo {
				next = stack.Repo
			}
			c.mu.Unlock()
			c.configure(d, what, "path", next)
		})
	case killStep:
		pid := d.bed.ManagerPID()
		if pid == 0 {
			c.note("%s %s: no manager running (Pebble is restarting it)", d.name, what)
			return
		}
		err := syscall.Kill(pid, syscall.SIGKILL)
		c.note("%s %s: pid %d: %v", d.name, what, pid, errOr(err, "killed"))
	case freezeStep:
		c.freeze(d, what, s)
	case omitBusyStep:
		err := c.gh.InjectFault(fakegithub.Fault{Kind: fakegithub.OmitBusyRunners, Times: s.n})
		c.note("GitHub %s: %v", what, errOr(err, "armed"))
	case burstStep:
		endpoint := burstEndpoints[s.pick%uint64(len(burstEndpoints))]
		err := c.gh.InjectFault(fakegithub.Fault{Endpoint: endpoint, Kind: fakegithub.ServerError, Status: burstStatus(s), Times: s.n})
		c.note("GitHub %s: %v", what, errOr(err, "armed"))
	}
}

func errOr(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

func since(t time.Time) time.Duration { return time.Since(t).Round(100 * time.Millisecond) }

// other is the deployment that is not d.
func (c *chaos) other(d *deployment) *deployment {
	if d == c.deps[0] {
		return c.deps[1]
	}
	return c.deps[0]
}

// assignJob gives a job to one of the deployment's idle online runners, as
// GitHub does when a workflow's job is queued; to the other deployment's
// if it has none, so that runners are kept busy.
func (c *chaos) assignJob(d *deployment, what string, s step) {
	var idle []fakegithub.Runner
	for _, dep := range []*deployment{d, c.other(d)} {
		for _, r := range c.gh.Runners("") {
			if strings.HasPrefix(r.Name, dep.bed.Prefix+"-") && r.Status == fakegithub.StatusOnline && !r.Busy {
				idle = append(idle, r)
			}
		}
		if len(idle) > 0 {
			d = dep
			break
		}
	}
	if len(idle) == 0 {
		c.note("%s %s: no idle runner in either deployment", d.name, what)
		return
	}
	slices.SortFunc(idle, func(a, b fakegithub.Runner) int { return strings.Compare(a.Name, b.Name) })
	r := idle[s.pick%uint64(len(idle))]
	spec := fakegithub.JobSpec{Name: what, Command: "echo ran to the end", Sleep: time.Duration(s.n) * time.Second}
	job, err := c.gh.AssignJob(r.ID, spec)
	if err != nil {
		// A manager may have removed it since the list: GitHub too
		// refuses a job to a runner that is gone.
		c.note("%s %s: cannot assign it to %s: %v", d.name, what, r.Name, err)
		return
	}
	c.mu.Lock()
	c.jobs[job.ID] = &trackedJob{job: job, dep: d, assigned: time.Now()}
	c.noteLocked("%s %s: job %d on %s", d.name, what, job.ID, r.Name)
	c.mu.Unlock()
}

// flush runs flush-runners; a busy flush's window excuses the jobs it kills.
func (c *chaos) flush(d *deployment, what string, busy bool) {
	start := time.Now()
	c.mu.Lock()
	index := len(d.busyFlushes)
	if busy {
		d.busyFlushes = append(d.busyFlushes, window{start: start})
	}
	c.mu.Unlock()
	r := d.bed.Unit.Action("flush-runners", map[string]any{"flush-busy": busy})
	c.mu.Lock()
	if busy {
		d.busyFlushes[index].end = time.Now()
	}
	c.noteLocked("%s %s: %s removed=%v %s (%v)", d.name, what, r.Status, r.Results["removed"], r.Message, since(start))
	c.mu.Unlock()
}

// configure is `juju config`: config-changed must never fail, whatever the
// manager or GitHub is doing.
func (c *chaos) configure(d *deployment, what, key string, value any) {
	start := time.Now()
	r := d.bed.Unit.Configure(map[string]any{key: value})
	if r.Code != 0 {
		c.violate("%s %s: config-changed failed with exit %d: %s", d.name, what, r.Code, r.Stderr)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch key {
	case "virtual-machines":
		d.target = value.(int)
	case "labels":
		d.labels = value.(string)
	case "path":
		d.path = value.(string)
	}
	c.noteLocked("%s %s: %s=%v applied (%v); status %+v", d.name, what, key, value, since(start), d.bed.Unit.Status())
}

// freeze freezes the instance of one of the deployment's runners running a
// job (or the other's, if it has none), as LXD does for a snapshot;
// waitUntil thaws it n seconds later.
func (c *chaos) freeze(d *deployment, what string, s step) {
	running := map[string]bool{}
	instances, err := c.lxd.GetInstances(api.InstanceTypeContainer)
	if err != nil {
		c.note("%s %s: cannot list instances: %v", d.name, what, err)
		return
	}
	for _, inst := range instances {
		running[inst.Name] = inst.StatusCode == api.Running
	}
	var busy []string
	for _, dep := range []*deployment{d, c.other(d)} {
		for _, r := range c.gh.Runners("") {
			job, ok := c.gh.Job(r.JobID)
			if strings.HasPrefix(r.Name, dep.bed.Prefix+"-") && r.Busy && ok && job.State == fakegithub.JobInProgress && running[r.Name] {
				busy = append(busy, r.Name)
			}
		}
		c.mu.Lock()
		busy = slices.DeleteFunc(busy, func(name string) bool { _, frozen := c.frozen[name]; return frozen })
		c.mu.Unlock()
		if len(busy) > 0 {
			d = dep
			break
		}
	}
	if len(busy) == 0 {
		c.note("%s %s: no busy instance to freeze in either deployment", d.name, what)
		return
	}
	slices.Sort(busy)
	name := busy[s.pick%uint64(len(busy))]
	if err := c.setFrozen(name, true); err != nil {
		c.note("%s %s: %s: %v", d.name, what, name, err)
		return
	}
	c.mu.Lock()
	c.frozen[name] = time.Now().Add(time.Duration(s.n) * time.Second)
	c.noteLocked("%s %s: %s frozen", d.name, what, name)
	c.mu.Unlock()
}

func (c *chaos) setFrozen(name string, frozen bool) error {
	action := "unfreeze"
	if frozen {
		action = "freeze"
	}
	op, err := c.lxd.UpdateInstanceState(name, api.InstanceStatePut{Action: action, Timeout: -1}, "")
	if err == nil {
		err = lxdtest.WaitOp(op)
	}
	if err != nil {
		return fmt.Errorf("cannot %s instance %s: %w", action, name, err)
	}
	return nil
}

// thawDue thaws the instances whose freeze is over. One deleted meanwhile
// (a busy flush) needs no thawing.
func (c *chaos) thawDue(now time.Time) {
	c.mu.Lock()
	var due []string
	for name, at := range c.frozen {
		if !now.Before(at) {
			due = append(due, name)
			delete(c.frozen, name)
		}
	}
	c.mu.Unlock()
	for _, name := range due {
		err := c.setFrozen(name, false)
		if err != nil && api.StatusErrorCheck(err, 404) {
			err = fmt.Errorf("gone")
		}
		c.note("thaw %s: %v", name, errOr(err, "thawed"))
	}
}

// thawAll thaws every instance still frozen.
func (c *chaos) thawAll() { c.thawDue(time.Now().Add(time.Hour)) }
