package openstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// The whole life of runners: three created at once are ACTIVE servers of
// the right flavor, image, network, security group and metadata; the VM
// player boots each server's user-data under real cloud-init in an LXD
// container of the Debian image, and the runners it starts come online at
// the fake GitHub; one runs a job, its guest powers off and its server
// stops; a fresh Cloud sees the same runners from Nova alone; deleting
// leaves no server and no port.
func TestRunnersLifecycle(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	srv, bridge := playedGitHub(t)
	cfg := testConfig(b)
	// The runners reach the fake on the bridge, not through the proxy.
	cfg.Runner.NoProxy += "," + bridge
	c := newCloud(t, b, cfg)
	player := startPlayer(t, cfg, 0)
	mustPrepare(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	type created struct {
		name string
		id   int64
		jit  string
	}
	runners := make([]created, 3)
	for i := range runners {
		name := newRunnerName(c)
		id, jit := register(t, srv, testRepo, name)
		runners[i] = created{name, id, jit}
	}
	start := time.Now()
	scope := runner.NewScope(srv.URL(), testRepo)
	errs := make([]error, len(runners))
	var wg sync.WaitGroup
	for i, r := range runners {
		wg.Go(func() {
			errs[i] = c.Create(ctx, cloud.CreateRequest{Name: r.name, RunnerID: r.id, Scope: scope, JITConfig: r.jit})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("3 runner servers ACTIVE in %v", time.Since(start).Round(time.Millisecond))

	serverIDs := map[string]string{}
	for _, r := range runners {
		s := serverNamed(t, b, r.name)
		if s == nil {
			t.Fatalf("no server %s", r.name)
		}
		serverIDs[r.name] = s.ID
		if s.Status != "ACTIVE" {
			t.Errorf("%s: status %s, want ACTIVE", r.name, s.Status)
		}
		if got := s.Flavor["original_name"]; got != openstacktest.FlavorName {
			t.Errorf("%s: flavor %v, want %s", r.name, s.Flavor, openstacktest.FlavorName)
		}
		if got, _ := s.Image["id"].(string); got != b.fixtures.ImageID {
			t.Errorf("%s: image %v, want %s", r.name, s.Image, b.fixtures.ImageID)
		}
		if _, ok := s.Addresses[openstacktest.NetworkName]; !ok || len(s.Addresses) != 1 {
			t.Errorf("%s: addresses %v, want one on %s", r.name, s.Addresses, openstacktest.NetworkName)
		}
		var groupNames []string
		for _, g := range s.SecurityGroups {
			groupNames = append(groupNames, fmt.Sprint(g["name"]))
		}
		if !slices.Equal(groupNames, []string{c.cfg.SecurityGroup}) {
			t.Errorf("%s: security groups %v, want [%s]", r.name, groupNames, c.cfg.SecurityGroup)
		}
		wantMeta := map[string]string{runner.MetaUnit: c.cfg.Identity.UnitName(), runner.MetaRunnerID: strconv.FormatInt(r.id, 10),
			runner.MetaModel: c.cfg.Identity.Model, runner.MetaScope: scope.String()}
		for k, v := range wantMeta {
			if s.Metadata[k] != v {
				t.Errorf("%s: metadata %s = %q, want %q", r.name, k, s.Metadata[k], v)
			}
		}
		created, err := time.Parse(time.RFC3339, s.Metadata[runner.MetaCreatedAt])
		if err != nil || created.Before(start.Add(-time.Second)) || created.After(time.Now()) {
			t.Errorf("%s: metadata %s = %q, want the time of the create", r.name, runner.MetaCreatedAt, s.Metadata[runner.MetaCreatedAt])
		}
		for k, v := range s.Metadata {
			if strings.Contains(v, r.jit) || len(v) > 64 {
				t.Errorf("%s: metadata %s holds something like the JIT config", r.name, k)
			}
		}
		if !s.ConfigDrive {
			t.Errorf("%s: no config drive", r.name)
		}
		if s.KeyName != "" {
			t.Errorf("%s: keypair %q, want none", r.name, s.KeyName)
		}
	}

	// The player logs the guests' cloud-init and runner logs if this fails.
	for _, r := range runners {
		player.WaitPlayed(t, serverIDs[r.name], 2*time.Minute)
	}
	if err := srv.WaitRunnersOnline(ctx, testRepo, 3); err != nil {
		t.Fatal(err)
	}
	// What the played VM's cloud-init ran is what a real one would run.
	script := string(player.ReadFile(t, serverIDs[runners[0].name], "/var/lib/cloud/instance/user-data.txt"))
	for _, want := range []string{
		"http_proxy='http://proxy.example:3128'", "NO_PROXY='localhost,127.0.0.1," + bridge + "'",
		`"registry-mirrors": [%s]`, `'"https://mirror.example:5000"'`,
		boot.StartScriptPath + " 'ubuntu' '/home/ubuntu/actions-runner'",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("user-data lacks %q", want)
		}
	}

	instances, err := c.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(instances) != 3 {
		t.Fatalf("Instances = %+v, want the 3 runners", instances)
	}
	for _, inst := range instances {
		i := slices.IndexFunc(runners, func(r created) bool { return r.name == inst.Name })
		if i < 0 || inst.RunnerID != runners[i].id || inst.Status != cloud.Running {
			t.Errorf("instance %+v, want a running runner of %+v", inst, runners)
		}
		// Whose it is and where it is registered, read back from Nova.
		if inst.Owner != c.cfg.Identity.Owner() || inst.Scope != scope {
			t.Errorf("instance %s: owner %+v, scope %+v; want %+v, %+v", inst.Name, inst.Owner, inst.Scope, c.cfg.Identity.Owner(), scope)
		}
	}

	// A job ends the ephemeral runner; its server is powered off.
	job, err := srv.AssignJob(runners[0].id, fakegithub.JobSpec{Command: "echo hello"})
	if err != nil {
		t.Fatal(err)
	}
	if job, err = srv.WaitJob(ctx, job.ID); err != nil || job.Output != "hello\n" {
		t.Fatalf("job %+v, %v", job, err)
	}
	// The guest powered off; the player stopped its server, as Nova would.
	player.WaitStopped(t, serverIDs[runners[0].name], 2*time.Minute)
	waitStatus(t, c, runners[0].name, string(cloud.Stopped), time.Minute)

	// A fresh manager rebuilds the same view from Nova's metadata alone:
	// the creation time is the metadata's, not Nova's own.
	past := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	meta := servers.MetadataOpts{runner.MetaCreatedAt: past.Format(time.RFC3339)}
	if _, err := servers.UpdateMetadata(ctx, b.compute, serverIDs[runners[1].name], meta).Extract(); err != nil {
		t.Fatal(err)
	}
	for i := range instances {
		if instances[i].Name == runners[1].name {
			instances[i].CreatedAt = past
		}
	}
	fresh, err := New(c.cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	again, err := fresh.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(again, func(a, b cloud.Instance) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(instances, func(a, b cloud.Instance) int { return strings.Compare(a.Name, b.Name) })
	for i := range again {
		want := instances[i]
		if want.Name == runners[0].name {
			want.Status = cloud.Stopped
		}
		if again[i] != want {
			t.Errorf("fresh Instances: %+v, want %+v", again[i], want)
		}
	}

	// Deleting waits for Nova; nothing of the runners is left.
	for _, r := range runners {
		if err := c.Delete(ctx, r.name); err != nil {
			t.Fatal(err)
		}
		if s := serverNamed(t, b, r.name); s != nil {
			t.Errorf("server %s is still there (%s) after Delete", r.name, s.Status)
		}
		if p := portsOf(t, b, serverIDs[r.name]); len(p) > 0 {
			t.Errorf("server %s left %d ports", r.name, len(p))
		}
	}
	if err := c.Delete(ctx, runners[0].name); err != nil {
		t.Errorf("deleting a runner already gone: %v", err)
	}
	if left, err := c.Instances(ctx); err != nil || len(left) > 0 {
		t.Errorf("Instances after delete = %+v, %v", left, err)
	}
}

// Creates that cannot succeed fail and leave nothing: a flavor no host
// takes (ERROR), a server still building at the create timeout.
func TestCreateFailuresLeaveNothing(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	srv := fakeGitHub(t)
	for _, tt := range []struct {
		name   string
		change func(*Config)
		want   string
	}{
		{"error", func(c *Config) { c.OpenStack.Flavor = openstacktest.UnschedulableFlavorName }, "ERROR: No valid host"},
		{"build-timeout", func(c *Config) { c.CreateTimeout = 200 * time.Millisecond }, "still BUILD after 200ms"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(b)
			tt.change(&cfg)
			c := newCloud(t, b, cfg)
			mustPrepare(t, c)
			name := newRunnerName(c)
			id, jit := register(t, srv, testRepo, name)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			err := c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: id, JITConfig: jit})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Create: %v, want an error with %q", err, tt.want)
			}
			if strings.Contains(err.Error(), jit) {
				t.Error("the error shows the JIT config")
			}
			if s := serverNamed(t, b, name); s != nil {
				t.Errorf("failed create left server %s (%s)", name, s.Status)
			}
		})
	}
}

// A create Nova did not answer (a drain cut it short, a timeout) may still make its server,
// after the create has returned and a list by its name has shown none: the cloud watches the
// name and deletes the server when it comes, and Teardown waits for that watch. (A stop's
// drain cut two such creates short, and their servers outlived the unit.)
func TestUnansweredCreateLeavesNothing(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	srv := fakeGitHub(t)
	c := newCloud(t, b, testConfig(b))
	mustPrepare(t, c)
	late := &lateAPI{openstackAPI: c.api, delay: 3 * time.Second, sent: make(chan error, 1)}
	c.api = late
	name := newRunnerName(c)
	id, jit := register(t, srv, testRepo, name)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: id, JITConfig: jit}); !errors.Is(err, errUnanswered) {
		t.Fatalf("Create: %v, want errUnanswered", err)
	}
	if err := <-late.sent; err != nil {
		t.Fatalf("the late create itself failed: %v", err)
	}
	waited := make(chan struct{})
	go func() { c.late.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		t.Fatal("the late server's watch did not end")
	}
	if s := serverNamed(t, b, name); s != nil {
		t.Errorf("an unanswered create left server %s (%s)", name, s.Status)
	}
}

