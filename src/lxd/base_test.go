package lxd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// imageStream is a simplestreams image server, as cloud-images.ubuntu.com
// is for the ubuntu: remote, of one product whose versions are variants of
// the busybox test base (LXD unified tarballs). LXD 5.0.2 pulls from it
// over plain http: the daemon runs on this host and reaches 127.0.0.1.
type imageStream struct {
	t       *testing.T
	srv     *httptest.Server
	aliases string
	base    []byte // the exported test base image

	mu        sync.Mutex
	versions  map[string][]byte // serial → unified tarball
	downloads int
}

func newImageStream(t *testing.T, aliases string) *imageStream {
	t.Helper()
	dir := t.TempDir()
	mustLXC(t, "image", "export", baseImage, filepath.Join(dir, "base"))
	base, err := os.ReadFile(filepath.Join(dir, "base.tar.gz"))
	if err != nil {
		t.Fatalf("the exported base image: %v (the test base must be a unified tarball)", err)
	}
	s := &imageStream{t: t, aliases: aliases, base: base, versions: map[string][]byte{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	t.Cleanup(s.deleteCached)
	return s
}

// addVersion publishes a new version of the product, the base image with
// one file more (a fingerprint of its own, which LXD must download), and
// returns its fingerprint.
func (s *imageStream) addVersion(serial string) string {
	s.t.Helper()
	tarball, err := withFile(s.base, "rootfs/etc/github-runner-test-serial", serial+" "+randomHex(8))
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.versions[serial] = tarball
	s.mu.Unlock()
	sum := sha256.Sum256(tarball)
	return hex.EncodeToString(sum[:])
}

func (s *imageStream) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch path := r.URL.Path; {
	case path == "/streams/v1/index.json":
		writeStreamJSON(w, map[string]any{"format": "index:1.0", "index": map[string]any{"images": map[string]any{
			"datatype": "image-downloads", "path": "streams/v1/images.json", "format": "products:1.0",
			"products": []string{"busybox:test:amd64:default"},
		}}})
	case path == "/streams/v1/images.json":
		versions := map[string]any{}
		for serial, tarball := range s.versions {
			sum := sha256.Sum256(tarball)
			versions[serial] = map[string]any{"items": map[string]any{"lxd_combined.tar.gz": map[string]any{
				"ftype": "lxd_combined.tar.gz", "path": "images/" + serial + ".tar.gz",
				"sha256": hex.EncodeToString(sum[:]), "size": len(tarball),
			}}}
		}
		writeStreamJSON(w, map[string]any{"content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
			"products": map[string]any{"busybox:test:amd64:default": map[string]any{
				"aliases": s.aliases, "arch": "amd64", "os": "busybox", "release": "test", "release_title": "test", "versions": versions,
			}}})
	case strings.HasPrefix(path, "/images/"):
		tarball, ok := s.versions[strings.TrimSuffix(strings.TrimPrefix(path, "/images/"), ".tar.gz")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		s.downloads++
		s.mu.Unlock()
		defer s.mu.Lock()
		// Slowly, as a real download is, for LXD to tell its progress
		// more than once.
		w.Header().Set("Content-Length", fmt.Sprint(len(tarball)))
		for chunk := range slices.Chunk(tarball, 32<<10) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(40 * time.Millisecond)
		}
	default:
		http.NotFound(w, r)
	}
}

func writeStreamJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// expireLXDCache ages LXD's copy of this server's index files: the daemon
// reads an image server's index again only an hour after it last did
// (a refresh within the hour would see no new version), in a directory
// of its cache named by the server URL's SHA-256. The directory is this
// test server's alone.
func (s *imageStream) expireLXDCache() {
	s.t.Helper()
	sum := sha256.Sum256([]byte(s.srv.URL))
	for _, cache := range []string{"/var/cache/lxd", "/var/snap/lxd/common/lxd/cache"} {
		dir := filepath.Join(cache, hex.EncodeToString(sum[:]))
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		old := time.Now().Add(-2 * time.Hour)
		for _, e := range entries {
			if err := os.Chtimes(filepath.Join(dir, e.Name()), old, old); err != nil {
				s.t.Fatal(err)
			}
		}
		return
	}
	s.t.Fatalf("cannot find LXD's cache of %s (looked in /var/cache/lxd and the snap's)", s.srv.URL)
}

// deleteCached deletes the images LXD cached from this server.
func (s *imageStream) deleteCached() {
	out, err := lxc(s.t, "query", "/1.0/images?recursion=1")
	if err != nil {
		s.t.Errorf("cannot list images to clean up: %v", err)
		return
	}
	var images []struct {
		Fingerprint  string `json:"fingerprint"`
		UpdateSource *struct {
			Server string `json:"server"`
		} `json:"update_source"`
	}
	if err := json.Unmarshal([]byte(out), &images); err != nil {
		s.t.Errorf("cannot list images to clean up: %v", err)
		return
	}
	for _, image := range images {
		if image.UpdateSource != nil && image.UpdateSource.Server == s.srv.URL {
			if out, err := lxc(s.t, "image", "delete", image.Fingerprint); err != nil {
				s.t.Errorf("cannot delete cached image %s: %v\n%s", image.Fingerprint, err, out)
			}
		}
	}
}

// withFile is a gzipped tarball with one more regular file.
func withFile(tarball []byte, name, content string) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tarball))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg, ModTime: time.Now()}); err != nil {
		return nil, err
	}
	if _, err := io.WriteString(tw, content); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// progressSeen collects what PrepareProgress says while a build runs.
