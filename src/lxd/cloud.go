// Package lxd is the LXD cloud: runner instances on the unit's own LXD
// daemon, behind cloud.Cloud. It builds the runner image from a base image
// and the runner application, starts one ephemeral runner per instance
// with its just-in-time configuration, keeps runners away from the
// denylist, and initialises a daemon nobody has set up yet.
//
// The instances carry their metadata as user.* config keys (see
// runner.Meta*), so a fresh manager rebuilds its view from LXD alone.
//
// Only this package imports the LXD client.
package lxd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/canonical/lxd/shared/api"
	"github.com/canonical/lxd/shared/revert"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
)

// Instance types (config.LXD.Type).
const (
	Container      = "container"
	VirtualMachine = "virtual-machine"
)

// userData is the instance's user.user-data: cloud-init (on Ubuntu images)
// or the base image's boot scripts run it once, at first boot. It holds no
// secret: `lxc config show` prints it.
const userData = "#!/bin/sh\nexec " + boot.StartScriptPath + "\n"

// Config is how one unit's runners are made.
type Config struct {
	// Identity is whose runners these are: every name carries its prefix
	// and every instance its metadata.
	Identity runner.Identity
	LXD      config.LXD
	Runner   config.RunnerImage

	// Socket is LXD's unix socket; "" looks in the snap's and the deb's
	// places.
	Socket string
	// Project is the LXD project; "" is "default".
	Project string
	// Network is the bridge runners attach to and the denylist applies
	// to; "" is a bridge of the unit's own (see ownBridge).
	Network string
	// Pool is the storage pool Prepare creates if the default profile
	// has no root disk; "" is "default".
	Pool string
	// BridgeCIDR is the address of the bridge Prepare creates if the
	// default profile has no NIC, like 10.99.0.1/24; "" picks a free /24.
	BridgeCIDR string
	// ImageServers maps the remote of a "remote:alias" base image to its
	// simplestreams URL; nil means the usual remotes (ubuntu,
	// ubuntu-daily, ubuntu-minimal, images).
	ImageServers map[string]string
	// KVMDevice is checked for virtual machines; "" is /dev/kvm.
	KVMDevice string
}

// Cloud runs runners as LXD instances. It implements cloud.Provider.
type Cloud struct {
	cloud.BuildObserver // OnImageBuild: each image build is told to it

	cfg      Config
	log      *slog.Logger
	memory   int64
	disk     int64
	denylist []string

	// connMu guards the connection: d and setup are nil until a call
	// connects (see connected), and are never changed after.
	connMu sync.Mutex
	d      daemon
	setup  *lxdDaemon // initialise, applyDenylist, Teardown: not on the hot path
	// initialised: initialise and applyDenylist succeeded, which they
	// must before the first runner starts (under initMu).
	initMu      sync.Mutex
	initialised bool

	imageMu sync.Mutex // one image build at a time
	// templateMu guards templates, the runner image templates known to be
	// made (template.go), and makes one at a time.
	templateMu sync.Mutex
	templates  map[string]bool
	// building is the base image of the build in progress (under imageMu).
	building resolvedBase
	// rebuildAfter: a rebuild of a usable image failed; the next is not
	// tried before then (under imageMu; see rebuildBackoff).
	rebuildAfter time.Time
	// legacyDone and legacyNext pace sweepLegacy (under imageMu).
	legacyDone bool
	legacyNext time.Time

	mu    sync.Mutex
	image string // fingerprint of the runner image Create uses
	// alias is the runner image alias of the last Prepare, to tell a
	// change.
	alias string
	// rebuilt: ensureImage replaced the image under the same alias for a
	// new recipe or base, which the next Prepare reports as a change.
	rebuilt bool
	// progress is what the image preparation is doing (PrepareProgress).
	progress string
	// creating names the instances this process is creating now: a
	// never-started instance not among them was left half-made by a
	// manager that died (see Instances).
	creating map[string]bool
	pool     string // pool of the default profile's root disk, for the size
	// storageNote is why runner starts are slow (a dir pool), or "" (see
	// Note); probeStorage, if set, stands in for LXD's storage drivers
	// and free space in tests (see ensurePool).
	storageNote  string
	probeStorage func(context.Context) (storageSupport, error)
	// profileNetwork and profileNIC are the default profile's NIC's
	// network and device name: the shared network, which runners leave
	// for the unit's bridge (see ownBridge).
	profileNetwork, profileNIC string
	// sharedDone: the unit's denylist is off the shared network, or was
	// never there (see retireSharedACL).
	sharedDone bool
}

