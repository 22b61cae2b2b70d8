// Package openstack is the OpenStack cloud: runner servers in an OpenStack
// project, behind cloud.Cloud, over gophercloud.
//
// A runner is one Nova server booted from an image that already holds the
// runner application (Config.RunnerDir, /home/ubuntu/actions-runner by
// default, where Canonical's github-runner-image-builder puts it). Its
// user-data, on a config drive, carries the JIT config and starts the
// runner; the server powers itself off after its one job, and the manager
// deletes it. The servers carry their model, unit, runner ID, scope and
// creation time as Nova metadata (see runner.Meta*), so a fresh manager
// rebuilds its view from Nova alone, and two models' units of one name in
// one project never take each other's servers for their own. Nothing else
// is made per runner: no keypair (the manager never logs in to a runner)
// and no port of its own (Nova makes the port on the configured network
// and deletes it with the server; a Delete sweeps any it left). One
// security group per unit, egress only, holds the denylist.
//
// Only this package imports gophercloud.
package openstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
)

// Config is how one unit's runners are made.
type Config struct {
	// Identity is whose runners these are: every server's name carries its
	// prefix and its metadata the whole identity.
	Identity runner.Identity
	// OpenStack is the cloud (clouds.yaml text and the cloud in it) and
	// the flavor, network and image of runners, each a name or an ID.
	OpenStack config.OpenStack
	Runner    config.RunnerImage

	// SecurityGroup is the runners' security group, created if missing;
	// "" is "<prefix>-runners". One that exists is used only if its
	// description names this unit and model (see ownsSecurityGroup).
	SecurityGroup string
	// RunnerUser and RunnerDir are where the image has the runner
	// application (run.sh); "" is DefaultRunnerUser, DefaultRunnerDir.
	RunnerUser string
	RunnerDir  string
	// CreateTimeout bounds the wait for a new server to be ACTIVE; zero is
	// DefaultCreateTimeout. A server still building then is deleted.
	CreateTimeout time.Duration
	// DeleteTimeout bounds the wait for Nova to confirm a delete; zero is
	// DefaultDeleteTimeout.
	DeleteTimeout time.Duration
	// BuildTimeout bounds the wait for an image builder to power off, and
	// SnapshotTimeout the wait for its snapshot to be active (image.go);
	// zero is DefaultBuildTimeout, DefaultSnapshotTimeout.
	BuildTimeout    time.Duration
	SnapshotTimeout time.Duration
}

// Defaults of Config's timeouts. A server on a busy cloud can take minutes
// to schedule and boot; the Python charm waited 5 minutes.
const (
	DefaultCreateTimeout = 5 * time.Minute
	DefaultDeleteTimeout = 2 * time.Minute
)

// pollInterval is how often a create or delete asks Nova how it is going.
const pollInterval = 500 * time.Millisecond

// Errors of Prepare (and of Create after a failed Prepare), meant for the
// unit's status; test them with errors.Is. The not-founds need the
// operator (cloud.NeedsOperator).
var (
	ErrImageNotFound   = cloud.NewOperatorError("OpenStack image not found")
	ErrFlavorNotFound  = cloud.NewOperatorError("OpenStack flavor not found")
	ErrNetworkNotFound = cloud.NewOperatorError("OpenStack network not found")
	// ErrNotPrepared: Create before any Prepare succeeded.
	ErrNotPrepared = errors.New("the OpenStack image, flavor and network are not checked yet")
)

// Cloud runs runners as OpenStack servers. It implements cloud.Provider.
type Cloud struct {
	cloud.BuildObserver // OnImageBuild: each image build is told to it

	cfg      Config
	log      *slog.Logger
	denylist []netip.Prefix
	parsed   *parsedCloud

	// connMu guards the connection: api is nil until a call connects (see
	// connected), and is never changed after.
	connMu sync.Mutex
	api    openstackAPI

	prepareMu sync.Mutex // one Prepare at a time
	mu        sync.Mutex
	ready     *resources // what Create uses; nil until a Prepare succeeds
	// prepareErr is why the last Prepare failed: Create fails with it at
	// once instead of trying Nova, so a deleted image is one clear
	// problem, not a stream of failed creates.
	prepareErr error
	lastImage  string // image ID of the last successful Prepare
	// source is where the last fetched runner application came from
	// (SetRunnerSource), for the image build. Under mu.
	source cloud.RunnerSource
	// late counts the watches for servers of creates Nova did not answer
	// (deleteLateServer).
	late sync.WaitGroup
	// legacyDone and legacyNext pace retireLegacySecurityGroup (under
	// prepareMu).
	legacyDone bool
	legacyNext time.Time
}

