package openstack

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// editCloud returns clouds.yaml with one cloud whose auth keys are changed
// (a "" value deletes the key).
func editCloud(t *testing.T, cloudsYAML []byte, cloudName string, auth map[string]string) (string, string) {
	t.Helper()
	var doc map[string]map[string]map[string]any
	if err := yaml.Unmarshal(cloudsYAML, &doc); err != nil {
		t.Fatal(err)
	}
	entry := doc["clouds"][cloudName]
	a := entry["auth"].(map[string]any)
	for k, v := range auth {
		if v == "" {
			delete(a, k)
		} else {
			a[k] = v
		}
	}
	out, err := yaml.Marshal(map[string]any{"clouds": map[string]any{cloudName: entry}})
	if err != nil {
		t.Fatal(err)
	}
	return string(out), a["password"].(string)
}

func connectConfig(cloudsYAML, cloudName string) Config {
	return Config{
		Identity:  runner.Identity{Model: testModel, App: "ost-connect", Unit: 0},
		OpenStack: testConfig(&bed{cloudsYAML: cloudsYAML, cloudName: cloudName}).OpenStack,
	}
}

// New connects with a password or an application credential, and tells a
// wrong password and an unreachable Keystone apart, without showing the
// password in the error or the log.
func TestConnect(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	appYAML, appName := openstacktest.AppCredCloud(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, tt := range []struct{ name, yaml, cloud string }{
		{"password", b.cloudsYAML, b.cloudName},
		{"first cloud", b.cloudsYAML, ""},
		{"application credential", string(appYAML), appName},
	} {
		c, err := New(connectConfig(tt.yaml, tt.cloud), testLogger(t))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if _, err := c.Instances(ctx); err != nil {
			t.Errorf("%s: cannot list: %v", tt.name, err)
		}
	}

	wrongYAML, wrongPassword := editCloud(t, []byte(b.cloudsYAML), b.cloudName, map[string]string{"password": "not-" + openstacktest.UniqueName("pw")})
	_, realPassword := editCloud(t, []byte(b.cloudsYAML), b.cloudName, nil)
	unreachableYAML, _ := editCloud(t, []byte(b.cloudsYAML), b.cloudName, map[string]string{"auth_url": "http://127.0.0.1:1/v3"})
	missingYAML, _ := editCloud(t, []byte(b.cloudsYAML), b.cloudName, map[string]string{"username": ""})
	for _, tt := range []struct {
		name, yaml string
		class      error
		want       string
	}{
		{"wrong password", wrongYAML, ErrUnauthorized, "(401)"},
		{"unreachable", unreachableYAML, ErrUnreachable, "127.0.0.1:1"},
		{"missing key", missingYAML, ErrCloudsYAMLIncomplete, "auth.username"},
		{"bad yaml", "clouds:\n  x: [" + realPassword, ErrCloudsYAMLSyntax, "YAML"},
	} {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		start := time.Now()
		_, err := newConnected(ctx, connectConfig(tt.yaml, b.cloudName), log)
		t.Logf("%s (%v): %v", tt.name, time.Since(start).Round(time.Millisecond), err)
		if !errors.Is(err, tt.class) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %v with %q", tt.name, err, tt.class, tt.want)
			continue
		}
		for _, pw := range []string{wrongPassword, realPassword} {
			if strings.Contains(err.Error(), pw) || strings.Contains(logs.String(), pw) {
				t.Errorf("%s: a password shows in the error or the log", tt.name)
			}
		}
	}
}
