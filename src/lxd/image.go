package lxd

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
)

// Image properties the build records, so a later ensureImage knows what an
// image holds and which unit's images it may prune (with propModel and
// propUnit).
const (
	propVersion = "github-runner.version"
	propBase    = "github-runner.base-image"
	propRecipe  = "github-runner.recipe"
	propBuiltBy = "github-runner.built-by" // the prefix of the unit that built it
)

const builderInfix = "-img-"

// defaultImageServers are the remotes a "remote:alias" base image may name,
// as the lxc client knows them.
var defaultImageServers = map[string]string{
	"ubuntu":         "https://cloud-images.ubuntu.com/releases",
	"ubuntu-daily":   "https://cloud-images.ubuntu.com/daily",
	"ubuntu-minimal": "https://cloud-images.ubuntu.com/minimal/releases",
	"images":         "https://images.lxd.canonical.com",
}

// imageAlias is the alias of the unit's runner image of a runner version:
// "<prefix>-image-<version>". It is the unit's alone. One alias shared by
// every unit on the daemon, as "github-runner-<version>" was, is not safe:
// units whose recipes differ (base image, runner type, charm version) would
// each rebuild the image and move the alias every cycle, and a unit whose
// recipe matched would run from another's image, which that unit prunes
// when it moves on. An image costs a build per unit on a shared daemon, and
// each unit prunes only its own.
func (c *Cloud) imageAlias(version string) string {
	return c.cfg.Identity.Prefix() + "-image-" + version
}

