package lxd

import (
	"context"
	"encoding/csv"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
)

// A loop-file pool follows LXD's own rule (20% of the free space, 5–30
// GiB), never takes more than half the free space, and is not made at all
// on a disk with under 2 GiB free.
func TestLoopPoolSize(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		free, want uint64
	}{
		{free: 500 * gib, want: 30 * gib},
		{free: 100 * gib, want: 20 * gib},
		{free: 78 * gib, want: 78 * gib / 5 &^ (1<<20 - 1)},
		{free: 20 * gib, want: 5 * gib},
		{free: 6 * gib, want: 3 * gib},
		{free: 2 * gib, want: 1 * gib},
		{free: 2*gib - 1, want: 0},
		{free: 0, want: 0},
	}
	for _, test := range tests {
		if got := loopPoolSize(test.free); got != test.want {
			t.Errorf("loopPoolSize(%d MiB) = %d MiB, want %d MiB", test.free>>20, got>>20, test.want>>20)
		}
	}
}

// poolProject is a throwaway LXD project with an empty default profile of
// its own, standing in for a daemon nobody set up, and the name of a pool
// ("cowp…", deleted at the end with whatever the test put in it) that does
// not exist yet.
func poolProject(t *testing.T) (project, pool string) {
	t.Helper()
	short := "cowp" + randomHex(4)
	project, pool = short, short+"p"
	mustLXC(t, "project", "create", project, "-c", "features.profiles=true", "-c", "features.images=false")
	t.Cleanup(func() {
		lxc(t, "profile", "device", "remove", "default", "root", "--project", project)
		lxc(t, "profile", "device", "remove", "default", "eth0", "--project", project)
		if out, err := lxc(t, "project", "delete", project); err != nil {
			t.Errorf("lxc project delete %s: %v %s", project, err, out)
		}
		if _, err := lxc(t, "storage", "show", pool); err == nil {
			if out, err := lxc(t, "storage", "delete", pool); err != nil {
				t.Errorf("lxc storage delete %s: %v %s", pool, err, out)
			}
		}
	})
	return project, pool
}