var _ cloud.ImageBuilder = (*Cloud)(nil)

var _ cloud.Provider = (*Cloud)(nil)

// New checks cfg. It does not connect: every call connects first if no
// call has yet (see connected), so a daemon that is down at start is the
// problem the calls report until it answers. Nor does it need an
// initialised daemon: Prepare completes one.
func New(cfg Config, log *slog.Logger) (*Cloud, error) {
	if err := cfg.Identity.Check(); err != nil {
		return nil, fmt.Errorf("cannot use LXD: %w", err)
	}
	// The values are as src/config checked them; only the host is
	// checked here, by config's rule.
	kvm := cfg.KVMDevice
	if kvm == "" {
		kvm = config.KVMDevice
	}
	if problems := cfg.LXD.HostProblems(config.Host{KVM: config.HasKVM(kvm)}); len(problems) > 0 {
		return nil, fmt.Errorf("cannot use LXD: %w", &config.InvalidError{Problems: problems})
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cloud{cfg: cfg, log: log.With("cloud", "lxd"), memory: cfg.LXD.Memory.Bytes(), disk: cfg.LXD.Disk.Bytes()}
	for _, p := range cfg.Runner.Denylist {
		c.denylist = append(c.denylist, p.String())
	}
	return c, nil
}

// connected connects to LXD unless a call did already; a failed
// connection is tried again by the next call.
func (c *Cloud) connected(ctx context.Context) error {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.d != nil {
		return nil
	}
	d, err := connect(ctx, c.cfg.Socket, c.cfg.Project)
	if err != nil {
		return err
	}
	c.d, c.setup = d, d
	c.discover(ctx)
	return nil
}

// ready connects, and completes the daemon, makes the unit's bridge and
// applies the denylist unless that succeeded before: the denylist holds
// before the first runner or image builder starts.
func (c *Cloud) ready(ctx context.Context) error {
	c.initMu.Lock()
	defer c.initMu.Unlock()
	if c.initialised {
		return nil
	}
	raiseHostLimits(c.log)
	// A deb-installed daemon may be uninitialised.
	if err := c.initialise(ctx); err != nil {
		return err
	}
	if err := c.ensureOwnBridge(ctx); err != nil {
		return err
	}
	if err := c.applyDenylist(ctx); err != nil {
		return err
	}
	c.initialised = true
	return nil
}

// Prepare completes the daemon and applies the denylist if that is not
// done yet, and makes sure of the runner image of the runner application
// fetch returns (see ensureImage). It reports a change when the image's
// alias moved to another runner version since the last Prepare, or the
// image was rebuilt for another recipe or base (not for its age alone).
func (c *Cloud) Prepare(ctx context.Context, fetch cloud.FetchRunner) (changed bool, err error) {
	if err := c.ready(ctx); err != nil {
		return false, err
	}
	c.maybeRetireSharedACL(ctx)
	tarball, version, err := fetch(ctx)
	if err != nil {
		return false, err
	}
	alias, err := c.ensureImage(ctx, tarball, version)
	if err != nil {
		return false, err
	}
	c.prepareTemplate(ctx) // template.go: off the first create's path
	c.mu.Lock()
	defer c.mu.Unlock()
	changed = c.alias != "" && c.alias != alias || c.rebuilt
	c.alias, c.rebuilt = alias, false
	return changed, nil
}

// Instances lists this deployment's runners, from LXD's config alone: an
// instance of another model or unit on the same daemon is never listed,
// even if its name looks like ours.
func (c *Cloud) Instances(ctx context.Context) ([]cloud.Instance, error) {
	if err := c.connected(ctx); err != nil {
		return nil, fmt.Errorf("cannot list LXD instances: %w", err)
	}
	all, err := c.d.Instances(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list LXD instances: %w", err)
	}
	var out []cloud.Instance
	for _, inst := range all {
		instance := toInstance(inst)
		// The Python charm's runners (none of our metadata) are listed
		// too: the engine takes one only on GitHub's word (see
		// runner.FromPythonCharm and manager.Join).
		if !c.cfg.Identity.OwnsInstance(instance.Name, instance.Owner) && !c.cfg.Identity.FromPythonCharm(instance.Name, instance.Owner) {
			continue
		}
		if instance.Status == cloud.Building && neverStarted(inst) && !c.isCreating(inst.Name) {
			// Its create died between LXD's create and start (the
			// manager was killed): nobody will start it, so it is a
			// stopped runner for cleanup, not one booting for the
			// creation timeout's 20 minutes.
			instance.Status = cloud.Stopped
		}
		out = append(out, instance)
	}
	return out, nil
}

func toInstance(inst api.Instance) cloud.Instance {
	out := cloud.Instance{Name: inst.Name, CreatedAt: inst.CreatedAt, Status: status(inst), Owner: ownerOf(inst.Config)}
	out.Scope, _ = runner.ParseScope(inst.Config["user."+runner.MetaScope])
	if id, err := strconv.ParseInt(inst.Config["user."+runner.MetaRunnerID], 10, 64); err == nil {
		out.RunnerID = id
	}
	if t, err := time.Parse(time.RFC3339, inst.Config["user."+runner.MetaCreatedAt]); err == nil {
		out.CreatedAt = t
	}
	return out
}

func neverStarted(inst api.Instance) bool {
	switch api.StatusCode(inst.StatusCode) {
	case api.Stopped, api.Stopping, api.Aborting:
		return inst.Config["volatile.last_state.power"] == ""
	}
	return false
}

func (c *Cloud) isCreating(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.creating[name]
}

// status maps LXD's state. A stopped instance that has never run is one
// whose create is under way (LXD sets volatile.last_state.power at the
// first start), not a runner that finished.
func status(inst api.Instance) cloud.Status {
	switch api.StatusCode(inst.StatusCode) {
	case api.Running:
		return cloud.Running
	case api.Stopped, api.Stopping, api.Aborting:
		if inst.Config["volatile.last_state.power"] == "" {
			return cloud.Building
		}
		return cloud.Stopped
	case api.Error, api.Frozen, api.Freezing:
		// LXD freezes containers for snapshots; a job inside goes on
		// when it thaws.
		return cloud.Unresponsive
	default: // Started, Starting, Pending, Operation...
		return cloud.Building
	}
}

// Create starts one runner. On any failure the instance is deleted again.
// req.JITConfig reaches the instance only as a root-owned 0600 file.
func (c *Cloud) Create(ctx context.Context, req cloud.CreateRequest) error {
	if c.cfg.Identity.Generation(req.Name) != runner.Current {
		return fmt.Errorf("cannot create runner %q: name is not of prefix %q", req.Name, c.cfg.Identity.Prefix())
	}
	if req.JITConfig == "" {
		return fmt.Errorf("cannot create runner %q: no JIT config", req.Name)
	}
	if err := c.ready(ctx); err != nil {
		return fmt.Errorf("cannot create runner %q: %w", req.Name, err)
	}
	c.mu.Lock()
	image := c.image
	if c.creating == nil {
		c.creating = map[string]bool{}
	}
	c.creating[req.Name] = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.creating, req.Name)
		c.mu.Unlock()
	}()
	if image == "" {
		return fmt.Errorf("cannot create runner %q: no runner image yet (Prepare has not succeeded)", req.Name)
	}
	log := c.log.With("instance", req.Name, "runner-id", req.RunnerID)
	start := time.Now()

	if err := c.createRunnerInstance(ctx, req, image); err != nil { // template.go
		return fmt.Errorf("cannot create runner instance %q: %w", req.Name, err)
	}
	reverter := revert.New()
	defer reverter.Fail()
	reverter.Add(func() {
		// ctx may be what failed; the clean-up gets its own time.
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
		defer cancel()
		if err := c.Delete(cleanupCtx, req.Name); err != nil {
			log.Error("cannot delete instance of failed create", "error", err)
		}
	})

	files, err := c.runnerFiles(ctx, req)
	if err != nil {
		return err
	}
	if c.cfg.LXD.Type == VirtualMachine {
		// A VM's files go through its agent, which runs once it booted;
		// the start script waits for the JIT config.
		if err := c.d.SetState(ctx, req.Name, "start", false); err != nil {
			return fmt.Errorf("cannot start runner instance %q: %w", req.Name, err)
		}
		if err := c.pushWhenAgentUp(ctx, req.Name, files); err != nil {
			return err
		}
	} else {
		// A stopped container's files are written directly: the JIT config
		// is there before anything in the container runs.
		for _, f := range files {
			if err := c.d.PushFile(ctx, req.Name, f); err != nil {
				return fmt.Errorf("cannot write %s into runner instance %q: %w", f.Path, req.Name, err)
			}
		}
		if err := c.d.SetState(ctx, req.Name, "start", false); err != nil {
			return fmt.Errorf("cannot start runner instance %q: %w", req.Name, err)
		}
	}
	reverter.Success()
	log.Info("runner instance started", "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

func (c *Cloud) instancePost(req cloud.CreateRequest, source api.InstanceSource) api.InstancesPost {
	cfg := map[string]string{
		"limits.cpu":                   strconv.Itoa(c.cfg.LXD.CPU),
		"limits.memory":                strconv.FormatInt(c.memory, 10),
		"user." + runner.MetaCreatedAt: time.Now().UTC().Format(time.RFC3339),
		"user.user-data":               userData,
		// A runner lives for one job; it must not come back after a reboot
		// of the host, when its JIT config is spent.
		"boot.autostart": "false",
	}
	for k, v := range c.cfg.Identity.Meta(req.RunnerID, req.Scope) {
		cfg["user."+k] = v
	}
	if c.cfg.LXD.Type == Container {
		cfg["security.nesting"] = "true" // Docker and friends inside the runner
	}
	devices := map[string]map[string]string{}
	if pool := c.rootPool(); pool != "" {
		devices["root"] = map[string]string{"type": "disk", "path": "/", "pool": pool, "size": strconv.FormatInt(c.disk, 10)}
	}
	for name, nic := range c.runnerNIC() {
		devices[name] = nic
	}
	return api.InstancesPost{
		Name:        req.Name,
		Type:        api.InstanceType(c.cfg.LXD.Type),
		Source:      source,
		InstancePut: api.InstancePut{Config: cfg, Devices: devices, Profiles: []string{"default"}, Ephemeral: false},
	}
}

// rootPool is the pool of the default profile's root disk, found by
// Prepare or the first Create; "" leaves the profile's disk unsized.
func (c *Cloud) rootPool() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pool
}

