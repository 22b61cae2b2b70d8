package openstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
)

// The image build (the seed's OpenstackRunnerManager.build_image): with
// openstack-base-image and no other image source, Prepare builds the
// runner image in the cloud. A builder server "<prefix>-img-<hex>" boots
// the base image with user-data that downloads the runner application and
// checks its SHA-256, runs the same scripts as the LXD build (install,
// then boot.ImageSteps) and powers off; its snapshot is the image,
// "<prefix>-image-<version>-<arch>", with the Glance properties below.
// The builder is deleted whatever happens. An image of the unit with the
// same name and recipe is reused; the unit's older ones are deleted once
// no server uses them. The charm never logs in to the builder: the guest
// says it is done only by powering off, and a build that fails does not
// (its reason is on the console), so the charm's bounded wait fails.

// Glance properties of a runner image the unit built (with runner.MetaModel
// and runner.MetaUnit, as its servers carry them): what it holds, and whose
// it is to reuse and to prune.
const (
	propVersion = "github-runner.version"
	propArch    = "github-runner.arch"
	propRecipe  = "github-runner.recipe"
	propBuiltBy = "github-runner.built-by" // the unit's prefix
)

// builderInfix names builders "<prefix>-img-<8 hex>"; the engine never
// takes one for a runner (a runner is "<prefix>-<8 hex>").
const builderInfix = "-img-"

// metaRole marks a builder's Nova metadata, beside the unit's identity.
const (
	metaRole    = "github-runner-role"
	roleBuilder = "image-builder"
)

// Defaults of the build's bounds. A stock cloud image boots, installs
// Docker and the tools, and powers off in 5-15 minutes on a usual cloud;
// a snapshot of a 10 GiB disk uploads in minutes.
const (
	DefaultBuildTimeout    = 40 * time.Minute
	DefaultSnapshotTimeout = 20 * time.Minute
)

// ErrBaseImageNotFound: openstack-base-image names no active image.
var ErrBaseImageNotFound = cloud.NewOperatorError("OpenStack base image (openstack-base-image) not found")

// builds tells whether Prepare builds the runner image: no image is given
// (neither openstack-image nor the image relation) and a base image is.
func (c *Cloud) builds() bool {
	return c.cfg.OpenStack.Image == "" && c.cfg.OpenStack.BaseImage != ""
}

// SetRunnerSource is told by the manager's FetchRunner where the runner
// application it verified came from (cloud.RunnerSourceUser).
func (c *Cloud) SetRunnerSource(src cloud.RunnerSource) {
	c.mu.Lock()
	c.source = src
	c.mu.Unlock()
}

var (
	_ cloud.ImageBuilder     = (*Cloud)(nil)
	_ cloud.RunnerSourceUser = (*Cloud)(nil)
)

// imageName is the unit's runner image of a runner version and
// architecture.
func imageName(prefix, version, arch string) string {
	return prefix + "-image-" + version + "-" + arch
}

