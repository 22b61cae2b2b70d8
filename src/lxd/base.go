package lxd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	lxdclient "github.com/canonical/lxd/client"
	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
)

var _ cloud.ProgressReporter = (*Cloud)(nil)

// More image properties the build records (see propVersion): which base
// image the builder started from, and when the image was built, for the
// rebuilds of ensureImage (see staleness).
const (
	propBaseFingerprint = "github-runner.base-fingerprint"
	propBuiltAt         = "github-runner.built-at" // RFC 3339, UTC
)

// ubuntuLTS maps the Ubuntu LTS names a base-image may be, when no local
// image has that alias, to the ubuntu: remote's alias, as the Python
// charm's LTS_IMAGE_VERSION_TAG_MAP does: the default base-image works on
// a fresh LXD host.
var ubuntuLTS = map[string]string{
	"noble": "24.04", "24.04": "24.04",
	"jammy": "22.04", "22.04": "22.04",
}

// resolvedBase is the base image a build starts from, as resolved from
// base-image without downloading anything.
type resolvedBase struct {
	// name is the base as the operator reads it: "noble",
	// "ubuntu:24.04", "noble (ubuntu:24.04)".
	name   string
	source api.InstanceSource
	// remote: the daemon fetches it from an image server (and caches it).
	remote bool
	// fingerprint is the image the next build starts from, when known
	// here: the local alias's target, or LXD's cached copy of the remote
	// image ("" before the first download, or once LXD expired it).
	fingerprint string
}

// resolveBase reads base-image: a local alias; failing that, an Ubuntu LTS
// name, fetched from the ubuntu: remote; or "remote:alias". It asks the
// local daemon only: an image server is contacted by the build, when it
// creates its builder (LXD downloads and caches the image then, and
// refreshes the cache every images.auto_update_interval).
func (c *Cloud) resolveBase(ctx context.Context) (resolvedBase, error) {
	configured := c.cfg.LXD.BaseImage
	remote, alias, hasRemote := strings.Cut(configured, ":")
	if !hasRemote {
		image, err := c.d.ImageByAlias(ctx, configured)
		switch {
		case err == nil:
			return resolvedBase{name: configured, source: api.InstanceSource{Type: "image", Fingerprint: image.Fingerprint}, fingerprint: image.Fingerprint}, nil
		case !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrImageNotFound):
			return resolvedBase{}, fmt.Errorf("cannot look up base image %q: %w", configured, err)
		}
		lts, ok := ubuntuLTS[configured]
		if !ok {
			return resolvedBase{}, baseProblem(configured, fmt.Errorf("%w: no local image has that alias, and it is none of the Ubuntu releases fetched from the ubuntu: remote (%s); name a remote image as remote:alias, e.g. ubuntu:24.04",
				ErrImageNotFound, strings.Join(sortedKeys(ubuntuLTS), ", ")))
		}
		remote, alias = "ubuntu", lts
	}
	servers := c.imageServers()
	url, ok := servers[remote]
	if !ok || alias == "" {
		return resolvedBase{}, baseProblem(configured, fmt.Errorf("it names no known image server (known: %s)", strings.Join(sortedKeys(servers), ", ")))
	}
	b := resolvedBase{
		name:   remote + ":" + alias,
		source: api.InstanceSource{Type: "image", Alias: alias, Server: url, Protocol: "simplestreams", Mode: "pull"},
		remote: true,
	}
	if !hasRemote {
		b.name = configured + " (" + b.name + ")"
	}
	b.fingerprint = c.cachedImage(ctx, url, alias)
	return b, nil
}

func (c *Cloud) imageServers() map[string]string {
	if c.cfg.ImageServers != nil {
		return c.cfg.ImageServers
	}
	return defaultImageServers
}

// cachedImage is the fingerprint of LXD's cached copy of a remote image,
// the one a create from it uses; "" if LXD has none (or the list fails:
// the base is then taken as unchanged, and the schedule rebuilds).
func (c *Cloud) cachedImage(ctx context.Context, server, alias string) string {
	images, err := c.d.Images(ctx)
	if err != nil {
		return ""
	}
	var newest *api.Image
	for i, image := range images {
		src := image.UpdateSource
		if src == nil || src.Server != server || src.Alias != alias || src.Protocol != "simplestreams" {
			continue
		}
		if image.Type != "" && image.Type != c.cfg.LXD.Type {
			continue // the same alias's image for the other instance type
		}
		if newest == nil || image.UploadedAt.After(newest.UploadedAt) {
			newest = &images[i]
		}
	}
	if newest == nil {
		return ""
	}
	return newest.Fingerprint
}

// baseProblem marks a base image that cannot be had as the operator's:
// the unit is Blocked naming base-image, with the reason.
func baseProblem(base string, err error) error {
	return &cloud.OperatorError{Err: fmt.Errorf("cannot build the runner image: base-image %q cannot be used: %w", base, err)}
}