// recipe identifies what goes into an image besides the runner version:
// the base image and the scripts. A changed recipe rebuilds the image.
func (c *Cloud) recipe(version string) string {
	h := sha256.New()
	parts := []string{c.cfg.LXD.BaseImage, c.cfg.LXD.Type, version, boot.InstallScript, boot.StartScript}
	for _, step := range boot.ImageSteps {
		parts = append(parts, step.Name, step.Script)
	}
	for _, part := range parts {
		fmt.Fprintf(h, "%d:%s", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// ensureImage makes sure the runner image for version exists and makes it
// the one Create uses. It reuses an image of the same recipe; otherwise it
// launches a builder from the base image, installs the runner tarball (as
// downloaded and verified by the GitHub client) and the start script, and
// publishes it as the unit's alias of version. The builder is always
// deleted. Older images this unit built are deleted once the new one is in
// place; runners made from them keep running (an instance does not need
// its image). An image under the alias that the unit did not build is
// never used, and never deleted either. What the previous version built
// goes once nothing can use it (see sweepLegacy).
func (c *Cloud) ensureImage(ctx context.Context, tarballPath, version string) (string, error) {
	if version == "" || strings.ContainsAny(version, "/ :") {
		return "", fmt.Errorf("cannot build runner image: invalid runner version %q", version)
	}
	c.imageMu.Lock()
	defer c.imageMu.Unlock()
	alias := c.imageAlias(version)
	recipe := c.recipe(version)
	log := c.log.With("alias", alias, "recipe", recipe)
	defer c.maybeSweepLegacy(ctx)

	base, err := c.resolveBase(ctx)
	if err != nil {
		c.Built(ctx, 0, err)
		return "", err
	}
	c.building = base
	// replace: idle runners are replaced once the new image is in place.
	// current: the image of this recipe a rebuild for a new base or for
	// its age replaces, which runners keep using while that fails.
	replace, current := false, ""
	existing, err := c.d.ImageByAlias(ctx, alias)
	switch {
	case err == nil && !c.ownsImage(*existing):
		log.Warn("the runner image's alias points at an image this unit did not build; building its own", "fingerprint", existing.Fingerprint,
			"built-by", existing.Properties[propBuiltBy], "model", existing.Properties[propModel])
	case err == nil && existing.Properties[propRecipe] == recipe:
		why, rebase := c.staleness(*existing, base, time.Now())
		if why != "" && time.Now().Before(c.rebuildAfter) {
			why = "" // the last try failed: the image serves until the next
		}
		if why == "" {
			c.useImage(existing.Fingerprint)
			log.Debug("runner image exists", "fingerprint", existing.Fingerprint)
			return alias, nil
		}
		log.Info("rebuilding the runner image: "+why, "fingerprint", existing.Fingerprint)
		replace, current = rebase, existing.Fingerprint
	case err == nil:
		log.Info("runner image was built from another recipe; rebuilding", "old-recipe", existing.Properties[propRecipe])
		replace = true
	case !errors.Is(err, ErrNotFound):
		return "", fmt.Errorf("cannot look up runner image %q: %w", alias, err)
	}

	start := time.Now()
	c.setProgress("building the runner image from base image " + base.name)
	defer c.setProgress("")
	fingerprint, err := c.buildImage(withOperationProgress(ctx, c.builderProgress(base)), tarballPath, version, recipe, log)
	if err != nil {
		c.Built(ctx, time.Since(start), err)
		if current != "" && ctx.Err() == nil {
			// An image server down at the 6-hour mark stops no runner:
			// the failure is counted (github_runner_image_builds_total)
			// and logged, and the next Prepare tries again.
			c.rebuildAfter = time.Now().Add(rebuildBackoff)
			log.Error("cannot rebuild the runner image; runners keep the current one", "fingerprint", current, "retry-after", rebuildBackoff, "error", err)
			c.useImage(current)
			return alias, nil
		}
		return "", err
	}
	if err := c.d.SetAlias(ctx, alias, fingerprint); err != nil {
		c.deleteImage(ctx, fingerprint, log)
		err = fmt.Errorf("cannot name runner image %q: %w", alias, err)
		c.Built(ctx, time.Since(start), err)
		return "", err
	}
	c.Built(ctx, time.Since(start), nil)
	c.useImage(fingerprint)
	c.rebuildAfter = time.Time{}
	if replace {
		c.mu.Lock()
		c.rebuilt = true
		c.mu.Unlock()
	}
	log.Info("runner image built", "fingerprint", fingerprint, "duration", time.Since(start).Round(time.Millisecond))
	c.pruneImages(ctx, fingerprint, log)
	return alias, nil
}

func (c *Cloud) useImage(fingerprint string) {
	c.mu.Lock()
	c.image = fingerprint
	c.mu.Unlock()
}

// buildImage runs a builder instance and publishes it.
func (c *Cloud) buildImage(ctx context.Context, tarballPath, version, recipe string, log *slog.Logger) (fingerprint string, err error) {
	tarball, err := os.Open(tarballPath)
	if err != nil {
		return "", fmt.Errorf("cannot build runner image: %w", err)
	}
	defer tarball.Close()
	source, err := c.baseImageSource()
	if err != nil {
		return "", err
	}
	c.deleteStaleBuilders(ctx)

	builder := c.cfg.Identity.Prefix() + builderInfix + randomHex(4)
	log.Info("building runner image", "builder", builder, "base", c.cfg.LXD.BaseImage)
	config := c.ownerConfig()
	config["boot.autostart"] = "false"
	if c.cfg.LXD.Type == Container {
		// As the runners have it: a build step that starts Docker (or
		// another container runtime) needs it.
		config["security.nesting"] = "true"
	}
	post := api.InstancesPost{
		Name:   builder,
		Type:   api.InstanceType(c.cfg.LXD.Type),
		Source: source,
		InstancePut: api.InstancePut{
			Profiles: []string{"default"},
			Config:   config,
			Devices:  c.runnerNIC(),
		},
	}
	if err := c.d.CreateInstance(ctx, post); err != nil {
		return "", c.builderProblem(ctx, fmt.Errorf("cannot create image builder from %q: %w", c.cfg.LXD.BaseImage, err))
	}
	defer func() {
		// Always, and with its own time: ctx may be what failed.
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
		defer cancel()
		if err := c.remove(cleanupCtx, builder); err != nil {
			log.Error("cannot delete image builder", "builder", builder, "error", err)
		}
	}()
	if err := c.d.SetState(ctx, builder, "start", false); err != nil {
		return "", fmt.Errorf("cannot start image builder: %w", err)
	}
	if err := c.waitExec(ctx, builder); err != nil {
		return "", err
	}
	c.waitCloudInit(ctx, builder, log)
	err = c.d.PushFile(ctx, builder, instanceFile{Path: "/tmp/runner.tar.gz", From: tarball, Mode: 0o600})
	if err != nil {
		return "", fmt.Errorf("cannot copy the runner tarball into the image builder: %w", err)
	}
	if err := c.d.PushFile(ctx, builder, instanceFile{Path: boot.StartScriptPath, Content: []byte(boot.StartScript), Mode: 0o755}); err != nil {
		return "", fmt.Errorf("cannot copy %s into the image builder: %w", boot.StartScriptPath, err)
	}
	steps := append([]boot.Step{{Name: "install", Script: boot.InstallScript}}, boot.ImageSteps...)
	for _, step := range steps {
		args := []string{}
		if step.Name == "install" {
			args = []string{"/tmp/runner.tar.gz", version}
		}
		if err := c.runBuildStep(ctx, builder, step, args, log); err != nil {
			return "", err
		}
	}
	if err := c.d.SetState(ctx, builder, "stop", false); err != nil {
		// A base image whose init ignores the stop signal still publishes
		// fine once stopped by force.
		if err := c.d.SetState(ctx, builder, "stop", true); err != nil {
			return "", fmt.Errorf("cannot stop image builder: %w", err)
		}
	}
	fingerprint, err = c.d.Publish(ctx, builder, map[string]string{
		"description": fmt.Sprintf("GitHub Actions runner %s on %s", version, c.cfg.LXD.BaseImage),
		propVersion:   version,
		propBase:      c.cfg.LXD.BaseImage,
		propRecipe:    recipe,
		propBuiltBy:   c.cfg.Identity.Prefix(),
		propModel:     c.cfg.Identity.Model,
		propUnit:      c.cfg.Identity.UnitName(),

		// What the rebuilds of ensureImage compare (see staleness).
		propBaseFingerprint: c.builtFrom(ctx, builder),
		propBuiltAt:         time.Now().UTC().Format(time.RFC3339),
	})
	if err != nil {
		return "", fmt.Errorf("cannot publish runner image: %w", err)
	}
	return fingerprint, nil
}

// runBuildStep pushes one script of the image build into the builder,
// runs it as root with the unit's proxies, and removes it.
func (c *Cloud) runBuildStep(ctx context.Context, builder string, step boot.Step, args []string, log *slog.Logger) error {
	path := "/tmp/github-runner-" + step.Name
	if err := c.d.PushFile(ctx, builder, instanceFile{Path: path, Content: []byte(step.Script), Mode: 0o700}); err != nil {
		return fmt.Errorf("cannot copy the %s step into the image builder: %w", step.Name, err)
	}
	start := time.Now()
	res, err := c.d.Exec(ctx, builder, append([]string{"/bin/sh", path}, args...), c.buildEnvironment())
	if err != nil {
		return fmt.Errorf("cannot run the %s step in the image builder: %w", step.Name, err)
	}
	if res.Code != 0 {
		return fmt.Errorf("cannot run the %s step in the image builder: exit status %d: %s", step.Name, res.Code, lastLines(res.Stdout+res.Stderr, 10))
	}
	log.Debug("image build step done", "step", step.Name, "duration", time.Since(start).Round(time.Millisecond))
	if _, err := c.d.Exec(ctx, builder, []string{"rm", "-f", path}, nil); err != nil {
		return fmt.Errorf("cannot clean the image builder: %w", err)
	}
	return nil
}

// buildEnvironment is the proxies for the build steps.
func (c *Cloud) buildEnvironment() map[string]string {
	env := map[string]string{}
	r := c.cfg.Runner
	for key, value := range map[string]string{"http_proxy": r.HTTPProxy, "https_proxy": r.HTTPSProxy} {
		if value != "" {
			env[key] = value
			env[strings.ToUpper(key)] = value
		}
	}
	if len(env) > 0 && r.NoProxy != "" {
		env["no_proxy"], env["NO_PROXY"] = r.NoProxy, r.NoProxy
	}
	return env
}

// baseImageSource is where the builder of the build in progress starts
// from, as ensureImage resolved base-image (see resolveBase).
func (c *Cloud) baseImageSource() (api.InstanceSource, error) {
	if c.building.source.Type == "" {
		return api.InstanceSource{}, errors.New("cannot build runner image: the base image is not resolved")
	}
	return c.building.source, nil
}

// waitExec waits until the builder runs commands.
func (c *Cloud) waitExec(ctx context.Context, instance string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for {
		res, err := c.d.Exec(ctx, instance, []string{"true"}, nil)
		if err == nil && res.Code == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot run commands in image builder %q: %v", instance, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitCloudInit waits, bounded, for the builder's first boot under
// cloud-init to end, where the base has cloud-init: the build's apt would
// otherwise race cloud-init's, and install.sh's `cloud-init clean` would
// run under it, leaving half a first boot in the image. A cloud-init that
// fails or takes too long does not fail the build: the steps say whether
// the builder is fit.
func (c *Cloud) waitCloudInit(ctx context.Context, builder string, log *slog.Logger) {
	const script = "command -v cloud-init >/dev/null 2>&1 || exit 0; timeout 300 cloud-init status --wait >/dev/null 2>&1; echo $?"
	start := time.Now()
	res, err := c.d.Exec(ctx, builder, []string{"/bin/sh", "-c", script}, nil)
	if err != nil {
		log.Warn("cannot wait for cloud-init in the image builder", "builder", builder, "error", err)
		return
	}
	if code := strings.TrimSpace(res.Stdout); code != "" {
		log.Debug("cloud-init done in the image builder", "builder", builder, "status", code, "duration", time.Since(start).Round(time.Millisecond))
	}
}

// deleteStaleBuilders removes builders a killed manager of this unit left
// behind: the caller holds imageMu, so none of the unit's is building.
// Another unit's builder, by name or by metadata, is never touched.
func (c *Cloud) deleteStaleBuilders(ctx context.Context) {
	instances, err := c.d.Instances(ctx)
	if err != nil {
		return
	}
	for _, inst := range instances {
		if c.isOwnBuilder(inst) {
			c.log.Info("deleting stale image builder", "builder", inst.Name)
			_ = c.remove(ctx, inst.Name)
		}
	}
}

// pruneImages deletes the images this unit built before keep; another
// unit's, of this model or another, are never touched.
func (c *Cloud) pruneImages(ctx context.Context, keep string, log *slog.Logger) {
	images, err := c.d.Images(ctx)
	if err != nil {
		log.Error("cannot list images to prune", "error", err)
		return
	}
	for _, image := range images {
		if image.Fingerprint == keep || !c.ownsImage(image) {
			continue
		}
		c.deleteImage(ctx, image.Fingerprint, log)
	}
}

func (c *Cloud) deleteImage(ctx context.Context, fingerprint string, log *slog.Logger) {
	if err := c.d.DeleteImage(ctx, fingerprint); err != nil {
		log.Error("cannot delete old runner image", "fingerprint", fingerprint, "error", err)
		return
	}
	log.Info("deleted old runner image", "fingerprint", fingerprint)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("cannot read random bytes: " + err.Error())
	}
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
