package vmplayer

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	lxd "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"
	"github.com/gophercloud/gophercloud/v2"
	gcopenstack "github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

const (
	// LXDImageProperty is the Glance image property naming the LXD image (alias or
	// fingerprint) that plays the servers booted from the Glance image.
	LXDImageProperty = "github-runner-test.lxd-image"
	// BaseImageName is the public Glance image BaseImage makes: it plays as the Debian image.
	BaseImageName = "ubuntu-base"
	// ContainerPrefix starts the name of every container and LXD image alias of this package.
	ContainerPrefix = "vmplayer-"
	// snapshotInfix follows ContainerPrefix in the aliases of published snapshots.
	snapshotInfix = "snap-"
)

// DefaultInterval is how often a player asks Nova (and LXD) what changed: the bed's API
// shares two cores with everything else, so not often.
const DefaultInterval = 2 * time.Second

// requestTimeout bounds every OpenStack call of a poll.
const requestTimeout = 30 * time.Second

// Options say what a player plays.
type Options struct {
	// Prefix: the player plays the servers whose names start with it (required; a test's
	// unique runner prefix).
	Prefix string
	// Interval between polls; DefaultInterval when zero.
	Interval time.Duration
}

// Player plays the servers of Options.Prefix until the test ends.
type Player struct {
	t       testing.TB
	opts    Options
	lxd     lxd.InstanceServer
	compute *gophercloud.ServiceClient // admin, microversion >= 2.3
	image   *gophercloud.ServiceClient // admin

	cancel context.CancelFunc
	done   chan struct{}

	mu        sync.Mutex
	servers   map[string]*played // by server ID, every server decided on
	snapshots map[string]string  // Glance image ID → LXD alias
	published []string           // fingerprints of published snapshots
	changed   chan struct{}      // closed and replaced on every change
}

// played is what the player knows of one server.
type played struct {
	id, name  string
	container string // "" when not played (its image has no LXDImageProperty)
	lxdImage  string
	stopped   bool // the player stopped the Nova server after the guest powered off
	gone      bool // the server was deleted, and so was its container
}

// Start starts a player for the test: it polls Nova every Options.Interval until the test
// ends, then deletes what it made. It fails the test (CI) or skips it when LXD or the
// OpenStack bed is missing.
func Start(t testing.TB, opts Options) *Player {
	t.Helper()
	if opts.Prefix == "" {
		t.Fatal("internal error: vmplayer.Start needs a prefix")
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	c := lxdtest.Connect(t)
	compute, image := adminClients(t)
	ctx, cancel := context.WithCancel(context.Background())
	p := &Player{
		t: t, opts: opts, lxd: c, compute: compute, image: image,
		cancel: cancel, done: make(chan struct{}),
		servers: map[string]*played{}, snapshots: map[string]string{}, changed: make(chan struct{}),
	}
	p.deleteOrphans(ctx)
	go p.loop(ctx)
	t.Cleanup(p.stop)
	return p
}

// adminClients are the bed's compute (at a microversion that shows user_data) and image
// clients, as the cloud admin.
func adminClients(t testing.TB) (compute, image *gophercloud.ServiceClient) {
	t.Helper()
	cloudsYAML, cloudName := openstacktest.AdminCloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	compute, err := gcopenstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatalf("cannot find the compute endpoint: %v", err)
	}
	compute.Microversion = openstacktest.ComputeMicroversion
	image, err = gcopenstack.NewImageV2(provider, eo)
	if err != nil {
		t.Fatalf("cannot find the image endpoint: %v", err)
	}
	return compute, image
}

// LXD is the player's LXD client.
func (p *Player) LXD() lxd.InstanceServer { return p.lxd }

// Container names the container that plays the server, if the player plays it (it may have
// been deleted since, with its server).
func (p *Player) Container(serverID string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.servers[serverID]
	if !ok || s.container == "" {
		return "", false
	}
	return s.container, true
}

// Played names the servers (by ID) the player has played so far, sorted.
func (p *Player) Played() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for id, s := range p.servers {
		if s.container != "" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// waitUntil waits, for at most timeout, until ok (called with p.mu held) holds.
func (p *Player) waitUntil(timeout time.Duration, ok func() bool) bool {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		if ok() {
			p.mu.Unlock()
			return true
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			return false
		case <-p.done:
			return false
		}
	}
}