// lateAPI answers every server create with no answer at once, as a drain cutting the request
// short would, and sends it to Nova a moment later, as a loaded Nova makes the server after
// its client has gone.
type lateAPI struct {
	openstackAPI
	delay time.Duration
	sent  chan error
}

func (a *lateAPI) CreateServer(ctx context.Context, opts servers.CreateOpts) (*servers.Server, error) {
	go func() {
		time.Sleep(a.delay)
		_, err := a.openstackAPI.CreateServer(context.Background(), opts)
		a.sent <- err
	}()
	return nil, fmt.Errorf("%w: %w", errUnanswered, context.Canceled)
}

// A missing image is Prepare's error, named; Create then fails at once,
// without asking Nova. A new upload of the image is a change.
func TestImageGoneAndReplaced(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	cfg := testConfig(b)
	cfg.OpenStack.Image = cfg.Identity.Prefix() + "-image"
	c := newCloud(t, b, cfg)
	counter := &countingAPI{openstackAPI: c.api}
	c.api = counter
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	_, err := c.Prepare(ctx, nil)
	if !errors.Is(err, ErrImageNotFound) || !strings.Contains(err.Error(), `"`+cfg.OpenStack.Image+`"`) {
		t.Fatalf("Prepare without the image: %v, want ErrImageNotFound naming %q", err, cfg.OpenStack.Image)
	}
	t.Logf("status for a missing image: %v", err)
	create := func() error {
		return c.Create(ctx, cloud.CreateRequest{Name: newRunnerName(c), RunnerID: 1, JITConfig: "aml0"})
	}
	if err := create(); !errors.Is(err, ErrImageNotFound) {
		t.Fatalf("Create after a failed Prepare: %v, want ErrImageNotFound", err)
	}

	first := uploadImage(t, b, cfg.OpenStack.Image)
	if changed, err := c.Prepare(ctx, nil); err != nil || changed {
		t.Fatalf("Prepare with the image = %v, %v; want no change (the first image)", changed, err)
	}
	if c.ready.imageID != first {
		t.Errorf("resolved image %s, want %s", c.ready.imageID, first)
	}
	second := uploadImage(t, b, cfg.OpenStack.Image)
	if changed, err := c.Prepare(ctx, nil); err != nil || !changed || c.ready.imageID != second {
		t.Fatalf("Prepare with a newer image = %v, %v (image %s); want a change to %s", changed, err, c.ready.imageID, second)
	}
	if changed, err := c.Prepare(ctx, nil); err != nil || changed {
		t.Fatalf("Prepare again = %v, %v; want no change", changed, err)
	}

	for _, id := range []string{first, second} {
		if err := images.Delete(ctx, b.image, id).ExtractErr(); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.Prepare(ctx, nil)
	if !errors.Is(err, ErrImageNotFound) || !strings.Contains(err.Error(), cfg.OpenStack.Image) {
		t.Fatalf("Prepare after the image was deleted: %v, want ErrImageNotFound naming it", err)
	}
	for range 5 {
		if err := create(); !errors.Is(err, ErrImageNotFound) {
			t.Fatalf("Create after the image was deleted: %v, want ErrImageNotFound", err)
		}
	}
	if n := counter.count(); n != 0 {
		t.Errorf("Nova was asked for %d servers without an image", n)
	}
	if left := projectServers(t, ctx, b, cfg.Identity.Prefix()+"-"); len(left) > 0 {
		t.Errorf("servers created without an image: %d", len(left))
	}
}

// uploadImage uploads a small active image of the project.
func uploadImage(t *testing.T, b *bed, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	image, err := images.Create(ctx, b.image, images.CreateOpts{Name: name, ContainerFormat: "bare", DiskFormat: "raw"}).Extract()
	if err != nil {
		t.Fatalf("cannot create image: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		images.Delete(ctx, b.image, image.ID)
	})
	if err := imagedata.Upload(ctx, b.image, image.ID, bytes.NewReader(make([]byte, 4096))).ExtractErr(); err != nil {
		t.Fatalf("cannot upload image: %v", err)
	}
	// Glance orders by created_at with one-second precision.
	time.Sleep(1100 * time.Millisecond)
	return image.ID
}

// Prepare keeps the security group's egress rules what the denylist says,
// whatever they were, and does not duplicate them.
func TestSecurityGroupRules(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	cfg := testConfig(b)
	cfg.OpenStack.Image = b.fixtures.ImageID     // by ID
	cfg.OpenStack.Network = b.fixtures.NetworkID // by ID
	cfg.OpenStack.Flavor = b.fixtures.FlavorID   // by ID
	c := newCloud(t, b, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	egress := func() []string {
		t.Helper()
		list, err := c.api.SecurityGroupRules(ctx, c.ready.securityGroupID)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range list {
			if r.Direction == string(rules.DirIngress) {
				t.Errorf("ingress rule %+v", r)
				continue
			}
			out = append(out, r.EtherType+" "+r.RemoteIPPrefix)
		}
		slices.Sort(out)
		return out
	}
	open := []string{"IPv4 ", "IPv6 "}

	for range 2 {
		mustPrepare(t, c)
		if got := egress(); !slices.Equal(got, open) {
			t.Errorf("egress rules %v, want %v", got, open)
		}
	}
	if c.ready.imageID != b.fixtures.ImageID || c.ready.networkID != b.fixtures.NetworkID || c.ready.flavorID != b.fixtures.FlavorID {
		t.Errorf("resolved %+v, want the fixtures' IDs", c.ready)
	}

	c.denylist = mustDenylist(t, "10.0.0.0/8", "192.168.0.0/16")
	want := []string{}
	for _, r := range egressRules(c.denylist) {
		want = append(want, string(r.etherType)+" "+r.prefix)
	}
	slices.Sort(want)
	for range 2 {
		mustPrepare(t, c)
		if got := egress(); !slices.Equal(got, want) {
			t.Errorf("egress rules with a denylist\n got %v\nwant %v", got, want)
		}
	}

	c.denylist = nil
	mustPrepare(t, c)
	if got := egress(); !slices.Equal(got, open) {
		t.Errorf("egress rules after the denylist went: %v, want %v", got, open)
	}
}