// resources are what a runner server is made of, resolved to IDs.
type resources struct {
	imageID, imageName string
	flavorID           string
	networkID          string
	securityGroupID    string
}

var _ cloud.Provider = (*Cloud)(nil)

var (
	userPattern = regexp.MustCompile(`^[a-z_][a-z0-9_-]*$`)
	dirPattern  = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)
)

// New checks cfg and reads its clouds.yaml, whose errors are
// ErrCloudsYAMLSyntax and ErrCloudsYAMLIncomplete. It does not connect:
// every call authenticates first if no call has yet (see connected), so a
// Keystone that is down at start is the problem the calls report until it
// answers. None of the errors shows a secret.
func New(cfg Config, log *slog.Logger) (*Cloud, error) {
	if err := cfg.Identity.Check(); err != nil {
		return nil, fmt.Errorf("cannot use OpenStack: %w", err)
	}
	// The values are as src/config checked them. A bad clouds.yaml is
	// refused by parseCloudsYAML, which applies config's rule and gives the
	// error its class (ErrCloudsYAMLSyntax, ErrCloudsYAMLIncomplete).
	if cfg.SecurityGroup == "" {
		cfg.SecurityGroup = cfg.Identity.Prefix() + "-runners"
	}
	if cfg.RunnerUser == "" {
		cfg.RunnerUser = DefaultRunnerUser
	}
	if cfg.RunnerDir == "" {
		cfg.RunnerDir = DefaultRunnerDir
	}
	if !userPattern.MatchString(cfg.RunnerUser) {
		return nil, fmt.Errorf("cannot use OpenStack: runner user %q is not a user name", cfg.RunnerUser)
	}
	if !dirPattern.MatchString(cfg.RunnerDir) {
		return nil, fmt.Errorf("cannot use OpenStack: runner directory %q is not a plain absolute path", cfg.RunnerDir)
	}
	if cfg.CreateTimeout <= 0 {
		cfg.CreateTimeout = DefaultCreateTimeout
	}
	if cfg.DeleteTimeout <= 0 {
		cfg.DeleteTimeout = DefaultDeleteTimeout
	}
	if cfg.BuildTimeout <= 0 {
		cfg.BuildTimeout = DefaultBuildTimeout
	}
	if cfg.SnapshotTimeout <= 0 {
		cfg.SnapshotTimeout = DefaultSnapshotTimeout
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	parsed, err := parseCloudsYAML(cfg.OpenStack.CloudsYAML, cfg.OpenStack.Cloud)
	if err != nil {
		return nil, err
	}
	return &Cloud{cfg: cfg, parsed: parsed, log: log.With("cloud", "openstack", "openstack-cloud", parsed.name), denylist: cfg.Runner.Denylist}, nil
}

// connected authenticates unless a call did already; a failed connection
// (Keystone unreachable, credentials refused: ErrUnreachable, ErrTLS,
// ErrUnauthorized, ErrNoEndpoint) is tried again by the next call.
// gophercloud renews the token itself once it has one.
func (c *Cloud) connected(ctx context.Context) error {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.api != nil {
		return nil
	}
	clients, err := connect(ctx, c.parsed)
	if err != nil {
		return err
	}
	c.api = &gophercloudAPI{clients: *clients, secrets: c.parsed.secrets}
	c.log.Info("connected to OpenStack", "auth-url", c.parsed.auth.IdentityEndpoint, "region", c.parsed.endpoint.Region)
	return nil
}

// Prepare resolves and checks the image, flavor and network, and makes
// sure of the security group. The runner application is in the image, so
// fetch is not called, but when the unit builds the image itself
// (openstack-base-image and no other image source, see image.go): then
// fetch gives the runner version, and a new one builds a new image. It
// reports a change when the image's ID did (a new image was uploaded under
// the same name, or built): idle runners are then replaced. Until a later
// Prepare succeeds, Create fails with its error; but a failed build keeps
// the last good image for Create.
func (c *Cloud) Prepare(ctx context.Context, fetch cloud.FetchRunner) (changed bool, err error) {
	c.prepareMu.Lock()
	defer c.prepareMu.Unlock()
	r, err := c.resolve(ctx, fetch)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if !c.builds() || c.ready == nil || !errors.Is(err, errBuild) {
			c.ready = nil
		}
		c.prepareErr = err
		return false, err
	}
	changed = c.lastImage != "" && c.lastImage != r.imageID
	if changed || c.lastImage == "" {
		c.log.Info("runner image resolved", "image", r.imageName, "image-id", r.imageID, "changed", changed)
	}
	c.ready, c.prepareErr, c.lastImage = r, nil, r.imageID
	return changed, nil
}