// notify wakes the waiters; p.mu is held.
func (p *Player) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// WaitPlayed waits until the player has launched the server's container, and returns its
// name. It fails the test when the server's image is not played or after timeout.
func (p *Player) WaitPlayed(t testing.TB, serverID string, timeout time.Duration) string {
	t.Helper()
	var s *played
	if !p.waitUntil(timeout, func() bool { s = p.servers[serverID]; return s != nil }) {
		t.Fatalf("server %s not played within %v", serverID, timeout)
	}
	if s.container == "" {
		t.Fatalf("server %s is not played: its image has no %s property", serverID, LXDImageProperty)
	}
	return s.container
}

// WaitStopped waits until the server's guest has powered off and the player has stopped the
// Nova server.
func (p *Player) WaitStopped(t testing.TB, serverID string, timeout time.Duration) {
	t.Helper()
	if !p.waitUntil(timeout, func() bool { s := p.servers[serverID]; return s != nil && (s.stopped || s.gone) }) {
		t.Fatalf("the guest of server %s did not power off within %v%s", serverID, timeout, p.logs(serverID))
	}
}

// WaitGone waits until the server has been deleted and the player has deleted its container.
func (p *Player) WaitGone(t testing.TB, serverID string, timeout time.Duration) {
	t.Helper()
	if !p.waitUntil(timeout, func() bool { s := p.servers[serverID]; return s != nil && s.gone }) {
		t.Fatalf("server %s and its container not gone within %v", serverID, timeout)
	}
}

// Snapshot is the LXD alias the player published for a Nova snapshot (a Glance image ID).
func (p *Player) Snapshot(imageID string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	alias, ok := p.snapshots[imageID]
	return alias, ok
}

// WaitSnapshot waits until the player has published the Glance image's snapshot and set
// LXDImageProperty on it, and returns the LXD alias.
func (p *Player) WaitSnapshot(t testing.TB, imageID string, timeout time.Duration) string {
	t.Helper()
	var alias string
	if !p.waitUntil(timeout, func() bool { alias = p.snapshots[imageID]; return alias != "" }) {
		t.Fatalf("snapshot %s not published within %v", imageID, timeout)
	}
	return alias
}

// container is the name of the server's container, failing the test if it has none.
func (p *Player) container(t testing.TB, serverID string) string {
	t.Helper()
	name, ok := p.Container(serverID)
	if !ok {
		t.Fatalf("server %s is not played", serverID)
	}
	return name
}

// Exec runs cmd in the (running) container of the server.
func (p *Player) Exec(t testing.TB, serverID string, cmd ...string) lxdtest.ExecResult {
	t.Helper()
	return lxdtest.Exec(t, p.lxd, p.container(t, serverID), cmd...)
}

// ReadFile reads a file of the server's container, running or stopped.
func (p *Player) ReadFile(t testing.TB, serverID, path string) []byte {
	t.Helper()
	return lxdtest.PullFile(t, p.lxd, p.container(t, serverID), path)
}

// HasFile says whether path exists in the server's container, running or stopped (a
// directory or a file; a symbolic link counts as itself).
func (p *Player) HasFile(t testing.TB, serverID, path string) bool {
	t.Helper()
	r, _, err := p.lxd.GetInstanceFile(p.container(t, serverID), path)
	if err == nil {
		if r != nil {
			r.Close()
		}
		return true
	}
	if api.StatusErrorCheck(err, http.StatusNotFound) || strings.Contains(err.Error(), "not found") {
		return false
	}
	t.Fatalf("cannot look for %s in the container of %s: %v", path, serverID, err)
	return false
}