// builderProblem is a failed create of the image builder: from a remote
// base, the fetch is what fails (an image server that is unreachable, or
// that has no such image), which is base-image's problem; a full disk or
// a daemon gone is not. LXD's words for an image server that refuses
// read as a daemon that does ("connection refused"): the daemon answering
// now tells them apart.
func (c *Cloud) builderProblem(ctx context.Context, err error) error {
	base := c.building
	if !base.remote || ctx.Err() != nil || errors.Is(err, ErrNoSpace) || errors.Is(err, ErrNoMemory) {
		return err
	}
	reason := err
	if inner := errors.Unwrap(err); inner != nil {
		reason = inner // LXD's words, without "cannot create image builder"
	}
	var classified *lxdError
	if errors.As(err, &classified) {
		reason = classified.err // without a class that misleads
	}
	if errors.Is(err, ErrUnreachable) {
		if _, probe := c.d.Images(ctx); probe != nil {
			return err
		}
	}
	return baseProblem(c.cfg.LXD.BaseImage, fmt.Errorf("LXD cannot fetch %s: %w", base.name, reason))
}

// builtFrom is the fingerprint of the image a builder was created from.
func (c *Cloud) builtFrom(ctx context.Context, builder string) string {
	inst, err := c.d.Instance(ctx, builder)
	if err != nil {
		return c.building.fingerprint
	}
	return inst.Config["volatile.base_image"]
}

// staleness says why an image of the current recipe is rebuilt, or "":
// the base image moved (a local alias to another image, or LXD's cache of
// the remote one refreshed), or the image is older than the max age (the
// base's archive has had security updates since). replace tells that idle
// runners are replaced at once: the base changed, as for a new runner
// version or recipe. An image rebuilt for its age only replaces none, as
// the Python charm's 6-hourly rebuild did not: runners are ephemeral, so
// each new one takes the new image, and a busy one is never disturbed.
func (c *Cloud) staleness(image api.Image, base resolvedBase, now time.Time) (why string, replace bool) {
	if built := image.Properties[propBaseFingerprint]; built != "" && base.fingerprint != "" && built != base.fingerprint {
		return fmt.Sprintf("the base image %s changed (%.12s → %.12s)", base.name, built, base.fingerprint), true
	}
	builtAt, err := time.Parse(time.RFC3339, image.Properties[propBuiltAt])
	if err != nil {
		builtAt = image.UploadedAt // an image built before built-at was recorded
	}
	if maxAge := c.cfg.LXD.MaxImageAge(); now.Sub(builtAt) >= maxAge {
		return fmt.Sprintf("the image is older than %s (it was built at %s): rebuilding for the base's security updates", maxAge, builtAt.UTC().Format(time.RFC3339)), false
	}
	return "", false
}

// rebuildBackoff is how long a usable image serves after a rebuild of it
// (for a new base, or its age) failed, before the next try: a rebuild runs
// in a cycle's Prepare, so one that fails slowly (an archive that times
// out) would otherwise hold every cycle's creates for its duration.
const rebuildBackoff = 30 * time.Minute

// PrepareProgress is what the image preparation in progress is doing, in
// words ("downloading base image ubuntu:24.04: rootfs: 42% (3.2MB/s)"),
// or "" (see service.Server's report, which the status shows).
func (c *Cloud) PrepareProgress() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.progress
}

func (c *Cloud) setProgress(text string) {
	c.mu.Lock()
	c.progress = text
	c.mu.Unlock()
}

// builderProgress turns the builder create's operation metadata into
// the preparation's progress: LXD tells a download in download_progress.
func (c *Cloud) builderProgress(base resolvedBase) func(map[string]any) {
	return func(meta map[string]any) {
		switch text, _ := meta["download_progress"].(string); {
		case meta == nil: // the create is over: the build goes on
			c.setProgress("building the runner image from base image " + base.name)
		case text != "":
			c.setProgress("downloading base image " + base.name + ": " + text)
		}
	}
}

// progressKey carries, in a context, what an LXD operation's metadata is
// told to while it runs (see withOperationProgress).
type progressKey struct{}

// withOperationProgress makes the long LXD operations run under ctx
// (creating an instance: a download from an image server) tell report
// their metadata as it changes.
func withOperationProgress(ctx context.Context, report func(map[string]any)) context.Context {
	return context.WithValue(ctx, progressKey{}, report)
}

// progressPoll is how often an operation's metadata is read for its
// progress (a variable for the tests).
var progressPoll = 500 * time.Millisecond

// watchOperation tells ctx's progress reporter, if any, the metadata of
// operation id until the returned stop is called, and then nil. It reads the operation
// by its id, apart from the client's Operation, which the wait updates.
func watchOperation(ctx context.Context, c lxdclient.InstanceServer, id string) (stop func()) {
	report, _ := ctx.Value(progressKey{}).(func(map[string]any))
	if report == nil || id == "" {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(progressPoll)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			op, err := call(ctx, func() (*api.Operation, error) {
				op, _, err := c.GetOperation(id)
				return op, err
			})
			if err == nil && op.Metadata != nil {
				report(op.Metadata)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		report(nil)
	}
}

func sortedKeys(m map[string]string) []string {
	out := keys(m)
	slices.Sort(out)
	return out
}