func (c *Cloud) resolve(ctx context.Context, fetch cloud.FetchRunner) (*resources, error) {
	if err := c.connected(ctx); err != nil {
		return nil, err
	}
	var r resources
	var errs []error
	if !c.builds() {
		image, err := c.findImage(ctx, c.cfg.OpenStack.Image)
		if err != nil {
			errs = append(errs, err)
		} else {
			r.imageID, r.imageName = image.ID, image.Name
		}
	}
	var err error
	if r.flavorID, err = c.findFlavor(ctx, c.cfg.OpenStack.Flavor); err != nil {
		errs = append(errs, err)
	}
	if r.networkID, err = c.findNetwork(ctx, c.cfg.OpenStack.Network); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if r.securityGroupID, err = c.ensureSecurityGroup(ctx); err != nil {
		return nil, err
	}
	c.maybeRetireLegacySecurityGroup(ctx)
	if c.builds() {
		// The builder boots with the runners' flavor, network and
		// security group.
		image, err := c.ensureBuiltImage(ctx, fetch, &r)
		if err != nil {
			return nil, &buildError{err}
		}
		r.imageID, r.imageName = image.ID, image.Name
	}
	return &r, nil
}

// errBuild marks a failure of the image build (buildError), after which
// Create keeps the last good image.
var errBuild = errors.New("the runner image build failed")

type buildError struct{ err error }

func (e *buildError) Error() string   { return e.err.Error() }
func (e *buildError) Unwrap() []error { return []error{e.err, errBuild} }

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// findImage finds an active image by ID, else by name; of several active
// images of one name (an image builder uploading a new one before
// deleting the old), the newest.
func (c *Cloud) findImage(ctx context.Context, nameOrID string) (*images.Image, error) {
	if uuidPattern.MatchString(nameOrID) {
		image, err := c.api.Image(ctx, nameOrID)
		switch {
		case err == nil:
			if image.Status != images.ImageStatusActive {
				return nil, classify(ErrImageNotFound, nil, "image %q is %s, not active", nameOrID, image.Status)
			}
			return image, nil
		case !errors.Is(err, errNotFound):
			return nil, fmt.Errorf("cannot look up OpenStack image %q: %w", nameOrID, err)
		}
	}
	found, err := c.api.ImagesNamed(ctx, nameOrID)
	if err != nil {
		return nil, fmt.Errorf("cannot look up OpenStack image %q: %w", nameOrID, err)
	}
	var active []images.Image
	var statuses []string
	for _, image := range found {
		if image.Status == images.ImageStatusActive {
			active = append(active, image)
		} else {
			statuses = append(statuses, string(image.Status))
		}
	}
	if len(active) == 0 {
		if len(statuses) > 0 {
			return nil, classify(ErrImageNotFound, nil, "image %q is %s, not active", nameOrID, strings.Join(statuses, ", "))
		}
		return nil, classify(ErrImageNotFound, nil, "no image named or with ID %q (deleted, or not shared with the project?)", nameOrID)
	}
	slices.SortFunc(active, func(a, b images.Image) int { return b.CreatedAt.Compare(a.CreatedAt) })
	if len(active) > 1 {
		c.log.Warn("several active images have the runner image's name; using the newest", "image", nameOrID, "image-id", active[0].ID, "count", len(active))
	}
	return &active[0], nil
}

