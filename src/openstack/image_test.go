package openstack

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// unitCloud is a Cloud of unit app/0 of testModel that never connects.
func unitCloud(t *testing.T) *Cloud {
	t.Helper()
	c, err := New(Config{
		Identity: runner.Identity{Model: testModel, App: "app", Unit: 0},
		OpenStack: config.OpenStack{CloudsYAML: "clouds:\n  c:\n    auth:\n      auth_url: https://keystone.example:5000/v3\n      username: u\n      password: p\n      project_name: p\n      user_domain_name: Default\n      project_domain_name: Default\n",
			Cloud: "c", Flavor: "f", Network: "n", BaseImage: "ubuntu"},
		Runner: config.RunnerImage{HTTPProxy: "http://proxy.example:3128", HTTPSProxy: "http://proxy.example:3128", NoProxy: "localhost"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestImageNameAndRecipe(t *testing.T) {
	if got := imageName("app-0a1b2c3d-0", "2.330.0", "x64"); got != "app-0a1b2c3d-0-image-2.330.0-x64" {
		t.Errorf("imageName = %q", got)
	}
	base := recipe("base-id", "2.330.0", "x64")
	if again := recipe("base-id", "2.330.0", "x64"); again != base {
		t.Errorf("the recipe is not stable: %s, then %s", base, again)
	}
	for _, tc := range []struct{ name, baseID, version, arch string }{
		{"another base image", "other-base", "2.330.0", "x64"},
		{"another runner version", "base-id", "2.331.0", "x64"},
		{"another architecture", "base-id", "2.330.0", "arm64"},
	} {
		if recipe(tc.baseID, tc.version, tc.arch) == base {
			t.Errorf("%s: same recipe", tc.name)
		}
	}
}

func TestImageOwnership(t *testing.T) {
	c := unitCloud(t)
	own := func(id, name string, created time.Time, status images.ImageStatus, rec string) images.Image {
		props := map[string]any{}
		for k, v := range c.imageProperties("2.330.0", "x64", rec) {
			props[k] = v
		}
		return images.Image{ID: id, Name: name, Status: status, CreatedAt: created, Properties: props}
	}
	name := imageName(c.cfg.Identity.Prefix(), "2.330.0", "x64")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	otherUnit := own("other-unit", name, t0, images.ImageStatusActive, "r1")
	otherUnit.Properties[runner.MetaUnit] = "app/1"
	otherModel := own("other-model", name, t0, images.ImageStatusActive, "r1")
	otherModel.Properties[runner.MetaModel] = "another-model"
	otherPrefix := own("other-prefix", name, t0, images.ImageStatusActive, "r1")
	otherPrefix.Properties[propBuiltBy] = "app-ffffffff-0"
	stock := images.Image{ID: "stock", Name: "ubuntu", Status: images.ImageStatusActive}
	all := []images.Image{
		own("old", imageName(c.cfg.Identity.Prefix(), "2.329.0", "x64"), t0, images.ImageStatusActive, "r0"),
		own("current", name, t0.Add(time.Hour), images.ImageStatusActive, "r1"),
		own("older-same", name, t0, images.ImageStatusActive, "r1"),
		own("queued", name, t0.Add(2*time.Hour), images.ImageStatusQueued, "r1"),
		own("other-recipe", name, t0.Add(3*time.Hour), images.ImageStatusActive, "r2"),
		otherUnit, otherModel, otherPrefix, stock,
	}

	t.Run("reusable", func(t *testing.T) {
		for _, tc := range []struct {
			name, recipe, want string
		}{
			{"the newest active image of the name and recipe", "r1", "current"},
			{"a recipe no image has", "r9", ""},
		} {
			got := c.reusable(all, name, tc.recipe)
			switch {
			case tc.want == "" && got != nil:
				t.Errorf("%s: reusable = %s, want none", tc.name, got.ID)
			case tc.want != "" && (got == nil || got.ID != tc.want):
				t.Errorf("%s: reusable = %v, want %s", tc.name, got, tc.want)
			}
		}
	})

	t.Run("prunable", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			keep  string
			inUse map[string]bool
			want  []string
		}{
			{"all the unit's others", "current", nil, []string{"old", "older-same", "queued", "other-recipe"}},
			{"the previous one while a server boots from it", "current", map[string]bool{"old": true}, []string{"older-same", "queued", "other-recipe"}},
			{"teardown: every one of the unit's", "", nil, []string{"old", "current", "older-same", "queued", "other-recipe"}},
		} {
			var got []string
			for _, image := range c.prunable(all, tc.keep, tc.inUse) {
				got = append(got, image.ID)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("%s: prunable = %v, want %v (another unit's, model's or prefix's never)", tc.name, got, tc.want)
			}
		}
	})
}

func TestOwnsBuilder(t *testing.T) {
	c := unitCloud(t)
	prefix := c.cfg.Identity.Prefix()
	meta := map[string]string{runner.MetaModel: testModel, runner.MetaUnit: "app/0", metaRole: roleBuilder}
	with := func(change func(map[string]string)) map[string]string {
		m := map[string]string{}
		for k, v := range meta {
			m[k] = v
		}
		change(m)
		return m
	}
	for _, tc := range []struct {
		name     string
		server   string
		metadata map[string]string
		want     bool
	}{
		{"the unit's builder", prefix + "-img-0123abcd", meta, true},
		{"a runner of the unit", prefix + "-0123abcd", meta, false},
		{"a longer suffix", prefix + "-img-0123abcd0", meta, false},
		{"another unit's builder name", "app-" + strings.Split(prefix, "-")[1] + "-1-img-0123abcd", meta, false},
		{"another model's metadata", prefix + "-img-0123abcd", with(func(m map[string]string) { m[runner.MetaModel] = "x" }), false},
		{"another unit's metadata", prefix + "-img-0123abcd", with(func(m map[string]string) { m[runner.MetaUnit] = "app/1" }), false},
		{"no builder role", prefix + "-img-0123abcd", with(func(m map[string]string) { delete(m, metaRole) }), false},
	} {
		if got := c.ownsBuilder(servers.Server{Name: tc.server, Metadata: tc.metadata}); got != tc.want {
			t.Errorf("%s: ownsBuilder(%s) = %v, want %v", tc.name, tc.server, got, tc.want)
		}
	}
}

func TestBuildsOnlyWithoutAnImage(t *testing.T) {
	for _, tc := range []struct {
		name, image, base string
		want              bool
	}{
		{"a base image alone", "", "ubuntu", true},
		{"an image (openstack-image or the relation's) wins", "runner-image", "ubuntu", false},
		{"an image alone", "runner-image", "", false},
	} {
		c := &Cloud{cfg: Config{OpenStack: config.OpenStack{Image: tc.image, BaseImage: tc.base}}}
		if got := c.builds(); got != tc.want {
			t.Errorf("%s: builds = %v, want %v", tc.name, got, tc.want)
		}
	}
}

var testSource = cloud.RunnerSource{
	URL:     "https://github.example/actions/runner/releases/download/v2.330.0/actions-runner-linux-x64-2.330.0.tar.gz?sig=secret",
	SHA256:  strings.Repeat("ab", 32),
	Version: "2.330.0", Arch: "x64",
}

func decodeUserData(t *testing.T, encoded string) string {
	t.Helper()
	script, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatal(err)
	}
	return string(script)
}

func TestBuilderUserData(t *testing.T) {
	c := unitCloud(t)
	encoded, err := c.builderUserData("app-x-0-img-01234567", testSource)
	if err != nil {
		t.Fatal(err)
	}
	script := decodeUserData(t, encoded)
	if out, err := exec.Command("sh", "-n", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("the user-data is not valid sh: %v\n%s", err, out)
	}
	// The steps run in the LXD build's order, after the download is
	// verified, and the guest powers off only after all of them.
	var order []int
	for _, marker := range []string{
		"sha256sum", `sh "$work/install.sh" "$tarball" '2.330.0'`,
		`sh "$work/tools.sh"`, `sh "$work/lean-boot.sh"`, "cat >" + boot.StartScriptPath, "poweroff",
	} {
		// The scripts' text comes before the commands that run them
		// (and may say poweroff): the commands are the last of each.
		i := strings.LastIndex(script, marker)
		if i < 0 {
			t.Fatalf("the user-data lacks %q:\n%s", marker, script)
		}
		order = append(order, i)
	}
	for i := 1; i < len(order); i++ {
		if order[i] < order[i-1] {
			t.Errorf("the user-data's steps are out of order: %v", order)
		}
	}
	for _, step := range append([]boot.Step{{Name: "install", Script: boot.InstallScript}}, boot.ImageSteps...) {
		if !strings.Contains(script, step.Script) {
			t.Errorf("the user-data lacks the %s script", step.Name)
		}
	}
	for _, want := range []string{"export http_proxy='http://proxy.example:3128'", "export NO_PROXY='localhost'", testSource.SHA256} {
		if !strings.Contains(script, want) {
			t.Errorf("the user-data lacks %q", want)
		}
	}
	// A failed step exits before the poweroff: the charm's wait for
	// SHUTOFF is how it sees the failure.
	if !regexp.MustCompile(`\|\| fail "the lean-boot step exited`).MatchString(script) {
		t.Errorf("a failing step does not stop the build")
	}
	// The signed URL's query is no part of what the user-data says when
	// it fails.
	if strings.Count(script, "sig=secret") != 3 { // curl's, wget's and python's argument
		t.Errorf("the download URL's query shows outside the download commands")
	}
	if strings.Contains(script, "Authorization") {
		t.Errorf("the user-data sends a download token although GitHub gave none")
	}

	withToken := testSource
	withToken.Token = "temp-token"
	encoded, err = c.builderUserData("app-x-0-img-01234567", withToken)
	if err != nil {
		t.Fatal(err)
	}
	if script := decodeUserData(t, encoded); !strings.Contains(script, "'temp-token'") || !strings.Contains(script, `-H @"$work/header"`) {
		t.Errorf("GitHub's download token is not sent")
	}

	for _, tc := range []struct {
		name   string
		change func(*cloud.RunnerSource)
	}{
		{"a URL that is no URL", func(s *cloud.RunnerSource) { s.URL = "ftp://x" }},
		{"a malformed checksum", func(s *cloud.RunnerSource) { s.SHA256 = "abc'; reboot; '" }},
	} {
		src := testSource
		tc.change(&src)
		if _, err := c.builderUserData("app-x-0-img-01234567", src); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestBuilderUserDataVerifiesTheDownload runs the user-data's download and
// check, up to the install step, against a file URL's stand-in: a tarball
// whose checksum is not GitHub's never reaches install.sh.
func TestBuilderUserDataVerifiesTheDownload(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("no curl on this machine") // the sandbox's tools; no real part is missing
	}
	dir := t.TempDir()
	tarball := filepath.Join(dir, "runner.tar.gz")
	if err := os.WriteFile(tarball, []byte("not the runner"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := unitCloud(t)
	c.cfg.Runner = config.RunnerImage{}
	src := testSource
	src.URL = "http://127.0.0.1:1/x" // replaced below: builderUserData takes http(s) only
	encoded, err := c.builderUserData("app-x-0-img-01234567", src)
	if err != nil {
		t.Fatal(err)
	}
	script := decodeUserData(t, encoded)
	// Run it in a scratch root: the build's paths moved under dir, the
	// download from the file, and the steps stubbed to leave a mark.
	script = strings.ReplaceAll(script, "'http://127.0.0.1:1/x'", "'file://"+tarball+"'")
	script = strings.ReplaceAll(script, "/var/lib/github-runner-image-build", dir+"/work")
	script = strings.ReplaceAll(script, "/var/log/github-runner-image-build.log", dir+"/build.log")
	script = strings.ReplaceAll(script, "/dev/console", dir+"/console")
	cut := strings.Index(script, "\ncat >\"$work/install.sh\"")
	if cut < 0 {
		t.Fatal("the user-data has no install step")
	}
	script = script[:cut] + "\necho verified >" + dir + "/verified\n"
	out, err := exec.Command("sh", "-c", script).CombinedOutput()
	if err == nil {
		t.Fatalf("a download whose sha256 is not GitHub's was accepted:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "verified")); err == nil {
		t.Errorf("the build went on past a wrong checksum")
	}
	if !strings.Contains(string(out), "GitHub lists "+testSource.SHA256) {
		t.Errorf("the failure does not say why:\n%s", out)
	}
}

// builderStopper plays the guest of every builder of the prefix that
// the test lets finish: the fake driver runs no user-data, so the test
// powers the builder off as the guest would at the end of its build.
func builderStopper(t *testing.T, b *bed, prefix string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			page, err := servers.List(b.compute, servers.ListOpts{Name: "^" + regexp.QuoteMeta(prefix+builderInfix)}).AllPages(ctx)
			if err == nil {
				list, _ := servers.ExtractServers(page)
				for _, srv := range list {
					if srv.Status == "ACTIVE" {
						_ = servers.Stop(ctx, b.compute, srv.ID).ExtractErr()
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func unitImages(t *testing.T, c *Cloud) []images.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	all, err := c.api.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var own []images.Image
	for _, image := range all {
		if c.ownsImage(image) {
			own = append(own, image)
		}
	}
	return own
}

func buildConfig(b *bed) Config {
	cfg := testConfig(b)
	cfg.OpenStack.Image, cfg.OpenStack.BaseImage = "", openstacktest.ImageName
	cfg.BuildTimeout = 2 * time.Minute
	return cfg
}

// fetchOf is a FetchRunner of a version, telling the cloud where it comes
// from as the manager's does.
func fetchOf(c *Cloud, version string) cloud.FetchRunner {
	return func(context.Context) (string, string, error) {
		src := testSource
		src.Version = version
		c.SetRunnerSource(src)
		return "/nonexistent/runner.tar.gz", version, nil
	}
}

// TestImageBuildOnBed builds, reuses, rebuilds and prunes the unit's image
// on the loopback OpenStack, the builder's guest played by the test.
func TestImageBuildOnBed(t *testing.T) {
	b := requireBed(t)
	cfg := buildConfig(b)
	c := newCloud(t, b, cfg)
	counter := &countingAPI{openstackAPI: c.api}
	c.api = counter
	var builds []error
	c.OnImageBuild(func(_ time.Duration, err error) { builds = append(builds, err) })
	defer builderStopper(t, b, c.cfg.Identity.Prefix())()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	start := time.Now()
	if _, err := c.Prepare(ctx, fetchOf(c, "2.330.0")); err != nil {
		t.Fatal(err)
	}
	t.Logf("BENCH openstack_image_build_fake %.1f s cloud=openstack-fake", time.Since(start).Seconds())
	first := c.ready.imageID
	image, err := images.Get(ctx, b.image, first).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if want := c.cfg.Identity.Prefix() + "-image-2.330.0-x64"; image.Name != want || image.Status != images.ImageStatusActive {
		t.Errorf("built image %q is %s, want %q active", image.Name, image.Status, want)
	}
	for key, want := range map[string]string{
		propVersion: "2.330.0", propArch: "x64", propBuiltBy: c.cfg.Identity.Prefix(),
		runner.MetaModel: testModel, runner.MetaUnit: c.cfg.Identity.UnitName(),
		propRecipe: recipe(b.fixtures.ImageID, "2.330.0", "x64"),
	} {
		if got := property(*image, key); got != want {
			t.Errorf("image property %s = %q, want %q", key, got, want)
		}
	}
	// Glance keeps tags as a set: their order is its own.
	if tags := slices.Sorted(slices.Values(image.Tags)); strings.Join(tags, ",") != "2.330.0,x64" {
		t.Errorf("image tags = %v, want [2.330.0 x64]", image.Tags)
	}
	if left := projectServers(t, ctx, b, c.cfg.Identity.Prefix()+builderInfix); len(left) > 0 {
		t.Errorf("the builder %s is left", left[0].Name)
	}
	if len(builds) != 1 || builds[0] != nil {
		t.Errorf("builds told = %v, want one success", builds)
	}

	// The same version again: the image is reused, no builder made.
	before := counter.count()
	changed, err := c.Prepare(ctx, fetchOf(c, "2.330.0"))
	if err != nil || changed || c.ready.imageID != first || counter.count() != before {
		t.Errorf("Prepare of the same version: changed %v, err %v, image %s (want %s), %d servers created", changed, err, c.ready.imageID, first, counter.count()-before)
	}

	// A runner boots from the first image; a new version builds a new one,
	// and the first stays while the runner uses it.
	name := newRunnerName(c)
	if err := c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: 1, JITConfig: "Zm9v"}); err != nil {
		t.Fatal(err)
	}
	changed, err = c.Prepare(ctx, fetchOf(c, "2.331.0"))
	if err != nil || !changed || c.ready.imageID == first {
		t.Fatalf("Prepare of a new version: changed %v, err %v, image %s", changed, err, c.ready.imageID)
	}
	second := c.ready.imageID
	if got := imageIDs(unitImages(t, c)); got != strings.Join(sortedIDs(first, second), ",") {
		t.Errorf("the unit's images = %s, want the new one and the one a runner uses (%s, %s)", got, second, first)
	}
	if err := c.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prepare(ctx, fetchOf(c, "2.331.0")); err != nil {
		t.Fatal(err)
	}
	if got := imageIDs(unitImages(t, c)); got != second {
		t.Errorf("the unit's images = %s, want only %s once no server uses the previous one", got, second)
	}
}

func imageIDs(list []images.Image) string {
	var ids []string
	for _, image := range list {
		ids = append(ids, image.ID)
	}
	return strings.Join(sortedIDs(ids...), ",")
}

func sortedIDs(ids ...string) []string {
	out := append([]string(nil), ids...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestImageBuildFailureOnBed: a builder that never powers off (its build
// failed) is deleted after the build timeout, the failure is told, no
// image is left of it, and Create keeps the last good image.
func TestImageBuildFailureOnBed(t *testing.T) {
	b := requireBed(t)
	cfg := buildConfig(b)
	c := newCloud(t, b, cfg)
	var builds []error
	c.OnImageBuild(func(_ time.Duration, err error) { builds = append(builds, err) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	stop := builderStopper(t, b, c.cfg.Identity.Prefix())
	if _, err := c.Prepare(ctx, fetchOf(c, "2.330.0")); err != nil {
		t.Fatal(err)
	}
	stop()
	good := c.ready.imageID

	c.cfg.BuildTimeout = 5 * time.Second
	_, err := c.Prepare(ctx, fetchOf(c, "2.331.0"))
	if err == nil || !errors.Is(err, errBuild) || !strings.Contains(err.Error(), "did not power off within 5s") {
		t.Fatalf("Prepare of a build that never ends = %v, want the build timeout", err)
	}
	if left := projectServers(t, ctx, b, c.cfg.Identity.Prefix()+builderInfix); len(left) > 0 {
		t.Errorf("the failed builder %s is left", left[0].Name)
	}
	if got := imageIDs(unitImages(t, c)); got != good {
		t.Errorf("the unit's images = %s, want only the last good one %s", got, good)
	}
	if len(builds) != 2 || builds[1] == nil {
		t.Errorf("builds told = %v, want a success, then the failure", builds)
	}
	if r, err := c.resources(); err != nil || r.imageID != good {
		t.Errorf("after a failed build, Create would use %v (%v), want the last good image %s", r, err, good)
	}
}

// TestStaleBuildersOnBed: a builder a killed manager left is deleted by the
// next build's sweep and by Teardown; a server of the builder's name whose
// metadata names another unit is never touched.
func TestStaleBuildersOnBed(t *testing.T) {
	b := requireBed(t)
	c := newCloud(t, b, buildConfig(b))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	boot := func(name string, metadata map[string]string) {
		t.Helper()
		srv, err := c.api.CreateServer(ctx, servers.CreateOpts{
			Name: name, ImageRef: b.fixtures.ImageID, FlavorRef: b.fixtures.FlavorID,
			Networks: []servers.Network{{UUID: b.fixtures.NetworkID}}, Metadata: metadata,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.waitActive(ctx, srv.ID, c.log); err != nil {
			t.Fatal(err)
		}
	}
	prefix := c.cfg.Identity.Prefix()
	own := map[string]string{runner.MetaModel: testModel, runner.MetaUnit: c.cfg.Identity.UnitName(), metaRole: roleBuilder}
	other := map[string]string{runner.MetaModel: "another-model", runner.MetaUnit: c.cfg.Identity.UnitName(), metaRole: roleBuilder}
	boot(prefix+builderInfix+"0000aaaa", own)
	boot(prefix+builderInfix+"0000bbbb", other)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if srv := serverNamed(t, b, prefix+builderInfix+"0000bbbb"); srv != nil {
			_ = servers.Delete(ctx, b.compute, srv.ID).ExtractErr()
		}
	})

	c.deleteStaleBuilders(ctx)
	if serverNamed(t, b, prefix+builderInfix+"0000aaaa") != nil {
		t.Errorf("the unit's stale builder is left after the sweep")
	}
	if serverNamed(t, b, prefix+builderInfix+"0000bbbb") == nil {
		t.Fatalf("another model's server of a builder's name was deleted")
	}
	boot(prefix+builderInfix+"0000cccc", own)
	if err := c.teardownImages(ctx); err != nil {
		t.Fatal(err)
	}
	if serverNamed(t, b, prefix+builderInfix+"0000cccc") != nil {
		t.Errorf("the unit's builder is left after Teardown")
	}
	if serverNamed(t, b, prefix+builderInfix+"0000bbbb") == nil {
		t.Errorf("Teardown deleted another model's server of a builder's name")
	}
}
