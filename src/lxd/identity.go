package lxd

import (
	"context"
	"strings"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
)

// Everything this unit makes on the daemon carries its identity, and is
// changed or deleted only when that identity is the unit's own: runner
// instances and image builders (user.* config, as runner.Meta*), the
// denylist ACL (user.* config) and runner images (properties). Names carry
// the unit's prefix, which holds the model's tag, so two models' units of
// one name never share a resource; the metadata catches what a name alone
// cannot (a hash collision, an instance renamed or made by hand).
//
// The previous version named everything "<app>-<unit>", the same in every
// model, and wrote no model: what it made may be another model's unit's,
// still on that version. Such resources are removed only once nothing can
// be using them (see sweepLegacy and retireLegacyACL).

// ownerOf is who user.* config says an LXD object belongs to.
func ownerOf(config map[string]string) runner.Owner {
	return runner.Owner{Model: config["user."+runner.MetaModel], Unit: config["user."+runner.MetaUnit]}
}

// ownerConfig is the user.* config that names the unit as the owner of
// what it makes besides runners (image builders, the denylist ACL).
func (c *Cloud) ownerConfig() map[string]string {
	owner := c.cfg.Identity.Owner()
	return map[string]string{"user." + runner.MetaModel: owner.Model, "user." + runner.MetaUnit: owner.Unit}
}

// ownerWords names the unit for descriptions people read.
func (c *Cloud) ownerWords() string {
	return c.cfg.Identity.UnitName() + " (model " + c.cfg.Identity.Model + ")"
}

// madeByPreviousVersion tells an instance of the previous version, whoever's:
// it names a unit but no model.
func madeByPreviousVersion(inst api.Instance) bool {
	owner := ownerOf(inst.Config)
	return owner.Unit != "" && owner.Model == ""
}

// Image properties that name who built an image (besides propBuiltBy, the
// builder's prefix).
const (
	propModel = "github-runner.model"
	propUnit  = "github-runner.unit"
)

// ownsImage tells an image this unit built.
func (c *Cloud) ownsImage(image api.Image) bool {
	p := image.Properties
	return p[propBuiltBy] == c.cfg.Identity.Prefix() && p[propModel] == c.cfg.Identity.Model && p[propUnit] == c.cfg.Identity.UnitName()
}

// isLegacyImage tells an image the previous version built under this
// unit's legacy prefix: in this model or in another.
func (c *Cloud) isLegacyImage(image api.Image) bool {
	return image.Properties[propBuiltBy] == c.cfg.Identity.LegacyPrefix() && image.Properties[propModel] == ""
}

// isOwnBuilder tells an image builder of this unit: its name is of the
// unit's builder shape and its metadata names the unit.
func (c *Cloud) isOwnBuilder(inst api.Instance) bool {
	return isBuilderName(inst.Name, c.cfg.Identity.Prefix()) && ownerOf(inst.Config) == c.cfg.Identity.Owner()
}

// isLegacyBuilder tells an image builder of the previous version under the
// unit's legacy prefix: it carries no metadata at all.
func (c *Cloud) isLegacyBuilder(inst api.Instance) bool {
	return isBuilderName(inst.Name, c.cfg.Identity.LegacyPrefix()) && ownerOf(inst.Config) == runner.Owner{}
}

func isBuilderName(name, prefix string) bool {
	suffix, ok := strings.CutPrefix(name, prefix+builderInfix)
	if !ok || len(suffix) != 8 {
		return false
	}
	return strings.Trim(suffix, "0123456789abcdef") == ""
}

const (
	// legacyBuilderAge is when a builder of the previous version is dead
	// for sure: it built within one reconcile cycle, which that version
	// bounded at 15 minutes, and deleted its builder at the end.
	legacyBuilderAge = time.Hour
	// legacySweepEvery spaces the look for the previous version's
	// resources once one was kept: it costs two full listings.
	legacySweepEvery = 30 * time.Minute
)

// maybeSweepLegacy runs sweepLegacy at most every legacySweepEvery, until
// nothing of the previous version is left. The caller holds imageMu.
func (c *Cloud) maybeSweepLegacy(ctx context.Context) {
	if c.legacyDone || time.Now().Before(c.legacyNext) {
		return
	}
	c.legacyNext = time.Now().Add(legacySweepEvery)
	c.legacyDone = c.sweepLegacy(ctx, time.Now())
}

// sweepLegacy deletes what the previous version made under the unit's
// legacy prefix once nothing can be using it, and tells whether nothing
// is left:
//   - a builder older than legacyBuilderAge (no build lives that long);
//   - an image it built, once no instance on the daemon was made by the
//     previous version: its alias, "github-runner-<version>", was shared by
//     every unit of that version on the daemon, of any application and
//     model, so while one of them runs runners here it may create more from
//     it. A unit of that version with no runners at all would build the
//     image again at its next cycle.
func (c *Cloud) sweepLegacy(ctx context.Context, now time.Time) (done bool) {
	instances, err := c.d.Instances(ctx)
	if err != nil {
		c.log.Warn("cannot list instances to look for the previous version's builders and images", "error", err)
		return false
	}
	images, err := c.d.Images(ctx)
	if err != nil {
		c.log.Warn("cannot list images to look for the previous version's", "error", err)
		return false
	}
	done = true
	previousVersionRuns := false
	for _, inst := range instances {
		previousVersionRuns = previousVersionRuns || madeByPreviousVersion(inst)
		if !c.isLegacyBuilder(inst) {
			continue
		}
		if now.Sub(inst.CreatedAt) < legacyBuilderAge {
			done = false
			continue
		}
		if err := c.remove(ctx, inst.Name); err != nil {
			c.log.Warn("cannot delete a builder of the previous version", "builder", inst.Name, "error", err)
			done = false
			continue
		}
		c.log.Info("deleted a stale builder of the previous version", "builder", inst.Name)
	}
	for _, image := range images {
		if !c.isLegacyImage(image) {
			continue
		}
		if previousVersionRuns {
			c.log.Debug("keeping the previous version's runner image: runners of that version are on the daemon", "fingerprint", image.Fingerprint)
			done = false
			continue
		}
		if err := c.d.DeleteImage(ctx, image.Fingerprint); err != nil {
			c.log.Warn("cannot delete the previous version's runner image", "fingerprint", image.Fingerprint, "error", err)
			done = false
			continue
		}
		c.log.Info("deleted the previous version's runner image", "fingerprint", image.Fingerprint, "version", image.Properties[propVersion])
	}
	return done
}