// loop polls until ctx ends.
func (p *Player) loop(ctx context.Context) {
	defer close(p.done)
	for {
		if err := p.poll(ctx); err != nil && ctx.Err() == nil {
			p.t.Logf("vmplayer: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.opts.Interval):
		}
	}
}

// poll is one look at Nova and LXD, and what follows from it.
func (p *Player) poll(ctx context.Context) error {
	list, err := p.listServers(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var errs []error
	for i := range list {
		srv := &list[i]
		seen[srv.ID] = true
		p.mu.Lock()
		s := p.servers[srv.ID]
		p.mu.Unlock()
		switch {
		case s == nil && srv.Status == "ACTIVE":
			if err := p.decide(ctx, srv); err != nil {
				errs = append(errs, err)
			}
		case s == nil, s.container == "", s.gone:
		case srv.Status == "DELETED" || srv.Status == "SOFT_DELETED":
			seen[srv.ID] = false
		default:
			if err := p.follow(ctx, s, srv); err != nil {
				errs = append(errs, err)
			}
		}
	}
	p.mu.Lock()
	var deleted []*played
	for id, s := range p.servers {
		if !seen[id] && s.container != "" && !s.gone {
			deleted = append(deleted, s)
		}
	}
	p.mu.Unlock()
	for _, s := range deleted {
		// Nova snapshots a server, then it may be deleted at once (the image build's
		// builder): what the snapshot needs goes before the container.
		// A publish that failed (a Glance timeout on a loaded bed) keeps the container for
		// the next poll's try: deleted, the snapshot's servers would never be played.
		if err := p.publishSnapshots(ctx, s); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := lxdtest.DeleteInstance(p.lxd, s.container); err != nil {
			errs = append(errs, err)
			continue
		}
		p.mu.Lock()
		s.gone = true
		p.notify()
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}

// listServers lists the servers of the prefix in every project, with their user-data.
func (p *Player) listServers(ctx context.Context) ([]servers.Server, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// Nova's name filter is a regular expression.
	pages, err := servers.List(p.compute, servers.ListOpts{AllTenants: true, Name: "^" + regexp.QuoteMeta(p.opts.Prefix)}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list servers: %w", err)
	}
	list, err := servers.ExtractServers(pages)
	if err != nil {
		return nil, fmt.Errorf("cannot list servers: %w", err)
	}
	out := list[:0]
	for _, s := range list {
		if strings.HasPrefix(s.Name, p.opts.Prefix) {
			out = append(out, s)
		}
	}
	return out, nil
}

// decide plays a server just seen ACTIVE if its image says how, once.
func (p *Player) decide(ctx context.Context, srv *servers.Server) error {
	s := &played{id: srv.ID, name: srv.Name}
	imageID, _ := srv.Image["id"].(string)
	if imageID != "" {
		lxdImage, err := p.lxdImageOf(ctx, imageID)
		if errors.Is(err, errPending) {
			return nil // decided at a later poll
		}
		if err != nil {
			return err // decided at the next poll
		}
		s.lxdImage = lxdImage
	}
	if s.lxdImage != "" {
		userData := ""
		if srv.Userdata != nil {
			decoded, err := base64.StdEncoding.DecodeString(*srv.Userdata)
			if err != nil {
				return fmt.Errorf("cannot play server %s: its user_data is not base64: %w", srv.Name, err)
			}
			userData = string(decoded)
		}
		s.container = ContainerPrefix + srv.ID
		if err := p.launch(s, userData); err != nil {
			// Never half-played: the next poll tries again from scratch.
			lxdtest.DeleteInstance(p.lxd, s.container)
			return err
		}
	}
	p.mu.Lock()
	p.servers[srv.ID] = s
	p.notify()
	p.mu.Unlock()
	return nil
}

// lxdImageOf reads LXDImageProperty of a Glance image ("" when it has none).
func (p *Player) lxdImageOf(ctx context.Context, imageID string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	img, err := images.Get(ctx, p.image, imageID).Extract()
	if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot get image %s: %w", imageID, err)
	}
	v, _ := img.Properties[LXDImageProperty].(string)
	// Nova's snapshot inherits the property from its server's image: until the player has
	// published the snapshot and set its own alias, a server of it would play the old image.
	if instance, _ := img.Properties["instance_uuid"].(string); instance != "" && v != "" && v != snapshotAlias(imageID) {
		return "", fmt.Errorf("%w: image %s is a snapshot of server %s not yet published", errPending, imageID, instance)
	}
	return v, nil
}

// errPending is a server whose image is a snapshot the player has yet to publish.
var errPending = errors.New("pending")

// snapshotAlias is the LXD alias of the snapshot published for a Glance image.
func snapshotAlias(imageID string) string { return ContainerPrefix + snapshotInfix + imageID }

// launch creates and starts the container of a server.
func (p *Player) launch(s *played, userData string) error {
	source := api.InstanceSource{Type: "image", Alias: s.lxdImage}
	if _, _, err := p.lxd.GetImageAlias(s.lxdImage); err != nil {
		source = api.InstanceSource{Type: "image", Fingerprint: s.lxdImage}
	}
	config := map[string]string{
		"user.user-data": userData,
		// What the config drive's meta_data.json (uuid, name) gives cloud-init.
		"user.meta-data":   fmt.Sprintf("instance-id: %s\nlocal-hostname: %s\n", s.id, s.name),
		"security.nesting": "true",
		"boot.autostart":   "false",
		ownerKey:           ownerValue(),
	}
	op, err := p.lxd.CreateInstance(api.InstancesPost{
		Name: s.container, Type: api.InstanceTypeContainer, Source: source,
		InstancePut: api.InstancePut{Profiles: []string{"default"}, Config: config},
	})
	if err == nil {
		err = lxdtest.WaitOp(op)
	}
	if err != nil {
		return fmt.Errorf("cannot create the container of server %s from %q: %w", s.name, s.lxdImage, err)
	}
	op, err = p.lxd.UpdateInstanceState(s.container, api.InstanceStatePut{Action: "start", Timeout: -1}, "")
	if err == nil {
		err = lxdtest.WaitOp(op)
	}
	if err != nil {
		return fmt.Errorf("cannot start the container of server %s: %w", s.name, err)
	}
	return nil
}

// follow carries a played guest's state over to Nova: a guest that powered off stops its
// server; a snapshot of a stopped one is published.
func (p *Player) follow(ctx context.Context, s *played, srv *servers.Server) error {
	state, _, err := p.lxd.GetInstanceState(s.container)
	if api.StatusErrorCheck(err, http.StatusNotFound) {
		return nil // deleted by someone: Nova's server is what matters
	}
	if err != nil {
		return fmt.Errorf("cannot get the state of %s: %w", s.container, err)
	}
	if state.StatusCode != api.Stopped {
		return nil
	}
	if !s.stopped {
		if srv.Status == "ACTIVE" {
			sctx, cancel := context.WithTimeout(ctx, requestTimeout)
			err := servers.Stop(sctx, p.compute, s.id).ExtractErr()
			cancel()
			// 409: a task runs on it; Nova answers a stop racing a delete with a 500 naming
			// the deleting task state, or 404 once deleted (the manager saw the runner end
			// first). The next poll sees what came of it.
			if err != nil && (gophercloud.ResponseCodeIs(err, http.StatusConflict) || gophercloud.ResponseCodeIs(err, http.StatusNotFound) ||
				strings.Contains(err.Error(), "TaskStateError")) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("cannot stop server %s after its guest powered off: %w", s.name, err)
			}
		}
		p.mu.Lock()
		s.stopped = true
		p.notify()
		p.mu.Unlock()
	}
	return p.publishSnapshots(ctx, s)
}

// publishSnapshots publishes the stopped container of s for each Glance image Nova made of
// its server that has no LXDImageProperty yet.
func (p *Player) publishSnapshots(ctx context.Context, s *played) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// Glance filters on any image property; gophercloud's ListOpts has no field for it.
	var page struct {
		Images []struct {
			ID         string `json:"id"`
			InstanceID string `json:"instance_uuid"`
			LXDImage   string `json:"github-runner-test.lxd-image"`
		} `json:"images"`
	}
	u := p.image.ServiceURL("images") + "?instance_uuid=" + url.QueryEscape(s.id)
	if _, err := p.image.Get(ctx, u, &page, nil); err != nil {
		return fmt.Errorf("cannot list the snapshots of %s: %w", s.name, err)
	}
	for _, img := range page.Images {
		// The property an unpublished snapshot has is its server's image's, inherited.
		if img.InstanceID != s.id || img.LXDImage == snapshotAlias(img.ID) {
			continue
		}
		p.mu.Lock()
		_, done := p.snapshots[img.ID]
		p.mu.Unlock()
		if done {
			continue
		}
		if err := p.publish(ctx, s, img.ID); err != nil {
			return err
		}
	}
	return nil
}