// runnerFiles are what Create writes into an instance, the JIT config last
// so that the start script, which waits for it, finds the rest in place.
func (c *Cloud) runnerFiles(ctx context.Context, req cloud.CreateRequest) ([]instanceFile, error) {
	// The runner's own variables (its tmate server) follow the common ones.
	env := c.cfg.Runner.EnvironmentFileWith(req.Environment)
	files := []instanceFile{{Path: boot.EnvironmentPath, Content: []byte(env), Mode: 0o644}}
	if c.cfg.Runner.DockerhubMirror != "" {
		daemonJSON, err := c.dockerConfig(ctx, req.Name)
		if err != nil {
			return nil, err
		}
		files = append(files,
			instanceFile{Path: boot.DockerConfigDir, Mode: 0o755, Dir: true},
			instanceFile{Path: boot.DockerConfig, Content: daemonJSON, Mode: 0o644})
	}
	// The job-started hook and the operator's script: root's, which the
	// runner user, who runs them, can read and not change.
	if c.cfg.Runner.PreJobHook() {
		files = append(files, instanceFile{Path: boot.PreJobHookPath, Content: []byte(boot.PreJobHook), Mode: 0o755})
		if script := c.cfg.Runner.PreJobScriptFile(); script != "" {
			files = append(files, instanceFile{Path: boot.PreJobScriptPath, Content: []byte(script), Mode: 0o755})
		}
	}
	files = append(files, instanceFile{Path: boot.JITConfigPath, Content: []byte(req.JITConfig), Mode: 0o600})
	return files, nil
}