// findFlavor finds a flavor by ID, else by name. Flavor IDs need not be
// UUIDs ("1", "m1.small"), so the ID is tried first among all of them.
func (c *Cloud) findFlavor(ctx context.Context, nameOrID string) (string, error) {
	all, err := c.api.Flavors(ctx)
	if err != nil {
		return "", fmt.Errorf("cannot list OpenStack flavors: %w", err)
	}
	for _, f := range all {
		if f.ID == nameOrID {
			return f.ID, nil
		}
	}
	for _, f := range all {
		if f.Name == nameOrID {
			return f.ID, nil
		}
	}
	return "", classify(ErrFlavorNotFound, nil, "no flavor named or with ID %q that the project may use", nameOrID)
}

// findNetwork finds a network by ID, else by name, which must be unique.
func (c *Cloud) findNetwork(ctx context.Context, nameOrID string) (string, error) {
	if uuidPattern.MatchString(nameOrID) {
		found, err := c.api.Networks(ctx, networks.ListOpts{ID: nameOrID})
		if err != nil {
			return "", fmt.Errorf("cannot look up OpenStack network %q: %w", nameOrID, err)
		}
		if len(found) == 1 {
			return found[0].ID, nil
		}
	}
	found, err := c.api.Networks(ctx, networks.ListOpts{Name: nameOrID})
	if err != nil {
		return "", fmt.Errorf("cannot look up OpenStack network %q: %w", nameOrID, err)
	}
	switch len(found) {
	case 0:
		return "", classify(ErrNetworkNotFound, nil, "no network named or with ID %q that the project may use", nameOrID)
	case 1:
		return found[0].ID, nil
	default:
		return "", classify(ErrNetworkNotFound, nil, "%d networks are named %q: set openstack-network to the ID of one", len(found), nameOrID)
	}
}

// Instances lists this deployment's runner servers, from Nova alone: a
// server of another model or unit in the project is never listed, even if
// its name looks like ours.
func (c *Cloud) Instances(ctx context.Context) ([]cloud.Instance, error) {
	// Nova's name filter is a regular expression, and a substring match;
	// the application's name starts both namings.
	if err := c.connected(ctx); err != nil {
		return nil, fmt.Errorf("cannot list OpenStack servers: %w", err)
	}
	list, err := c.api.Servers(ctx, "^"+regexp.QuoteMeta(c.cfg.Identity.App+"-"))
	if err != nil {
		return nil, fmt.Errorf("cannot list OpenStack servers: %w", err)
	}
	var out []cloud.Instance
	for _, srv := range list {
		// The Python charm's servers (none of our metadata) are listed
		// too: the engine takes one only on GitHub's word (see
		// runner.FromPythonCharm and manager.Join).
		if inst := toInstance(srv); c.cfg.Identity.OwnsInstance(inst.Name, inst.Owner) || c.cfg.Identity.FromPythonCharm(inst.Name, inst.Owner) {
			out = append(out, inst)
		}
	}
	return out, nil
}

func toInstance(srv servers.Server) cloud.Instance {
	out := cloud.Instance{Name: srv.Name, CreatedAt: srv.Created, Status: status(srv.Status), Owner: ownerOf(srv.Metadata)}
	out.Scope, _ = runner.ParseScope(srv.Metadata[runner.MetaScope])
	if id, err := strconv.ParseInt(srv.Metadata[runner.MetaRunnerID], 10, 64); err == nil {
		out.RunnerID = id
	}
	if t, err := time.Parse(time.RFC3339, srv.Metadata[runner.MetaCreatedAt]); err == nil {
		out.CreatedAt = t
	}
	if id, err := strconv.ParseInt(srv.Metadata[pythonCharmRunnerID], 10, 64); err == nil && out.Owner == (runner.Owner{}) && out.RunnerID == 0 {
		out.RunnerID = id
	}
	return out
}

// pythonCharmRunnerID is the Nova metadata key in which Canonical's Python
// charm kept a server's GitHub runner id: the engine takes such a server
// only if GitHub lists its runner under that id.
const pythonCharmRunnerID = "runner_id"