// publish publishes the container of s as the LXD image of Glance image imageID.
func (p *Player) publish(ctx context.Context, s *played, imageID string) error {
	alias := snapshotAlias(imageID)
	// A publish whose Glance step failed (a timeout on a loaded bed) left the LXD image and
	// its alias: only the property is still to set.
	if _, _, err := p.lxd.GetImageAlias(alias); err == nil {
		if err := setProperty(ctx, p.image, imageID, alias); err != nil {
			return err
		}
		p.mu.Lock()
		p.snapshots[imageID] = alias
		p.notify()
		p.mu.Unlock()
		return nil
	}
	// A real cloud gives each port its own address; LXD's DHCP goes by the client ID that
	// systemd-networkd derives from the machine ID: every guest of the snapshot needs its own.
	if err := p.lxd.CreateInstanceFile(s.container, "/etc/machine-id", lxd.InstanceFileArgs{
		Content: strings.NewReader(""), Mode: 0o444, Type: "file", WriteMode: "overwrite",
	}); err != nil {
		return fmt.Errorf("cannot clear the machine ID of %s: %w", s.container, err)
	}
	op, err := p.lxd.CreateImage(api.ImagesPost{
		Source: &api.ImagesPostSource{Type: "instance", Name: s.container},
		ImagePut: api.ImagePut{Properties: map[string]string{
			"description": "vmplayer snapshot " + imageID + " of server " + s.name,
			ownerProperty: ownerValue(),
		}},
	}, nil)
	if err != nil {
		return fmt.Errorf("cannot publish %s: %w", s.container, err)
	}
	if err := op.Wait(); err != nil {
		return fmt.Errorf("cannot publish %s: %w", s.container, err)
	}
	fingerprint, _ := op.Get().Metadata["fingerprint"].(string)
	if fingerprint == "" {
		return fmt.Errorf("cannot publish %s: no fingerprint in %v", s.container, op.Get().Metadata)
	}
	p.mu.Lock()
	p.published = append(p.published, fingerprint)
	p.mu.Unlock()
	if err := p.lxd.CreateImageAlias(api.ImageAliasesPost{ImageAliasesEntry: api.ImageAliasesEntry{
		Name: alias, Type: "container", Target: fingerprint,
	}}); err != nil {
		return fmt.Errorf("cannot alias the snapshot of %s: %w", s.container, err)
	}
	if err := setProperty(ctx, p.image, imageID, alias); err != nil {
		return err
	}
	p.t.Logf("vmplayer: published %s (server %s) as %s for Glance image %s", s.container, s.name, alias, imageID)
	p.mu.Lock()
	p.snapshots[imageID] = alias
	p.notify()
	p.mu.Unlock()
	return nil
}