// dockerConfig is the image's /etc/docker/daemon.json, if any, with the
// mirror as registry-mirrors; the image's other settings stay.
func (c *Cloud) dockerConfig(ctx context.Context, instance string) ([]byte, error) {
	settings := map[string]any{}
	if c.cfg.LXD.Type == Container {
		existing, err := c.d.PullFile(ctx, instance, boot.DockerConfig)
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return nil, fmt.Errorf("cannot read %s of runner instance %q: %w", boot.DockerConfig, instance, err)
		case len(strings.TrimSpace(string(existing))) > 0:
			if err := json.Unmarshal(existing, &settings); err != nil {
				return nil, fmt.Errorf("cannot read %s of runner image: %w", boot.DockerConfig, err)
			}
		}
	}
	settings["registry-mirrors"] = []string{c.cfg.Runner.DockerhubMirror}
	data, err := json.MarshalIndent(settings, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("cannot encode %s: %w", boot.DockerConfig, err)
	}
	return append(data, '\n'), nil
}

// pushWhenAgentUp writes files into a booting VM, retrying until its agent
// answers.
func (c *Cloud) pushWhenAgentUp(ctx context.Context, name string, files []instanceFile) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for _, f := range files {
		for {
			err := c.d.PushFile(ctx, name, f)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("cannot write %s into runner VM %q (its agent never answered): %w", f.Path, name, err)
			case <-time.After(2 * time.Second):
			}
		}
	}
	return nil
}

