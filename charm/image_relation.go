package charm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/canonical/github-runner-charm/src/config"
)

// The image relation (interface github_runner_image_v0) with
// github-runner-image-builder: the builder's units publish the Glance ID of
// the image they built last (id) and its tags (tags: "noble,x64"); this
// unit publishes the first cloud's auth map of its clouds.yaml, each key as
// a string of its own, so the builder uploads into the runners' project (the
// Python charm's contract). With OpenStack runners the relation's image wins
// over openstack-image; LXD runners refuse the relation.
const imageEndpoint = "image"

// imageNeeded is the problem of OpenStack runners with no image source.
const imageNeeded = "provide an image: set openstack-image or relate to an image builder (or set openstack-base-image to build one)"

// WaitingError is a configuration that lacks only what a related
// application has yet to publish: the unit waits (Waiting status), and the
// running manager keeps its last configuration.
type WaitingError struct{ Message string }

func (e *WaitingError) Error() string { return e.Message }

// imageRelation is what the image relation says: the relation, and the
// image of its first unit (by name) that published one.
type imageRelation struct {
	ID, RemoteApp string
	ImageID       string
	Tags          []string
}

// readImageRelation reads the image relation (the endpoint's limit is 1:
// the first relation is the one); nil when there is none.
func (c *Charm) readImageRelation(ctx context.Context) (*imageRelation, []Relation, error) {
	rels, err := c.relations(ctx, imageEndpoint)
	if err != nil || len(rels) == 0 {
		return nil, nil, err
	}
	rel := rels[0]
	out := &imageRelation{ID: rel.ID, RemoteApp: rel.RemoteApp}
	units := slices.Sorted(maps.Keys(rel.Units))
	for _, unit := range units {
		if id := strings.TrimSpace(rel.Units[unit]["id"]); id != "" {
			out.ImageID, out.Tags = id, imageTags(rel.Units[unit]["tags"])
			break
		}
	}
	return out, rels, nil
}

// imageTags reads the builder's comma-separated tags, blanks left out.
func imageTags(s string) []string {
	var tags []string
	for _, field := range strings.Split(s, ",") {
		if tag := strings.TrimSpace(field); tag != "" {
			tags = append(tags, tag)
		}
	}
	return tags
}

// withImageRelation applies the image relation to what ParseSettings made
// of raw (s, err). With OpenStack runners the relation's image replaces
// openstack-image (the settings are parsed again with it) and its tags are
// the runners' labels too; a relation whose builder has published no image
// yet is a *WaitingError, unless the configuration has other problems. With
// LXD runners the relation is a problem. OpenStack with neither image source
// is the problem imageNeeded. In a hook, the relation gets this unit's auth
// map (see publishImageAuth).
func (c *Charm) withImageRelation(ctx context.Context, raw map[string]any, s Settings, err error) (Settings, error) {
	rel, rels, rerr := c.readImageRelation(ctx)
	if rerr != nil {
		return Settings{}, rerr
	}
	// The clouds.yaml may be openstack-clouds-yaml-secret-id's (rawString).
	cloudsYAML := rawString(raw, "openstack-clouds-yaml")
	openstack := cloudsYAML != ""
	if rel == nil {
		if openstack && rawString(raw, "openstack-image") == "" && rawString(raw, "openstack-base-image") == "" {
			err = replaceProblem(err, "openstack-image is required", imageNeeded)
		}
		return s, err
	}
	if !openstack {
		problem := fmt.Sprintf("the image relation is for OpenStack runners and these are LXD instances: remove it (juju remove-relation %s %s)",
			unitApp(c.Unit), orUnknown(rel.RemoteApp))
		var invalid *InvalidConfigError
		if errors.As(err, &invalid) {
			invalid.Problems = append(invalid.Problems, problem)
			return Settings{}, invalid
		} else if err != nil {
			return Settings{}, err
		}
		return Settings{}, &InvalidConfigError{Problems: []string{problem}}
	}
	if hookName(c.Getenv) != "" {
		// An action only reads; the hooks keep the relation's data.
		if perr := c.publishImageAuth(ctx, rels, cloudsYAML); perr != nil {
			return Settings{}, perr
		}
	}
	withImage := maps.Clone(raw)
	withImage["openstack-image"] = rel.ImageID
	if rel.ImageID == "" {
		withImage["openstack-image"] = "image-to-come" // checks the rest; never used
	}
	s, err = ParseSettings(withImage)
	if err != nil {
		return Settings{}, err
	}
	if rel.ImageID == "" {
		return Settings{}, &WaitingError{Message: fmt.Sprintf("waiting for the image builder's first image (relation %s with %s)", rel.ID, orUnknown(rel.RemoteApp))}
	}
	s.ImageTags = rel.Tags
	return s, nil
}

func orUnknown(app string) string {
	if app == "" {
		return "the image builder"
	}
	return app
}

// replaceProblem replaces problem old of an *InvalidConfigError by new.
func replaceProblem(err error, old, new string) error {
	var invalid *InvalidConfigError
	if errors.As(err, &invalid) {
		for i, p := range invalid.Problems {
			if p == old {
				invalid.Problems[i] = new
			}
		}
	}
	return err
}

// authKeys are the auth settings of a clouds.yaml a unit may have
// published: one that is gone from the clouds.yaml is deleted from the
// relation (Juju's own keys of the bag, ingress-address and the like, are
// never touched).
var authKeys = []string{
	"auth_url", "username", "user_id", "password", "project_name", "project_id", "tenant_name", "tenant_id",
	"user_domain_name", "user_domain_id", "project_domain_name", "project_domain_id", "domain_name", "domain_id",
	"application_credential_id", "application_credential_name", "application_credential_secret", "token",
	"system_scope", "default_domain", "trust_id",
}

// publishImageAuth writes the first cloud's auth map of the clouds.yaml
// into this unit's data of every image relation, where it is missing or
// differs, through relation-set's stdin (no value in argv or logs). The
// builder reads the credential there: whoever can read the relation's data
// (the builder's charm, the model's admins) can read it, as with the
// Python charm. A clouds.yaml that does not parse publishes nothing (its
// problem blocks the unit).
func (c *Charm) publishImageAuth(ctx context.Context, rels []Relation, cloudsYAML string) error {
	parsed, err := config.ParseCloudsYAML(cloudsYAML, "")
	if err != nil {
		return nil
	}
	auth := parsed.Auth
	for _, rel := range rels {
		mine, err := c.Tools.RelationGet(ctx, rel.ID, c.Unit, false)
		if err != nil {
			return fmt.Errorf("cannot read this unit's data in relation %s: %w", rel.ID, err)
		}
		changes := map[string]string{}
		for k, v := range auth {
			if mine[k] != v {
				changes[k] = v
			}
		}
		for _, k := range authKeys {
			if _, ok := auth[k]; !ok && mine[k] != "" {
				changes[k] = "" // relation-set deletes it
			}
		}
		if len(changes) == 0 {
			continue
		}
		if err := c.Tools.RelationSet(ctx, rel.ID, false, changes); err != nil {
			return fmt.Errorf("cannot write the OpenStack credentials into relation %s: %w", rel.ID, err)
		}
		keys := slices.Collect(maps.Keys(changes))
		sort.Strings(keys)
		c.Log.Info("published the OpenStack auth settings to the image builder", "relation", rel.ID, "keys", strings.Join(keys, ","))
	}
	return nil
}