// setProperty sets LXDImageProperty on a Glance image.
func setProperty(ctx context.Context, image *gophercloud.ServiceClient, imageID, value string) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	img, err := images.Get(ctx, image, imageID).Extract()
	if err != nil {
		return fmt.Errorf("cannot get image %s: %w", imageID, err)
	}
	if v, _ := img.Properties[LXDImageProperty].(string); v == value {
		return nil
	}
	op := images.AddOp
	if _, ok := img.Properties[LXDImageProperty]; ok {
		op = images.ReplaceOp
	}
	_, err = images.Update(ctx, image, imageID, images.UpdateOpts{
		images.UpdateImageProperty{Op: op, Name: LXDImageProperty, Value: value},
	}).Extract()
	if err != nil {
		return fmt.Errorf("cannot set %s on image %s: %w", LXDImageProperty, imageID, err)
	}
	return nil
}

// The process that made a container or a published image: only a dead one's are orphans.
// Players of other test binaries run at the same time (go test runs packages in parallel),
// and a server Nova no longer has may be one whose container its live player still
// publishes (a builder deleted right after its snapshot).
const (
	ownerKey      = "user.vmplayer.owner"
	ownerProperty = "vmplayer.owner"
)

// ownerValue is this process: its PID and start time, so a reused PID is no owner.
func ownerValue() string { return strconv.Itoa(os.Getpid()) + "/" + processStart(os.Getpid()) }