// Delete stops and deletes one of the deployment's runner instances; one
// already gone is not an error. Neither is one of that name whose metadata
// names another owner: this deployment's is gone, and the other's is left
// alone (the engine deletes only what Instances listed, so this is the last
// line, for a name reused between the two).
func (c *Cloud) Delete(ctx context.Context, name string) error {
	if err := c.connected(ctx); err != nil {
		return fmt.Errorf("cannot delete runner instance %q: %w", name, err)
	}
	inst, err := c.d.Instance(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("cannot delete runner instance %q: %w", name, err)
	}
	if owner := ownerOf(inst.Config); !c.cfg.Identity.OwnsInstance(name, owner) && !c.cfg.Identity.FromPythonCharm(name, owner) {
		c.log.Warn("not deleting an instance that is not this unit's", "instance", name, "owner-model", owner.Model, "owner-unit", owner.Unit)
		return nil
	}
	return c.remove(ctx, name)
}

// remove stops and deletes an instance, whoever's: callers check first.
func (c *Cloud) remove(ctx context.Context, name string) error {
	// A forced stop takes under a second, but an instance that is powering
	// itself off after its job holds LXD's stop lock for a moment, and a
	// second stop then waits on it: bound the stop, and let the delete's
	// retries below carry on through that window.
	stopCtx, cancel := context.WithTimeout(ctx, forceStopTimeout)
	err := c.d.SetState(stopCtx, name, "stop", true)
	cancel()
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil && !isAlreadyStopped(err):
		c.log.Warn("cannot force-stop runner instance; deleting it anyway", "instance", name, "error", err)
	}
	deadline := time.Now().Add(deleteBusyWindow)
	for {
		err := c.d.DeleteInstance(ctx, name)
		if err == nil || errors.Is(err, ErrNotFound) {
			c.log.Info("runner instance deleted", "instance", name)
			return nil
		}
		if !isBusyStopping(err) || time.Now().After(deadline) {
			return fmt.Errorf("cannot delete runner instance %q: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot delete runner instance %q: %w", name, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

const (
	// forceStopTimeout bounds a forced stop (see Delete).
	forceStopTimeout = 30 * time.Second
	// deleteBusyWindow is how long Delete retries while LXD is still
	// stopping the instance.
	deleteBusyWindow = time.Minute
)

// isBusyStopping tells an instance LXD is still stopping ("Instance is busy
// running a stop operation", or still running) from a real failure.
func isBusyStopping(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "busy running") || strings.Contains(msg, "instance is running")
}

func isAlreadyStopped(err error) bool {
	return strings.Contains(strings.ToLower(err.Error()), "already stopped") ||
		strings.Contains(strings.ToLower(err.Error()), "not running")
}