// A daemon without a root disk in its default profile gets a pool of the
// best driver LXD offers: zfs, else btrfs, each on a loop file of
// loopPoolSize, else dir, and then the note says runner starts are slow,
// and why. A pool already there is used as it is, and a dir one noted. The
// drivers LXD offers and the free space come from a probe the test
// replaces (real: LXD's storage_supported_drivers and the disk's free
// space); the pools are real.
func TestInitialiseChoosesThePool(t *testing.T) {
	requireLXD(t)
	real := newCloud(t, testConfig(testPrefix(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	support, err := real.setup.storageSupport(ctx)
	if err != nil || !support.FreeKnown {
		t.Fatalf("cannot probe LXD's storage: %+v, %v", support, err)
	}
	cow := ""
	for _, d := range []string{DriverZFS, DriverBtrfs} {
		if cow == "" && slices.Contains(support.Drivers, d) {
			cow = d
		}
	}
	const gib = 1 << 30
	tests := []struct {
		name string
		// probe nil: the real one.
		probe      *storageSupport
		existing   string // a dir pool made before, as the operator would
		wantDriver string
		wantNote   []string // "" in the list: no note at all
		realOnly   bool     // needs a copy-on-write driver on this machine
	}{
		{name: "the machine's drivers", wantDriver: cow, wantNote: []string{""}, realOnly: true},
		{name: "btrfs", probe: &storageSupport{Drivers: []string{"dir", "btrfs"}, Free: 40 * gib, FreeKnown: true}, wantDriver: "btrfs", wantNote: []string{""}},
		{name: "zfs listed but failing", probe: &storageSupport{Drivers: []string{"dir", "zfs", "btrfs"}, Free: 40 * gib, FreeKnown: true}, wantDriver: "btrfs", wantNote: []string{""}},
		{name: "no copy-on-write driver", probe: &storageSupport{Drivers: []string{"dir"}, Free: 40 * gib, FreeKnown: true}, wantDriver: "dir",
			wantNote: []string{"runner starts are slow", "uses the dir driver", "copies the whole image", "neither zfs nor btrfs", "btrfs-progs"}},
		{name: "no copy-on-write driver that works", probe: &storageSupport{Drivers: []string{"dir", "zfs"}, Free: 40 * gib, FreeKnown: true}, wantDriver: "dir",
			wantNote: []string{"runner starts are slow", "uses the dir driver", "LXD failed to create it with zfs"}},
		{name: "too little disk", probe: &storageSupport{Drivers: []string{"dir", "btrfs"}, Free: gib, FreeKnown: true}, wantDriver: "dir",
			wantNote: []string{"runner starts are slow", "1024 MiB free, too little for a loop-file pool"}},
		{name: "the operator's dir pool", probe: &storageSupport{Drivers: []string{"dir", "btrfs"}, Free: 40 * gib, FreeKnown: true}, existing: "dir", wantDriver: "dir",
			wantNote: []string{"runner starts are slow", "uses the dir driver", "a zfs or btrfs pool starts runners from a snapshot"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			if test.realOnly && cow == "" {
				lxdMissing(t, "LXD offers no copy-on-write storage driver here (drivers: "+strings.Join(support.Drivers, ", ")+")")
			}
			project, pool := poolProject(t)
			if test.existing != "" {
				mustLXC(t, "storage", "create", pool, test.existing)
			}
			cfg := testConfig(testPrefix(t))
			// The shared bridge: the NIC step needs one, and creates none.
			cfg.Project, cfg.Pool, cfg.Network = project, pool, real.profileNetwork
			c := newCloud(t, cfg)
			if test.probe != nil {
				probe := *test.probe
				c.probeStorage = func(context.Context) (storageSupport, error) { return probe, nil }
			}
			if err := c.initialise(ctx); err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(mustLXC(t, "profile", "device", "get", "default", "root", "pool", "--project", project)); got != pool {
				t.Errorf("default profile's root disk is on pool %q, want %q", got, pool)
			}
			driver := strings.TrimSpace(mustLXC(t, "query", "/1.0/storage-pools/"+pool))
			if !strings.Contains(driver, `"driver": "`+test.wantDriver+`"`) {
				t.Errorf("pool %s is not %s:\n%s", pool, test.wantDriver, driver)
			}
			if test.wantDriver != DriverDir && test.existing == "" {
				// A loop file in LXD's disks/, of the documented size.
				free := support.Free
				if test.probe != nil {
					free = test.probe.Free
				}
				source := strings.TrimSpace(mustLXC(t, "storage", "get", pool, "source"))
				if want := filepath.Join(filepath.Dir(c.setup.socket), "disks", pool+".img"); source != want {
					t.Errorf("pool %s's source is %q, want the loop file %s", pool, source, want)
				}
				if size, want := strings.TrimSpace(mustLXC(t, "storage", "get", pool, "size")), strconv.FormatUint(loopPoolSize(free)>>20, 10)+"MiB"; size != want {
					t.Errorf("pool %s has size %q, want %q", pool, size, want)
				}
			}
			note := c.Note()
			for _, want := range test.wantNote {
				if want == "" && note != "" || !strings.Contains(note, want) {
					t.Errorf("note %q, want it with %q", note, want)
				}
			}
			// A manager that starts again on the daemon set up finds the
			// same pool, and says it is dir if it is (why, the first one
			// logged).
			again := newCloud(t, cfg)
			again.probeStorage = func(context.Context) (storageSupport, error) {
				t.Error("a second initialise probed the storage drivers: it creates no pool")
				return storageSupport{}, nil
			}
			if err := again.initialise(ctx); err != nil {
				t.Fatal(err)
			}
			if again.rootPool() != pool {
				t.Errorf("the next manager has pool %q, want %q", again.rootPool(), pool)
			}
			if slow := strings.Contains(again.Note(), "uses the dir driver"); slow != (test.wantDriver == DriverDir) {
				t.Errorf("the next manager's note is %q for a %s pool", again.Note(), test.wantDriver)
			}
		})
	}
}

// lxdMissing skips outside CI and fails in it, where the test bed must
// have what the test needs (tests/lxd/setup.sh makes a btrfs pool).
func lxdMissing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// A pool initialise created is deleted again when a later step fails (here
// the NIC's: the network named is one LXD does not manage), so the next
// try starts from nothing and chooses again.
func TestInitialiseDeletesThePoolItMadeWhenAStepFails(t *testing.T) {
	requireLXD(t)
	project, pool := poolProject(t)
	cfg := testConfig(testPrefix(t))
	cfg.Project, cfg.Pool, cfg.Network = project, pool, "lo"
	c := newCloud(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := c.initialise(ctx)
	if err == nil || !strings.Contains(err.Error(), `network "lo"`) {
		t.Fatalf("initialise with network lo: %v, want it refused", err)
	}
	if out, err := lxc(t, "storage", "show", pool); err == nil {
		t.Errorf("pool %s is left after the failed initialisation:\n%s", pool, out)
	}
	if devices := strings.TrimSpace(mustLXC(t, "profile", "device", "list", "default", "--project", project)); devices != "" {
		t.Errorf("default profile has devices after the failed initialisation: %s", devices)
	}
}

// Runners are created from the image's volume on the default profile's
// pool: on btrfs an instance's root is a snapshot of the image's
// subvolume, unpacked once for the pool, never per instance. A rebuilt
// image's prune takes the old image's volume with it, even while a runner
// made from it still runs its job.
func TestRunnersAreSnapshotsOfTheImageVolume(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	c := newCloud(t, testConfig(testPrefix(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	buildImage(t, c, srv)
	pool := c.rootPool()
	driver := poolDriver(t, pool)
	if driver == DriverDir {
		lxdMissing(t, "the default profile's pool "+pool+" is dir: no image volumes to test")
	}
	old := c.image
	create := func(fingerprint string) string {
		name := c.cfg.Identity.NewName()
		post := c.instancePost(cloud.CreateRequest{Name: name, RunnerID: 1}, api.InstanceSource{Type: "image", Fingerprint: fingerprint})
		if err := c.d.CreateInstance(ctx, post); err != nil {
			t.Fatal(err)
		}
		return name
	}
	busy := create(old)
	if !hasImageVolume(t, pool, old) {
		t.Fatalf("no image volume of %s on pool %s after a create from it", old[:12], pool)
	}
	if driver == DriverBtrfs {
		mount := filepath.Join(filepath.Dir(c.setup.socket), "storage-pools", pool)
		image := subvolume(t, filepath.Join(mount, "images", old))
		instance := subvolume(t, filepath.Join(mount, "containers", busy))
		if instance["Parent UUID"] != image["UUID"] {
			t.Errorf("runner %s's subvolume has parent %q, not the image's %q: it is not a snapshot of it", busy, instance["Parent UUID"], image["UUID"])
		}
	}

	if err := srv.SetRunnerVersion(srv.RunnerVersion() + "1"); err != nil {
		t.Fatal(err)
	}
	buildImage(t, c, srv)
	if c.image == old {
		t.Fatal("the new version built no new image")
	}
	if hasImageVolume(t, pool, old) {
		t.Errorf("the old image %s's volume is left on pool %s after the rebuild", old[:12], pool)
	}
	next := create(c.image)
	if !hasImageVolume(t, pool, c.image) {
		t.Errorf("no image volume of the new image %s on pool %s", c.image[:12], pool)
	}
	for _, name := range []string{busy, next} {
		if err := c.remove(ctx, name); err != nil {
			t.Error(err)
		}
	}
}

func poolDriver(t *testing.T, pool string) string {
	t.Helper()
	for _, line := range strings.Split(mustLXC(t, "storage", "list", "--format", "csv"), "\n") {
		if fields := strings.Split(line, ","); len(fields) > 1 && fields[0] == pool {
			return fields[1]
		}
	}
	t.Fatalf("no pool %s", pool)
	return ""
}

func hasImageVolume(t *testing.T, pool, fingerprint string) bool {
	t.Helper()
	records, err := csv.NewReader(strings.NewReader(mustLXC(t, "storage", "volume", "list", pool, "--format", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if len(r) > 1 && r[0] == "image" && r[1] == fingerprint {
			return true
		}
	}
	return false
}

// subvolume is `btrfs subvolume show`'s fields.
func subvolume(t *testing.T, path string) map[string]string {
	t.Helper()
	out, err := exec.Command("btrfs", "subvolume", "show", path).CombinedOutput()
	if err != nil {
		t.Fatalf("btrfs subvolume show %s: %v\n%s", path, err, out)
	}
	fields := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}