func progressSeen(c *Cloud) (stop func() []string) {
	done := make(chan struct{})
	var seen []string
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			if p := c.PrepareProgress(); p != "" && (len(seen) == 0 || seen[len(seen)-1] != p) {
				seen = append(seen, p)
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() []string {
		close(done)
		<-finished
		return seen
	}
}

// The default base-image, an Ubuntu LTS name no local image has, is
// fetched from the ubuntu: remote (here a simplestreams server of the
// test's) with its download's progress told, and built on; a new image
// behind the same alias upstream, once LXD's cache has it, rebuilds the
// runner image and replaces the idle runners.
func TestBaseImageFromImageServer(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	stream := newImageStream(t, "24.04,noble")
	first := stream.addVersion("20261201_0000")
	cfg := testConfig(testPrefix(t))
	cfg.LXD.BaseImage = "noble"
	cfg.ImageServers = map[string]string{"ubuntu": stream.srv.URL}
	c := newCloud(t, cfg)
	defer func(poll time.Duration) { progressPoll = poll }(progressPoll)
	progressPoll = 50 * time.Millisecond

	stop := progressSeen(c)
	alias := buildImage(t, c, srv)
	seen := stop()
	t.Logf("progress told: %q", seen)
	image := mustImage(t, c, alias)
	if got := image.Properties[propBaseFingerprint]; got != first {
		t.Errorf("runner image built from %s, want the served image %s", got, first)
	}
	if !slices.ContainsFunc(seen, func(p string) bool {
		return strings.HasPrefix(p, "downloading base image noble (ubuntu:24.04): ") && strings.Contains(p, "%")
	}) {
		t.Errorf("progress told: %q; want the download's", seen)
	}
	if c.PrepareProgress() != "" {
		t.Errorf("progress after the build: %q, want none", c.PrepareProgress())
	}

	// Built and cached: the next Prepare reuses both.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fetch := func(context.Context) (string, string, error) { return runnerTarball(t, srv), srv.RunnerVersion(), nil }
	if changed, err := c.Prepare(ctx, fetch); err != nil || changed || c.image != image.Fingerprint {
		t.Fatalf("Prepare again = %v, %v (image %s, was %s); want the same image", changed, err, c.image, image.Fingerprint)
	}

	// Upstream publishes a newer image under the alias; LXD's cache
	// refreshes (images.auto_update_interval; at once here).
	second := stream.addVersion("20261202_0000")
	stream.expireLXDCache()
	mustLXC(t, "image", "refresh", first)
	changed, err := c.Prepare(ctx, fetch)
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := mustImage(t, c, alias)
	if rebuilt.Fingerprint == image.Fingerprint || rebuilt.Properties[propBaseFingerprint] != second || !changed {
		t.Errorf("after the base changed: image %s from %s, changed %v; want a new image from %s, changed", rebuilt.Fingerprint, rebuilt.Properties[propBaseFingerprint], changed, second)
	}
	if out, err := lxc(t, "image", "show", image.Fingerprint); err == nil {
		t.Errorf("the image of the old base is still there:\n%s", out)
	}
	stream.mu.Lock()
	downloads := stream.downloads
	stream.mu.Unlock()
	if downloads != 2 {
		t.Errorf("%d downloads from the image server, want 2 (one per version)", downloads)
	}
}

func mustImage(t *testing.T, c *Cloud, alias string) api.Image {
	t.Helper()
	image, err := c.d.ImageByAlias(context.Background(), alias)
	if err != nil {
		t.Fatal(err)
	}
	return *image
}

// A base image that cannot be had is the operator's to fix, named as
// base-image with the reason, and leaves no builder; fixing base-image
// builds.
func TestBaseImageThatCannotBeHad(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	stream := newImageStream(t, "24.04")
	stream.addVersion("20261201_0000")
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // a port nothing listens on: an unreachable server
	for _, tc := range []struct {
		name, base string
		servers    map[string]string
		want       string
	}{
		{"unknown alias", "no-such-base", nil, `base-image "no-such-base" cannot be used: image not found in LXD: no local image has that alias`},
		{"unknown remote", "nowhere:24.04", nil, `base-image "nowhere:24.04" cannot be used: it names no known image server (known: images, ubuntu, ubuntu-daily, ubuntu-minimal)`},
		{"unreachable image server", "noble", map[string]string{"ubuntu": closed.URL}, `base-image "noble" cannot be used: LXD cannot fetch noble (ubuntu:24.04): Failed getting remote image info`},
		{"alias the server lacks", "ubuntu:99.04", map[string]string{"ubuntu": stream.srv.URL}, `base-image "ubuntu:99.04" cannot be used: LXD cannot fetch ubuntu:99.04: Failed getting remote image info`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(testPrefix(t))
			cfg.LXD.BaseImage, cfg.ImageServers = tc.base, tc.servers
			c := newCloud(t, cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := c.ready(ctx); err != nil {
				t.Fatal(err)
			}
			_, err := c.ensureImage(ctx, runnerTarball(t, srv), srv.RunnerVersion())
			if err == nil || !cloud.NeedsOperator(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ensureImage = %v; want the operator's error with %q", err, tc.want)
			}
			t.Logf("%v", err)
			assertNothingLeft(t, c, "")

			if tc.name != "unreachable image server" {
				return // one fix is enough: the same path as any build
			}
			c.cfg.LXD.BaseImage = baseImage
			if _, err := c.ensureImage(ctx, runnerTarball(t, srv), srv.RunnerVersion()); err != nil {
				t.Errorf("ensureImage once base-image is fixed: %v", err)
			}
		})
	}
}

// The image is rebuilt when it is older than the max age, for the base's
// security updates; the idle runners are not replaced for that (Prepare
// reports no change), and a busy runner finishes its job on the old image.
func TestImageRebuiltForAge(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	cfg := testConfig(testPrefix(t))
	cfg.LXD.ImageMaxAge = time.Hour
	c := newCloud(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fetch := func(context.Context) (string, string, error) { return runnerTarball(t, srv), srv.RunnerVersion(), nil }
	if _, err := c.Prepare(ctx, fetch); err != nil {
		t.Fatal(err)
	}
	old := c.image
	if _, err := c.Prepare(ctx, fetch); err != nil || c.image != old {
		t.Fatalf("Prepare of an image younger than the max age: %v, image %s (was %s); want it kept", err, c.image, old)
	}

	name := c.cfg.Identity.NewName()
	id, jit := register(t, srv, testRepo, name)
	if err := c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: id, Scope: runner.NewScope(srv.URL(), testRepo), JITConfig: jit}); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitRunnersOnline(ctx, testRepo, 1); err != nil {
		t.Fatal(err)
	}
	job, err := srv.AssignJob(id, fakegithub.JobSpec{Command: "while [ ! -e /tmp/go-on ]; do sleep 1; done; echo done on $RUNNER_NAME"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.WaitJobStarted(ctx, job.ID); err != nil {
		t.Fatal(err)
	}

	c.cfg.LXD.ImageMaxAge = time.Nanosecond
	changed, err := c.Prepare(ctx, fetch)
	if err != nil || changed || c.image == old {
		t.Fatalf("Prepare of an image older than the max age = %v, %v (image %s, was %s); want a new image, and no change to replace idle runners for", changed, err, c.image, old)
	}
	if out, err := lxc(t, "image", "show", old); err == nil {
		t.Errorf("the old image is still there:\n%s", out)
	}

	// A rebuild that fails leaves the runners the image they have.
	var builds []error
	c.OnImageBuild(func(d time.Duration, err error) { builds = append(builds, err) })
	current := c.image
	c.d = &failingDaemon{daemon: c.d, failPush: "/tmp/runner.tar.gz"}
	changed, err = c.Prepare(ctx, fetch)
	c.d = c.setup
	if err != nil || changed || c.image != current || len(builds) != 1 || builds[0] == nil {
		t.Errorf("Prepare with a failing rebuild = %v, %v (image %s, was %s), builds %v; want the current image kept, the failure counted", changed, err, c.image, current, builds)
	}
	// Nor is the rebuild tried again at once: the cycles would wait for it.
	if changed, err := c.Prepare(ctx, fetch); err != nil || changed || c.image != current || len(builds) != 1 {
		t.Errorf("Prepare after a failed rebuild = %v, %v (image %s, was %s), builds %v; want the image kept, no build before %s", changed, err, c.image, current, builds, c.rebuildAfter)
	}

	inst := waitStatus(t, c, name, cloud.Running, time.Second)
	mustLXC(t, "exec", inst.Name, "--", "touch", "/tmp/go-on")
	if job, err = srv.WaitJob(ctx, job.ID); err != nil || job.ExitCode != 0 || !strings.Contains(job.Output, "done on "+name) {
		t.Errorf("the busy runner's job = %+v, %v; want it done", job, err)
	}
	if err := c.Delete(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// imagesOnly is a daemon of a few local images, for resolveBase.
type imagesOnly struct {
	daemon
	aliases map[string]string // alias → fingerprint
	images  []api.Image
}

func (d imagesOnly) ImageByAlias(_ context.Context, alias string) (*api.Image, error) {
	if fp, ok := d.aliases[alias]; ok {
		return &api.Image{Fingerprint: fp}, nil
	}
	return nil, &lxdError{class: ErrNotFound, err: errors.New("not found")}
}

func (d imagesOnly) Images(context.Context) ([]api.Image, error) { return d.images, nil }

// base-image's forms: a local alias wins; an LTS name is the ubuntu:
// remote's; remote:alias names any known remote; LXD's cached copy of a
// remote base is the fingerprint the next build starts from.
func TestResolveBase(t *testing.T) {
	releases := defaultImageServers["ubuntu"]
	cached := []api.Image{
		{Fingerprint: "old", UploadedAt: time.Unix(100, 0), UpdateSource: &api.ImageSource{Server: releases, Alias: "24.04", Protocol: "simplestreams"}},
		{Fingerprint: "new", UploadedAt: time.Unix(200, 0), UpdateSource: &api.ImageSource{Server: releases, Alias: "24.04", Protocol: "simplestreams"}},
		{Fingerprint: "vm", Type: VirtualMachine, UploadedAt: time.Unix(300, 0), UpdateSource: &api.ImageSource{Server: releases, Alias: "24.04", Protocol: "simplestreams"}},
		{Fingerprint: "other-server", UploadedAt: time.Unix(400, 0), UpdateSource: &api.ImageSource{Server: "https://elsewhere", Alias: "24.04", Protocol: "simplestreams"}},
	}
	for _, tc := range []struct {
		base, name, server, alias, fingerprint, problem string
	}{
		{base: "noble", name: "noble", fingerprint: "local-noble"}, // a local alias wins over the LTS map
		{base: "jammy", name: "jammy (ubuntu:22.04)", server: releases, alias: "22.04"},
		{base: "24.04", name: "24.04 (ubuntu:24.04)", server: releases, alias: "24.04", fingerprint: "new"},
		{base: "22.04", name: "22.04 (ubuntu:22.04)", server: releases, alias: "22.04"},
		{base: "ubuntu:24.04", name: "ubuntu:24.04", server: releases, alias: "24.04", fingerprint: "new"},
		{base: "ubuntu-daily:noble", name: "ubuntu-daily:noble", server: defaultImageServers["ubuntu-daily"], alias: "noble"},
		{base: "images:debian/12", name: "images:debian/12", server: defaultImageServers["images"], alias: "debian/12"},
		{base: "focal", problem: `base-image "focal" cannot be used: image not found in LXD: no local image has that alias, and it is none of the Ubuntu releases fetched from the ubuntu: remote (22.04, 24.04, jammy, noble)`},
		{base: "nowhere:noble", problem: `base-image "nowhere:noble" cannot be used: it names no known image server`},
		{base: "ubuntu:", problem: `base-image "ubuntu:" cannot be used: it names no known image server`},
	} {
		t.Run(tc.base, func(t *testing.T) {
			c := &Cloud{cfg: Config{LXD: testConfig("x").LXD}, d: imagesOnly{aliases: map[string]string{"noble": "local-noble"}, images: cached}}
			c.cfg.LXD.BaseImage = tc.base
			got, err := c.resolveBase(context.Background())
			if tc.problem != "" {
				if err == nil || !cloud.NeedsOperator(err) || !strings.Contains(err.Error(), tc.problem) {
					t.Errorf("resolveBase = %+v, %v; want the operator's %q", got, err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			remote := tc.server != ""
			if got.name != tc.name || got.remote != remote || got.source.Server != tc.server || (remote && got.source.Alias != tc.alias) || got.fingerprint != tc.fingerprint {
				t.Errorf("resolveBase = %+v; want name %q, server %q, alias %q, fingerprint %q", got, tc.name, tc.server, tc.alias, tc.fingerprint)
			}
			if !remote && got.source.Fingerprint != tc.fingerprint {
				t.Errorf("a local base's source = %+v, want its fingerprint", got.source)
			}
		})
	}
}

// Why an image of the current recipe is rebuilt, and whether its idle
// runners are replaced for it.
func TestStaleness(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	built := func(ago time.Duration, base string) api.Image {
		return api.Image{UploadedAt: now.Add(-ago), Properties: map[string]string{propBuiltAt: now.Add(-ago).Format(time.RFC3339), propBaseFingerprint: base}}
	}
	legacy := api.Image{UploadedAt: now.Add(-7 * time.Hour)} // built before the properties were recorded
	for _, tc := range []struct {
		name    string
		image   api.Image
		base    string // the base's fingerprint now ("" unknown)
		maxAge  time.Duration
		why     string
		replace bool
	}{
		{"young, same base", built(time.Hour, "a"), "a", 0, "", false},
		{"young, base unknown", built(time.Hour, "a"), "", 0, "", false},
		{"young, new base", built(time.Hour, "a"), "b", 0, "the base image noble changed (a → b)", true},
		{"older than 6 hours", built(6*time.Hour, "a"), "a", 0, "the image is older than 6h0m0s", false},
		{"older than a max age of 30m", built(time.Hour, "a"), "a", 30 * time.Minute, "the image is older than 30m0s", false},
		{"no built-at: its upload time", legacy, "a", 0, "the image is older than 6h0m0s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Cloud{cfg: Config{LXD: testConfig("x").LXD}}
			c.cfg.LXD.ImageMaxAge = tc.maxAge
			why, replace := c.staleness(tc.image, resolvedBase{name: "noble", fingerprint: tc.base}, now)
			if (tc.why == "") != (why == "") || !strings.HasPrefix(why, tc.why) || replace != tc.replace {
				t.Errorf("staleness = %q, %v; want %q…, %v", why, replace, tc.why, tc.replace)
			}
		})
	}
}