// processStart is a process's start time in clock ticks since boot (/proc/PID/stat field 22),
// or "" when there is no such process.
func processStart(pid int) string {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command (field 2) may hold spaces: the fields after it follow its last ')'.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) < 20 {
		return ""
	}
	return fields[19]
}

// ownerAlive tells whether the process an owner value names still runs; a value that is
// not one (made before owners were recorded) counts as dead.
func ownerAlive(owner string) bool {
	pid, start, ok := strings.Cut(owner, "/")
	n, err := strconv.Atoi(pid)
	if !ok || err != nil || n <= 0 || start == "" {
		return false
	}
	if err := syscall.Kill(n, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return processStart(n) == start
}

// deleteOrphans deletes the containers and snapshot images of servers and Glance images that
// no longer exist, made by a player process that is gone: left by a run that was killed
// before its cleanup.
func (p *Player) deleteOrphans(ctx context.Context) {
	names, err := p.lxd.GetInstanceNames(api.InstanceTypeAny)
	if err != nil {
		p.t.Logf("vmplayer: cannot list instances: %v", err)
		return
	}
	for _, name := range names {
		id, ok := strings.CutPrefix(name, ContainerPrefix)
		if !ok || !uuidPattern.MatchString(id) {
			continue
		}
		if inst, _, err := p.lxd.GetInstance(name); err != nil || ownerAlive(inst.Config[ownerKey]) {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err := servers.Get(gctx, p.compute, id).Extract()
		cancel()
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			if err := lxdtest.DeleteInstance(p.lxd, name); err != nil {
				p.t.Logf("vmplayer: cannot delete orphan %s: %v", name, err)
			}
		}
	}
	aliases, err := p.lxd.GetImageAliases()
	if err != nil {
		return
	}
	for _, a := range aliases {
		id, ok := strings.CutPrefix(a.Name, ContainerPrefix+snapshotInfix)
		if !ok {
			continue
		}
		if img, _, err := p.lxd.GetImage(a.Target); err != nil || ownerAlive(img.Properties[ownerProperty]) {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, requestTimeout)
		_, err := images.Get(gctx, p.image, id).Extract()
		cancel()
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			if op, err := p.lxd.DeleteImage(a.Target); err == nil {
				lxdtest.WaitOp(op)
			}
		}
	}
}

var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// stop ends the polling and deletes the containers and images the player made.
func (p *Player) stop() {
	p.cancel()
	<-p.done
	p.mu.Lock()
	var list []*played
	for _, s := range p.servers {
		if s.container != "" && !s.gone {
			list = append(list, s)
		}
	}
	published := p.published
	p.mu.Unlock()
	if p.t.Failed() {
		for _, s := range list {
			p.t.Logf("vmplayer: server %s (%s), container %s:%s", s.name, s.id, s.container, p.logs(s.id))
		}
	}
	for _, s := range list {
		if err := lxdtest.DeleteInstance(p.lxd, s.container); err != nil {
			p.t.Errorf("vmplayer: cannot clean up: %v", err)
		}
	}
	for _, fp := range published {
		op, err := p.lxd.DeleteImage(fp)
		if err == nil {
			err = lxdtest.WaitOp(op)
		}
		if err != nil && !api.StatusErrorCheck(err, http.StatusNotFound) {
			p.t.Errorf("vmplayer: cannot delete published image %s: %v", fp, err)
		}
	}
}

// guestLogs are the logs a played guest's story is in.
var guestLogs = []string{"/var/log/cloud-init-output.log", "/var/log/github-runner.log", "/var/log/user-data.log", "/var/log/boot.log"}

// logs are the tails of the guest's logs of a server, for a failure message.
func (p *Player) logs(serverID string) string {
	name, ok := p.Container(serverID)
	if !ok {
		return ""
	}
	var b strings.Builder
	for _, path := range guestLogs {
		r, _, err := p.lxd.GetInstanceFile(name, path)
		if err != nil {
			continue
		}
		var data strings.Builder
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			data.Write(buf[:n])
			if err != nil {
				break
			}
		}
		r.Close()
		fmt.Fprintf(&b, "\n--- %s:\n%s", path, lastLines(data.String(), 40))
	}
	return b.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
