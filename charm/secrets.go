package charm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/canonical/github-runner-charm/src/config"
)

// secretOption is a config option naming a Juju user secret (`juju
// add-secret`) one of whose fields stands in for a plain option: the token,
// the App's private key and clouds.yaml then never sit in the model's
// config, which anyone who can run `juju config` reads. The option names
// and fields are the Python charm's.
type secretOption struct {
	option string // token-secret-id
	field  string // github-token
	plain  string // token: the compatibility fallback the secret wins over
}

var secretBackedOptions = []secretOption{
	{option: "token-secret-id", field: "github-token", plain: "token"},
	{option: "github-app-private-key-secret-id", field: "private-key", plain: "github-app-private-key"},
	{option: "openstack-clouds-yaml-secret-id", field: "clouds-yaml", plain: "openstack-clouds-yaml"},
}

// secretReader reads a secret's content: the charm's Tools (secret-get).
type secretReader interface {
	SecretGet(ctx context.Context, uri string, refresh bool) (map[string]string, error)
}

// secretValue is what resolveSecrets leaves in config-get's output in
// place of a plain option's value when its secret option is set: the
// secret's field, or why it could not be read. ParseSettings reads it as
// the plain option (configReader.str), naming the secret option in any
// problem with it.
type secretValue struct {
	option  string // the secret option the value came from
	value   string
	problem string // why there is no value; it names the option and the fix, never a value
}

// resolveSecrets reads every secret option that is set from its secret, at
// its latest revision (--refresh: the unit then tracks the secret, so a new
// revision fires secret-changed, which configures again), and puts the
// field's value in place of the plain option's in raw. A secret that does
// not exist, is not granted to the application, or has no such field is a
// problem (the unit is Blocked; the plain option is not used instead: the
// operator asked for the secret). Any other failure of secret-get is an
// error: the hook fails and Juju retries it.
func resolveSecrets(ctx context.Context, secrets secretReader, app string, raw map[string]any) error {
	for _, o := range secretBackedOptions {
		ref, ok := raw[o.option].(string)
		if !ok || strings.TrimSpace(ref) == "" {
			continue // unset; a value of another type is ParseSettings' to report
		}
		v := secretValue{option: o.option}
		uri, err := secretURI(ref)
		if err != nil {
			v.problem = fmt.Sprintf("%s %v", o.option, err)
			raw[o.plain] = v
			continue
		}
		content, err := secrets.SecretGet(ctx, uri, true)
		switch {
		case errors.Is(err, ErrSecretNotFound):
			v.problem = fmt.Sprintf("%s names %s, which does not exist: create it with `juju add-secret <name> %s=...` and set %s to the URI it prints",
				o.option, uri, o.field, o.option)
		case errors.Is(err, ErrSecretNotGranted):
			v.problem = fmt.Sprintf("%s names %s, which is not granted to %s: run `juju grant-secret %s %s`", o.option, uri, app, uri, app)
		case err != nil:
			return fmt.Errorf("cannot read %s's secret: %w", o.option, err)
		default:
			value, has := content[o.field]
			if !has || strings.TrimSpace(value) == "" {
				v.problem = fmt.Sprintf("%s names %s, which has no %s field: run `juju update-secret %s %s=...`", o.option, uri, o.field, uri, o.field)
			}
			v.value = value
		}
		raw[o.plain] = v
	}
	return nil
}

// secretXID is the ID part of a Juju secret URI (an xid: 20 characters of
// base32hex, lower case).
var secretXID = regexp.MustCompile(`^[0-9a-v]{20}$`)

// secretURI is the secret a secret option names, as secret-get takes it:
// the URI `juju add-secret` prints (secret:<id>, or the long form
// secret://<model-uuid>/<id>), or the bare ID, as the Python charm takes
// it. The error never quotes the option's value (an operator may paste the
// secret itself by mistake).
func secretURI(ref string) (string, error) {
	ref = strings.TrimSpace(ref)
	id := ref
	if rest, ok := strings.CutPrefix(ref, "secret:"); ok {
		id = rest
		if long, ok := strings.CutPrefix(rest, "//"); ok {
			_, id, _ = strings.Cut(long, "/")
		}
	}
	if !secretXID.MatchString(id) {
		return "", errors.New("must be a Juju secret's URI, such as secret:d1dbdk0dn2vs79lqg7og, as `juju add-secret` prints it")
	}
	if strings.HasPrefix(ref, "secret:") {
		return ref, nil
	}
	return "secret:" + id, nil
}

// secretGrantee is the application of a unit name ("github-runner/0"),
// which `juju grant-secret` takes.
func secretGrantee(unit string) string {
	app, _, _ := strings.Cut(unit, "/")
	return app
}

// secretFixPending tells whether a secret option is set and the settings
// are valid now but not what the manager was given: Juju tells the unit
// nothing when the operator grants it a secret, so update-status applies
// the fix a Blocked unit asked for. (Without a secret option, every fix is
// a config change, which config-changed applies.)
func (c *Charm) secretFixPending(ctx context.Context) bool {
	raw, err := c.Tools.ConfigGet(ctx)
	if err != nil {
		return false
	}
	set := false
	for _, o := range secretBackedOptions {
		if ref, ok := raw[o.option].(string); ok && strings.TrimSpace(ref) != "" {
			set = true
		}
	}
	if !set {
		return false
	}
	s, err := c.readSettings(ctx)
	if err != nil {
		return false
	}
	next, err := managerConfig(s, c.Getenv("JUJU_MODEL_UUID"), c.Unit, c.StateDir, modelProxy(c.Getenv))
	if err != nil {
		return false
	}
	data, err := os.ReadFile(c.Supervisor.ConfigPath())
	if err != nil {
		return true // never configured: the secret was what blocked it
	}
	previous, err := config.Parse(data)
	return err != nil || !sameConfig(previous, next)
}

// rawString is a string option's value in config-get's output once
// resolveSecrets has run: a secret option's value (secretValue) stands in
// for its plain option's, so raw["openstack-clouds-yaml"].(string) is empty
// when openstack-clouds-yaml-secret-id gives it. Prefer the settings
// (Settings.OpenStack.CloudsYAML); this is for code that reads raw.
func rawString(raw map[string]any, key string) string {
	switch v := raw[key].(type) {
	case string:
		return strings.TrimSpace(v)
	case secretValue:
		return strings.TrimSpace(v.value)
	}
	return ""
}