// status maps Nova's server status. Only a server that is off (the runner
// powers it off after its job) or gone is stopped. A paused or suspended
// server resumes with its job where it was, and UNKNOWN or ERROR is what
// Nova says while a compute service restarts: unresponsive, not finished.
func status(novaStatus string) cloud.Status {
	switch novaStatus {
	case "BUILD":
		return cloud.Building
	case "ACTIVE", "REBOOT", "HARD_REBOOT", "PASSWORD", "REBUILD", "MIGRATING", "RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE":
		return cloud.Running
	case "SHUTOFF", "STOPPED", "SHELVED", "SHELVED_OFFLOADED", "DELETED", "SOFT_DELETED", "RESCUE":
		return cloud.Stopped
	default: // PAUSED, SUSPENDED, ERROR, UNKNOWN
		return cloud.Unresponsive
	}
}

// Create boots one runner server and waits until Nova has it ACTIVE. On
// any failure, a server in ERROR or one still building after the create
// timeout included, the server is deleted again and Create says why.
// req.JITConfig reaches the server only in its user-data.
func (c *Cloud) Create(ctx context.Context, req cloud.CreateRequest) error {
	if c.cfg.Identity.Generation(req.Name) != runner.Current {
		return fmt.Errorf("cannot create runner %q: name is not of prefix %q", req.Name, c.cfg.Identity.Prefix())
	}
	r, err := c.resources()
	if err != nil {
		return fmt.Errorf("cannot create runner %q: %w", req.Name, err)
	}
	encoded, err := userDataWith(req.Name, req.JITConfig, c.cfg.RunnerUser, c.cfg.RunnerDir, c.cfg.Runner, req.Environment)
	if err != nil {
		return fmt.Errorf("cannot create runner %q: %w", req.Name, err)
	}
	log := c.log.With("server", req.Name, "runner-id", req.RunnerID)
	start := time.Now()
	configDrive := true
	metadata := c.cfg.Identity.Meta(req.RunnerID, req.Scope)
	metadata[runner.MetaCreatedAt] = start.UTC().Format(time.RFC3339)
	opts := servers.CreateOpts{
		Name:      req.Name,
		ImageRef:  r.imageID,
		FlavorRef: r.flavorID,
		Networks:  []servers.Network{{UUID: r.networkID}},
		// Nova takes a name or an ID; the ID is what Prepare checked.
		SecurityGroups: []string{r.securityGroupID},
		Metadata:       metadata,
		// Already base64: gophercloud sends it as it is.
		UserData:    []byte(encoded),
		ConfigDrive: &configDrive,
	}

	// From here on, a failure deletes whatever Nova made of the request,
	// found by name: a POST that timed out may still have made a server.
	succeeded, unanswered := false, false
	defer func() {
		if succeeded {
			return
		}
		if unanswered {
			// Watched off the create's path: a cycle cut short by a drain
			// must not wait for it; Teardown does.
			c.late.Add(1)
			go func() {
				defer c.late.Done()
				c.deleteLateServer(ctx, req.Name, log)
			}()
			return
		}
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.DeleteTimeout+apiTimeout)
		defer cancel()
		if err := c.Delete(cleanupCtx, req.Name); err != nil {
			log.Error("cannot delete the server of a failed create", "error", err)
		}
	}()

	srv, err := c.api.CreateServer(ctx, opts)
	if err != nil {
		c.forgetIfGone(err)
		unanswered = errors.Is(err, errUnanswered)
		return fmt.Errorf("cannot create runner server %q: %w", req.Name, err)
	}
	log = log.With("server-id", srv.ID)
	if err := c.waitActive(ctx, srv.ID, log); err != nil {
		return fmt.Errorf("cannot create runner server %q: %w", req.Name, err)
	}
	succeeded = true
	log.Info("runner server active", "duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// lateServerWait bounds how long a create Nova did not answer is watched
// for the server Nova may still make of it. (A variable for tests.)
var lateServerWait = 30 * time.Second

// deleteLateServer deletes the server of a create that Nova did not answer
// (cut short by a drain, say): Nova may make it seconds later, after the
// create has returned and a list has shown none, and nothing would delete
// it then (after a unit's stop, its manager is gone). So the name is
// watched, a second apart, until a server of it has been deleted or
// lateServerWait passes. Teardown waits for every such watch.
func (c *Cloud) deleteLateServer(ctx context.Context, name string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lateServerWait+c.cfg.DeleteTimeout+apiTimeout)
	defer cancel()
	deadline := time.Now().Add(lateServerWait)
	for {
		list, err := c.api.Servers(ctx, "^"+regexp.QuoteMeta(name)+"$")
		found := false
		for _, srv := range list {
			found = found || srv.Name == name
		}
		if err == nil && found {
			if err := c.Delete(ctx, name); err != nil {
				log.Error("cannot delete the server of a create Nova did not answer", "error", err)
			} else {
				log.Info("deleted the server of a create Nova did not answer")
			}
			return
		}
		if time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// resources returns what Prepare resolved, or why it could not.
func (c *Cloud) resources() (*resources, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.ready != nil:
		return c.ready, nil
	case c.prepareErr != nil:
		return nil, c.prepareErr
	default:
		return nil, ErrNotPrepared
	}
}

// forgetIfGone drops the resolved resources when Nova says the image or
// flavor went away since Prepare, so that the creates after this one fail
// at once until the next Prepare finds out more.
func (c *Cloud) forgetIfGone(err error) {
	msg := err.Error()
	var gone error
	switch {
	case strings.Contains(msg, "Image") && strings.Contains(msg, "could not be found"),
		strings.Contains(msg, "Image") && strings.Contains(msg, "is not active"):
		gone = classify(ErrImageNotFound, nil, "image %q went away since it was checked", c.cfg.OpenStack.Image)
	case strings.Contains(msg, "Flavor") && strings.Contains(msg, "could not be found"):
		gone = classify(ErrFlavorNotFound, nil, "flavor %q went away since it was checked", c.cfg.OpenStack.Flavor)
	default:
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ready, c.prepareErr = nil, gone
	c.log.Warn("runner resources went away; creates wait for the next check", "error", gone)
}

// waitActive polls the server until ACTIVE, and fails when it goes to
// ERROR or is still not ACTIVE after the create timeout.
func (c *Cloud) waitActive(ctx context.Context, id string, log *slog.Logger) error {
	timeout := time.After(c.cfg.CreateTimeout)
	last := "unknown"
	for {
		srv, err := c.api.Server(ctx, id)
		switch {
		case err == nil:
			last = srv.Status
			switch srv.Status {
			case "ACTIVE":
				return nil
			case "ERROR":
				return fmt.Errorf("Nova put it in ERROR: %s", faultMessage(srv.Fault))
			}
		case errors.Is(err, errNotFound):
			return errors.New("it was deleted while it was being created")
		default:
			// A failed poll is not a failed server; the timeout decides.
			log.Debug("cannot get server while waiting for it", "error", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting for it to be ACTIVE (it is %s): %w", last, ctx.Err())
		case <-timeout:
			return fmt.Errorf("it is still %s after %v, not ACTIVE", last, c.cfg.CreateTimeout)
		case <-time.After(pollInterval):
		}
	}
}

func faultMessage(f servers.Fault) string {
	if f.Message == "" {
		return "no fault reported"
	}
	return fmt.Sprintf("%s (%d)", f.Message, f.Code)
}

// Delete deletes the runner's server(s) of that name, waits until Nova
// confirms they are gone, and deletes any port Nova left of them. A runner
// already gone is not an error. Nova does not keep names unique: a server
// of the name whose metadata names another owner is left alone.
func (c *Cloud) Delete(ctx context.Context, name string) error {
	if err := c.connected(ctx); err != nil {
		return fmt.Errorf("cannot delete runner server %q: %w", name, err)
	}
	list, err := c.api.Servers(ctx, "^"+regexp.QuoteMeta(name)+"$")
	if err != nil {
		return fmt.Errorf("cannot delete runner server %q: %w", name, err)
	}
	var errs []error
	for _, srv := range list {
		if srv.Name != name {
			continue
		}
		owner := ownerOf(srv.Metadata)
		python := c.cfg.Identity.FromPythonCharm(name, owner)
		if !c.cfg.Identity.OwnsInstance(name, owner) && !python {
			c.log.Warn("not deleting a server that is not this unit's", "server", name, "server-id", srv.ID,
				"owner-model", owner.Model, "owner-unit", owner.Unit)
			continue
		}
		if err := c.deleteServer(ctx, srv); err != nil {
			errs = append(errs, fmt.Errorf("cannot delete runner server %q (%s): %w", name, srv.ID, err))
		} else if python && srv.KeyName == name {
			// The Python charm made a keypair per server, named as it.
			if err := c.api.DeleteKeypair(ctx, name); err != nil && !errors.Is(err, errNotFound) {
				c.log.Warn("cannot delete the keypair the Python charm made for its server", "server", name, "error", err)
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Cloud) deleteServer(ctx context.Context, srv servers.Server) error {
	start := time.Now()
	if err := c.api.DeleteServer(ctx, srv.ID); err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	timeout := time.After(c.cfg.DeleteTimeout)
	for {
		_, err := c.api.Server(ctx, srv.ID)
		if errors.Is(err, errNotFound) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up waiting for Nova to delete it: %w", ctx.Err())
		case <-timeout:
			return fmt.Errorf("Nova has not deleted it after %v", c.cfg.DeleteTimeout)
		case <-time.After(pollInterval):
		}
	}
	// Nova deletes the port it made for the server; one it could not
	// (Neutron down at the time) would hold an address for ever. The
	// server is gone either way, so a failed sweep is a warning: the
	// runner was removed, and failing here would only miscount it.
	leftovers, err := c.api.PortsOf(ctx, srv.ID)
	if err != nil {
		c.log.Warn("cannot list the deleted server's ports; a port may be left behind", "server", srv.Name, "server-id", srv.ID, "error", err)
	}
	for _, port := range leftovers {
		if err := c.api.DeletePort(ctx, port.ID); err != nil && !errors.Is(err, errNotFound) {
			c.log.Warn("cannot delete a port Nova left behind", "server", srv.Name, "port-id", port.ID, "error", err)
			continue
		}
		c.log.Warn("deleted a port Nova left behind", "server", srv.Name, "port-id", port.ID)
	}
	c.log.Info("runner server deleted", "server", srv.Name, "server-id", srv.ID, "status", srv.Status,
		"duration", time.Since(start).Round(time.Millisecond))
	return nil
}

// Teardown deletes the runners' security group, for a unit that goes
// away, and the image builders and runner images the unit made (image.go):
// what the unit makes in the project besides its servers (no keypair: the
// manager never logs in to a runner; no port but those Nova makes and
// deletes with a server). It refuses while a server of the
// unit is left. A group already gone is not an error, and a group of the
// name that is not the unit's is left alone.
func (c *Cloud) Teardown(ctx context.Context) error {
	// A create a drain cut short may yet make a server: its watch deletes it.
	watched := make(chan struct{})
	go func() { c.late.Wait(); close(watched) }()
	select {
	case <-watched:
	case <-ctx.Done():
		return fmt.Errorf("cannot tear down: %w", ctx.Err())
	}
	servers, err := c.Instances(ctx)
	if err != nil {
		return fmt.Errorf("cannot tear down: %w", err)
	}
	if len(servers) > 0 {
		return fmt.Errorf("cannot tear down: %d runner servers of the unit are left", len(servers))
	}
	c.prepareMu.Lock()
	defer c.prepareMu.Unlock()
	// Builders first: their ports hold the security group.
	if err := c.teardownImages(ctx); err != nil {
		return fmt.Errorf("cannot tear down: %w", err)
	}
	found, err := c.api.SecurityGroupsNamed(ctx, c.cfg.SecurityGroup)
	if err != nil {
		return fmt.Errorf("cannot look up security group %q: %w", c.cfg.SecurityGroup, err)
	}
	for _, g := range found {
		if !c.ownsSecurityGroup(g) {
			c.log.Warn("not deleting a security group that is not this unit's", "security-group", g.Name, "id", g.ID, "description", g.Description)
			continue
		}
		if err := c.api.DeleteSecurityGroup(ctx, g.ID); err != nil && !errors.Is(err, errNotFound) {
			return fmt.Errorf("cannot delete security group %q: %w", c.cfg.SecurityGroup, err)
		}
		c.log.Info("security group deleted", "security-group", g.Name, "id", g.ID)
	}
	c.mu.Lock()
	c.ready, c.lastImage = nil, ""
	c.mu.Unlock()
	return nil
}