// recipe identifies what goes into an image besides its name: the base
// image (its ID, so a base re-uploaded under its name rebuilds) and the
// scripts. A changed recipe rebuilds the image.
func recipe(baseID, version, arch string) string {
	h := sha256.New()
	parts := []string{baseID, version, arch, boot.InstallScript, boot.StartScript, imageBuildTemplateText}
	for _, step := range boot.ImageSteps {
		parts = append(parts, step.Name, step.Script)
	}
	for _, part := range parts {
		fmt.Fprintf(h, "%d:%s", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// imageProperties are the Glance properties of the unit's image.
func (c *Cloud) imageProperties(version, arch, recipe string) map[string]string {
	return map[string]string{
		propVersion:      version,
		propArch:         arch,
		propRecipe:       recipe,
		propBuiltBy:      c.cfg.Identity.Prefix(),
		runner.MetaModel: c.cfg.Identity.Model,
		runner.MetaUnit:  c.cfg.Identity.UnitName(),
	}
}

func property(image images.Image, key string) string {
	s, _ := image.Properties[key].(string)
	return s
}

// ownsImage tells the unit's own images: built by its prefix, in its model,
// by its unit. Another unit's image, of this model or another, never is.
func (c *Cloud) ownsImage(image images.Image) bool {
	return property(image, propBuiltBy) == c.cfg.Identity.Prefix() &&
		property(image, runner.MetaModel) == c.cfg.Identity.Model &&
		property(image, runner.MetaUnit) == c.cfg.Identity.UnitName()
}

var hexPattern = regexp.MustCompile(`^[0-9a-f]+$`)

// ownsBuilder tells the unit's builder servers: its name shape and its
// metadata both.
func (c *Cloud) ownsBuilder(srv servers.Server) bool {
	suffix, ok := strings.CutPrefix(srv.Name, c.cfg.Identity.Prefix()+builderInfix)
	return ok && len(suffix) == 8 && hexPattern.MatchString(suffix) &&
		ownerOf(srv.Metadata) == c.cfg.Identity.Owner() && srv.Metadata[metaRole] == roleBuilder
}

// reusable picks, of the images the project sees, the unit's active image
// of name and recipe (the newest, should there be several).
func (c *Cloud) reusable(all []images.Image, name, recipe string) *images.Image {
	var found *images.Image
	for i, image := range all {
		if image.Name != name || image.Status != images.ImageStatusActive || !c.ownsImage(image) || property(image, propRecipe) != recipe {
			continue
		}
		if found == nil || image.CreatedAt.After(found.CreatedAt) {
			found = &all[i]
		}
	}
	return found
}

// prunable is which of the unit's images to delete now that keep is the
// runner image: all but keep and those a server still boots from (the
// previous image, while runners made from it live); other units' images
// never.
func (c *Cloud) prunable(all []images.Image, keep string, inUse map[string]bool) []images.Image {
	var out []images.Image
	for _, image := range all {
		if image.ID == keep || inUse[image.ID] || !c.ownsImage(image) {
			continue
		}
		out = append(out, image)
	}
	return out
}

// ensureBuiltImage makes sure of the unit's runner image for the runner
// application fetch returns, building it if need be, and returns it.
// The caller holds prepareMu and has resolved r's flavor, network and
// security group.
func (c *Cloud) ensureBuiltImage(ctx context.Context, fetch cloud.FetchRunner, r *resources) (*images.Image, error) {
	if fetch == nil {
		return nil, errors.New("cannot build the runner image: no runner application to build it with")
	}
	// The manager's fetch downloads and verifies the tarball, and tells
	// SetRunnerSource where it came from: a wrong checksum stops here,
	// before any builder is made.
	_, version, err := fetch(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	src := c.source
	c.mu.Unlock()
	if src.URL == "" || src.Version != version || src.SHA256 == "" || src.Arch == "" {
		return nil, fmt.Errorf("cannot build the runner image: the manager did not say where runner %s is downloaded from", version)
	}
	if version == "" || strings.ContainsAny(version, "/ :") || strings.ContainsAny(src.Arch, "/ :") {
		return nil, fmt.Errorf("cannot build the runner image: invalid runner version %q or architecture %q", version, src.Arch)
	}
	base, err := c.findImage(ctx, c.cfg.OpenStack.BaseImage)
	if err != nil {
		if errors.Is(err, ErrImageNotFound) {
			return nil, classify(ErrBaseImageNotFound, nil, "%s", strings.TrimPrefix(err.Error(), ErrImageNotFound.Error()+": "))
		}
		return nil, err
	}
	name := imageName(c.cfg.Identity.Prefix(), version, src.Arch)
	rec := recipe(base.ID, version, src.Arch)
	log := c.log.With("image", name, "recipe", rec)
	all, err := c.api.Images(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot list OpenStack images: %w", err)
	}
	if found := c.reusable(all, name, rec); found != nil {
		c.pruneImages(ctx, found.ID, log)
		return found, nil
	}
	start := time.Now()
	built, err := c.buildImage(ctx, base, r, src, rec, name, log)
	c.Built(ctx, time.Since(start), err)
	if err != nil {
		return nil, err
	}
	log.Info("runner image built", "image-id", built.ID, "duration", time.Since(start).Round(time.Millisecond))
	c.pruneImages(ctx, built.ID, log)
	return built, nil
}

// buildImage boots a builder, waits for it to power off, snapshots it and
// waits for the snapshot to be active. The builder is deleted on every
// path, and a snapshot that did not become the image is too.
func (c *Cloud) buildImage(ctx context.Context, base *images.Image, r *resources, src cloud.RunnerSource, rec, name string, log *slog.Logger) (*images.Image, error) {
	c.deleteStaleBuilders(ctx)
	builder := c.cfg.Identity.Prefix() + builderInfix + randomHex(4)
	encoded, err := c.builderUserData(builder, src)
	if err != nil {
		return nil, err
	}
	log = log.With("builder", builder)
	log.Info("building runner image", "base-image", base.Name, "base-image-id", base.ID)
	configDrive := true
	metadata := map[string]string{
		runner.MetaModel: c.cfg.Identity.Model, runner.MetaUnit: c.cfg.Identity.UnitName(), metaRole: roleBuilder,
		runner.MetaCreatedAt: time.Now().UTC().Format(time.RFC3339),
	}
	defer func() {
		// Always, and with its own time: ctx may be what failed.
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.DeleteTimeout+apiTimeout)
		defer cancel()
		if err := c.deleteBuilders(cleanupCtx, builder); err != nil {
			log.Error("cannot delete the image builder", "error", err)
		}
	}()
	srv, err := c.api.CreateServer(ctx, servers.CreateOpts{
		Name: builder, ImageRef: base.ID, FlavorRef: r.flavorID,
		Networks:       []servers.Network{{UUID: r.networkID}},
		SecurityGroups: []string{r.securityGroupID},
		Metadata:       metadata,
		UserData:       []byte(encoded),
		ConfigDrive:    &configDrive,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot build the runner image: cannot create image builder %q: %w", builder, err)
	}
	if err := c.waitShutoff(ctx, srv.ID); err != nil {
		return nil, fmt.Errorf("cannot build the runner image: image builder %q %w", builder, err)
	}
	props := c.imageProperties(src.Version, src.Arch, rec)
	props["description"] = fmt.Sprintf("GitHub Actions runner %s (%s) on %s", src.Version, src.Arch, base.Name)
	imageID, err := c.api.CreateImage(ctx, srv.ID, servers.CreateImageOpts{Name: name, Metadata: props})
	if err != nil {
		return nil, fmt.Errorf("cannot build the runner image: cannot snapshot image builder %q: %w", builder, err)
	}
	done := false
	defer func() {
		if done {
			return
		}
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), apiTimeout)
		defer cancel()
		if err := c.api.DeleteImage(cleanupCtx, imageID); err != nil && !errors.Is(err, errNotFound) {
			log.Error("cannot delete the snapshot of a failed build", "image-id", imageID, "error", err)
		}
	}()
	if err := c.waitImageActive(ctx, imageID); err != nil {
		return nil, fmt.Errorf("cannot build the runner image: snapshot %q of image builder %q %w", name, builder, err)
	}
	// A cloud's snapshot may drop the properties createImage was given
	// (libvirt's upload replaces them), and createImage takes no tags:
	// Glance gets both again now that the image is active.
	opts := images.UpdateOpts{images.ReplaceImageTags{NewTags: []string{src.Version, src.Arch}}}
	for _, key := range sortedKeys(props) {
		opts = append(opts, images.UpdateImageProperty{Op: images.AddOp, Name: key, Value: props[key]})
	}
	if err := c.api.UpdateImage(ctx, imageID, opts); err != nil {
		return nil, fmt.Errorf("cannot build the runner image: cannot set the properties of image %q: %w", name, err)
	}
	image, err := c.api.Image(ctx, imageID)
	if err != nil {
		return nil, fmt.Errorf("cannot build the runner image: cannot read back image %q: %w", name, err)
	}
	done = true
	return image, nil
}

// waitShutoff waits, within BuildTimeout, for the builder to power itself
// off: the guest's word that the build is done. The error completes
// "image builder X ...".
func (c *Cloud) waitShutoff(ctx context.Context, id string) error {
	timeout := time.After(c.cfg.BuildTimeout)
	last := "unknown"
	for {
		srv, err := c.api.Server(ctx, id)
		switch {
		case err == nil:
			last = srv.Status
			switch srv.Status {
			case "SHUTOFF", "STOPPED":
				return nil
			case "ERROR":
				return fmt.Errorf("is in ERROR: %s", faultMessage(srv.Fault))
			}
		case errors.Is(err, errNotFound):
			return errors.New("was deleted while it was building")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("was still %s when the build was cut short: %w", last, ctx.Err())
		case <-timeout:
			return fmt.Errorf("did not power off within %v (it is %s): a build step failed or is slow; its console log says which", c.cfg.BuildTimeout, last)
		case <-time.After(2 * pollInterval):
		}
	}
}

// waitImageActive waits, within SnapshotTimeout, for Glance to have the
// snapshot active. The error completes "snapshot X of image builder Y ...".
func (c *Cloud) waitImageActive(ctx context.Context, id string) error {
	timeout := time.After(c.cfg.SnapshotTimeout)
	last := "unknown"
	for {
		image, err := c.api.Image(ctx, id)
		switch {
		case err == nil:
			last = string(image.Status)
			switch image.Status {
			case images.ImageStatusActive:
				return nil
			case images.ImageStatusKilled, images.ImageStatusDeleted, images.ImageStatusPendingDelete, images.ImageStatusDeactivated:
				return fmt.Errorf("is %s", image.Status)
			}
		case errors.Is(err, errNotFound):
			return errors.New("was deleted before it was active")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("was still %s when the build was cut short: %w", last, ctx.Err())
		case <-timeout:
			return fmt.Errorf("is still %s after %v, not active", last, c.cfg.SnapshotTimeout)
		case <-time.After(2 * pollInterval):
		}
	}
}

// deleteStaleBuilders deletes the builders a killed manager of this unit
// left behind: the caller holds prepareMu, so none of the unit's is
// building. Another unit's builder, by name or by metadata, is never
// touched.
func (c *Cloud) deleteStaleBuilders(ctx context.Context) {
	if err := c.deleteBuilders(ctx, ""); err != nil {
		c.log.Warn("cannot delete stale image builders", "error", err)
	}
}

// deleteBuilders deletes the unit's builder named name, or every builder
// of the unit when name is "".
func (c *Cloud) deleteBuilders(ctx context.Context, name string) error {
	pattern := "^" + regexp.QuoteMeta(c.cfg.Identity.Prefix()+builderInfix)
	if name != "" {
		pattern = "^" + regexp.QuoteMeta(name) + "$"
	}
	list, err := c.api.Servers(ctx, pattern)
	if err != nil {
		return fmt.Errorf("cannot list image builders: %w", err)
	}
	var errs []error
	for _, srv := range list {
		if !c.ownsBuilder(srv) || (name != "" && srv.Name != name) {
			continue
		}
		if err := c.deleteServer(ctx, srv); err != nil {
			errs = append(errs, fmt.Errorf("cannot delete image builder %q (%s): %w", srv.Name, srv.ID, err))
		}
	}
	return errors.Join(errs...)
}

// pruneImages deletes the unit's images but keep and those a server of the
// project still boots from. Failures are warnings: the next Prepare tries
// again.
func (c *Cloud) pruneImages(ctx context.Context, keep string, log *slog.Logger) {
	all, err := c.api.Images(ctx)
	if err != nil {
		log.Warn("cannot list images to prune", "error", err)
		return
	}
	inUse, err := c.imagesInUse(ctx)
	if err != nil {
		log.Warn("cannot list servers to prune images", "error", err)
		return
	}
	for _, image := range c.prunable(all, keep, inUse) {
		if err := c.api.DeleteImage(ctx, image.ID); err != nil && !errors.Is(err, errNotFound) {
			log.Warn("cannot delete an old runner image", "old-image", image.Name, "old-image-id", image.ID, "error", err)
			continue
		}
		log.Info("deleted an old runner image", "old-image", image.Name, "old-image-id", image.ID)
	}
}

// imagesInUse is the IDs of the images the project's servers boot from.
func (c *Cloud) imagesInUse(ctx context.Context) (map[string]bool, error) {
	list, err := c.api.Servers(ctx, "")
	if err != nil {
		return nil, err
	}
	inUse := map[string]bool{}
	for _, srv := range list {
		if id, ok := srv.Image["id"].(string); ok {
			inUse[id] = true
		}
	}
	return inUse, nil
}

// teardownImages deletes the unit's builders and images, for a unit that
// goes away (Teardown, which has checked no runner of the unit is left).
func (c *Cloud) teardownImages(ctx context.Context) error {
	if err := c.deleteBuilders(ctx, ""); err != nil {
		return err
	}
	all, err := c.api.Images(ctx)
	if err != nil {
		return fmt.Errorf("cannot list OpenStack images: %w", err)
	}
	inUse, err := c.imagesInUse(ctx)
	if err != nil {
		return fmt.Errorf("cannot list OpenStack servers: %w", err)
	}
	var errs []error
	for _, image := range c.prunable(all, "", inUse) {
		if err := c.api.DeleteImage(ctx, image.ID); err != nil && !errors.Is(err, errNotFound) {
			errs = append(errs, fmt.Errorf("cannot delete runner image %q (%s): %w", image.Name, image.ID, err))
			continue
		}
		c.log.Info("runner image deleted", "image", image.Name, "image-id", image.ID)
	}
	return errors.Join(errs...)
}

//go:embed image_build.sh.tmpl
var imageBuildTemplateText string

var imageBuildTemplate = template.Must(template.New("image-build").Funcs(template.FuncMap{"quote": config.ShellQuote}).Parse(imageBuildTemplateText))

// stepDelimiter ends each script's here-document in the builder's
// user-data; builderUserData checks no script holds it.
const stepDelimiter = "GITHUB_RUNNER_IMAGE_STEP"

type imageBuildInput struct {
	Name, Version, Arch  string
	URL, URLWithoutQuery string
	Token, SHA256        string
	Log                  string
	Proxy                []string // NAME='value', quoted
	Steps                []boot.Step
	AllSteps             []boot.Step // install, then Steps
	StepDelimiter        string
	StartScript          string
	StartScriptPath      string
}

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// builderUserData renders the builder's user-data, base64 for Nova. It may
// hold GitHub's temporary download token, so, like a runner's, it travels
// only in Nova's user_data and on the config drive.
func (c *Cloud) builderUserData(name string, src cloud.RunnerSource) (string, error) {
	u, err := url.Parse(src.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", errors.New("cannot build the runner image: GitHub lists an unusable download URL")
	}
	if !sha256Pattern.MatchString(src.SHA256) {
		return "", errors.New("cannot build the runner image: GitHub lists a malformed sha256_checksum")
	}
	stripped := *u
	stripped.RawQuery, stripped.User = "", nil
	in := imageBuildInput{
		Name: name, Version: src.Version, Arch: src.Arch, URL: src.URL, URLWithoutQuery: stripped.String(),
		Token: src.Token, SHA256: src.SHA256, Log: "/var/log/github-runner-image-build.log",
		Proxy: c.buildProxy(), Steps: boot.ImageSteps, StepDelimiter: stepDelimiter,
		StartScript: boot.StartScript, StartScriptPath: boot.StartScriptPath,
	}
	in.AllSteps = append([]boot.Step{{Name: "install", Script: boot.InstallScript}}, boot.ImageSteps...)
	for _, step := range in.AllSteps {
		if strings.Contains(step.Script, stepDelimiter) || !stepNamePattern.MatchString(step.Name) {
			return "", fmt.Errorf("cannot build the runner image: the %s step cannot travel in user-data", step.Name)
		}
	}
	var b bytes.Buffer
	if err := imageBuildTemplate.Execute(&b, in); err != nil {
		return "", fmt.Errorf("cannot render the image builder's user-data: %w", err)
	}
	encoded := base64.StdEncoding.EncodeToString(b.Bytes())
	if len(encoded) > maxUserData {
		return "", fmt.Errorf("cannot build the runner image: the builder's user-data is %d bytes in base64, more than Nova's %d", len(encoded), maxUserData)
	}
	return encoded, nil
}

var stepNamePattern = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)

// buildProxy is the unit's proxies for the build steps, as shell
// assignments (the same variables the LXD build sets).
func (c *Cloud) buildProxy() []string {
	r := c.cfg.Runner
	var out []string
	add := func(key, value string) {
		out = append(out, key+"="+config.ShellQuote(value), strings.ToUpper(key)+"="+config.ShellQuote(value))
	}
	if r.HTTPProxy != "" {
		add("http_proxy", r.HTTPProxy)
	}
	if r.HTTPSProxy != "" {
		add("https_proxy", r.HTTPSProxy)
	}
	if len(out) > 0 && r.NoProxy != "" {
		add("no_proxy", r.NoProxy)
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("cannot read random bytes: " + err.Error())
	}
	return hex.EncodeToString(b)
}
