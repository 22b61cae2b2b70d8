package charm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// The relation and secret hook tools (relation-ids, relation-list,
// relation-get, relation-set, secret-get), called as ops calls them: JSON
// out, relation data in on stdin, so no value ever lands in argv.

// ErrSecretNotFound is the secret-get error for a secret that does not exist
// (or no longer does): the controller answers `secret "<uri>" not found`.
var ErrSecretNotFound = errors.New("secret not found")

// ErrSecretNotGranted is the secret-get error for a secret that exists but is
// not granted to this application (`juju grant-secret <secret> <app>` fixes
// it): the controller answers `permission denied`.
var ErrSecretNotGranted = errors.New("secret not granted to this application")

// Juju's exact texts (apiserver/facades/agent/secretsmanager getSecretContent:
// state's errors.NotFoundf("secret %q", uri) and apiservererrors.ErrPerm), as
// the tool prints them after "ERROR ".
var (
	secretNotFoundText   = regexp.MustCompile(`(?m)^(ERROR )?(secret "[^"]*"|consumer label "[^"]*") not found$`)
	secretPermissionText = regexp.MustCompile(`(?m)^(ERROR )?permission denied$`)
)

// toolError is a hook tool that exited non-zero: Stderr is what it printed,
// without the "ERROR " prefix juju/cmd adds.
type toolError struct {
	tool   string
	stderr string
	err    error
}

func (e *toolError) Error() string {
	if e.stderr != "" {
		return fmt.Sprintf("cannot run %s: %s", e.tool, e.stderr)
	}
	return fmt.Sprintf("cannot run %s: %v", e.tool, e.err)
}

func (e *toolError) Unwrap() error { return e.err }

// runInput runs a hook tool with stdin (nil: none), bounded by the
// Tools' timeout. Failures are *toolError.
func (t *Tools) runInput(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	timeout := t.Timeout
	if timeout == 0 {
		timeout = DefaultToolTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		msg = strings.TrimPrefix(msg, "ERROR ")
		return nil, &toolError{tool: name, stderr: msg, err: err}
	}
	return stdout.Bytes(), nil
}

// RelationIDs lists the relation ids ("cos-agent:3") of endpoint, sorted.
func (t *Tools) RelationIDs(ctx context.Context, endpoint string) ([]string, error) {
	out, err := t.runInput(ctx, nil, "relation-ids", "--format=json", endpoint)
	if err != nil {
		return nil, err
	}
	return decodeStrings("relation-ids", out)
}

// RelationList lists the remote units of relationID ("cos-agent:3").
func (t *Tools) RelationList(ctx context.Context, relationID string) ([]string, error) {
	out, err := t.runInput(ctx, nil, "relation-list", "-r", relationID, "--format=json")
	if err != nil {
		return nil, err
	}
	return decodeStrings("relation-list", out)
}

// RelationGet reads one bag of relationID: a unit's ("app/0"), or with app an
// application's ("app"). unitOrApp "" is Juju's default, the remote unit (or
// with app the remote application) of the hook.
func (t *Tools) RelationGet(ctx context.Context, relationID, unitOrApp string, app bool) (map[string]string, error) {
	args := []string{"-r", relationID, "--format=json"}
	if app {
		args = append(args, "--app")
	}
	args = append(args, "-")
	if unitOrApp != "" {
		args = append(args, unitOrApp)
	}
	out, err := t.runInput(ctx, nil, "relation-get", args...)
	if err != nil {
		return nil, err
	}
	return decodeStringMap("relation-get", out)
}

// RelationSet writes this unit's bag of relationID (with app, the
// application's; only the leader may). A "" value deletes the key. The data
// goes as YAML on stdin (`--file -`), never in argv. Juju commits it when the
// hook exits 0.
func (t *Tools) RelationSet(ctx context.Context, relationID string, app bool, data map[string]string) error {
	if len(data) == 0 {
		return nil
	}
	body, err := yaml.Marshal(data)
	if err != nil {
		return fmt.Errorf("cannot encode relation data: %w", err)
	}
	args := []string{"-r", relationID}
	if app {
		args = append(args, "--app")
	}
	args = append(args, "--file", "-")
	_, err = t.runInput(ctx, bytes.NewReader(body), "relation-set", args...)
	return err
}

// SecretGet reads a secret's content. The first read pins the revision this
// unit sees (and makes it track the secret, so a new revision fires
// secret-changed); refresh moves to the latest revision and pins it. A secret
// that does not exist gives an error matching ErrSecretNotFound, one not
// granted to the application ErrSecretNotGranted.
func (t *Tools) SecretGet(ctx context.Context, uri string, refresh bool) (map[string]string, error) {
	args := []string{uri, "--format=json"}
	if refresh {
		args = append(args, "--refresh")
	}
	out, err := t.runInput(ctx, nil, "secret-get", args...)
	if err != nil {
		return nil, secretError(uri, err)
	}
	return decodeStringMap("secret-get", out)
}

// secretError names the secret (its URI is not secret: it is the config
// value) and Juju's reason, and marks the two a user can fix.
func secretError(uri string, err error) error {
	var te *toolError
	if errors.As(err, &te) {
		switch {
		case secretNotFoundText.MatchString(te.stderr):
			return fmt.Errorf("cannot read secret %s: %w (%s)", uri, ErrSecretNotFound, te.stderr)
		case secretPermissionText.MatchString(te.stderr):
			return fmt.Errorf("cannot read secret %s: %w (%s)", uri, ErrSecretNotGranted, te.stderr)
		}
	}
	return fmt.Errorf("cannot read secret %s: %w", uri, err)
}

func decodeStrings(tool string, out []byte) ([]string, error) {
	var list []string
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, fmt.Errorf("cannot decode %s output: %w", tool, err)
	}
	return list, nil
}

func decodeStringMap(tool string, out []byte) (map[string]string, error) {
	var m map[string]string
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("cannot decode %s output: %w", tool, err)
	}
	if m == nil {
		m = map[string]string{}
	}
	return m, nil
}
