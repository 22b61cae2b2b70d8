package harness_test

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
	"gopkg.in/yaml.v3"
)

// openStackConfig is validConfig (no runners) on the OpenStack test bed's
// cloud, with no image: a manager that reaches a real cloud drains in
// moments (one that cannot would retry each drain for a minute). It
// returns the clouds.yaml, with another cloud after the bed's (the first
// one is published), and the bed's cloud's auth map. cloudsWith makes the
// clouds.yaml with auth settings changed ("" deletes).
func openStackConfig(t *testing.T) (config map[string]any, cloudsWith func(map[string]string) string, auth map[string]string) {
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	var doc struct {
		Clouds map[string]map[string]any `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(cloudsYAML, &doc); err != nil {
		t.Fatal(err)
	}
	bed := doc.Clouds[cloudName]
	auth = map[string]string{}
	for k, v := range bed["auth"].(map[string]any) {
		auth[k] = fmt.Sprint(v)
	}
	cloudsWith = func(changes map[string]string) string {
		cloud := maps.Clone(bed)
		a := maps.Clone(auth)
		for k, v := range changes {
			if a[k] = v; v == "" {
				delete(a, k)
			}
		}
		cloud["auth"] = a
		out, err := yaml.Marshal(map[string]any{"clouds": map[string]any{
			cloudName: cloud,
			"zz-other": map[string]any{"auth": map[string]string{"auth_url": "http://127.0.0.1:9/v3", "username": "x", "password": "y",
				"project_name": "z", "user_domain_name": "d", "project_domain_name": "d"}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	config, _ = withFakeGitHub(t)
	config["openstack-clouds-yaml"] = cloudsWith(nil)
	config["openstack-flavor"] = openstacktest.FlavorName
	config["openstack-network"] = openstacktest.NetworkName
	return config, cloudsWith, auth
}

// managerFile reads the config file the charm wrote for the manager.
func managerFile(t *testing.T, u *harness.Unit) *config.File {
	t.Helper()
	f, err := config.Read(filepath.Join(u.StateDir(), "config.yaml"))
	if err != nil {
		t.Fatalf("cannot read the manager's config: %v", err)
	}
	return f
}

// authOnly is the auth keys of a unit bag (Juju adds its own addresses).
func authOnly(bag map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range bag {
		if !slices.Contains([]string{"ingress-address", "egress-subnets", "private-address"}, k) {
			out[k] = v
		}
	}
	return out
}

func TestImageRelationOnOpenStack(t *testing.T) {
	config, cloudsWith, imageAuth := openStackConfig(t)
	password := imageAuth["password"]
	u := harness.New(t, harness.Options{App: "ci-runners", Leader: true})
	u.SetConfig(config)
	u.Deploy()
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "provide an image: set openstack-image or relate to an image builder") {
		t.Fatalf("status with no image at all = %+v, want blocked asking for one", s)
	}

	t.Log("related, the builder has no image yet: Waiting; the unit's bag has the first cloud's auth map")
	id := u.Relate("image", "image-builder", nil, map[string]map[string]string{"image-builder/0": {}})
	if s := u.Status(); s.Status != "waiting" || !strings.Contains(s.Message, "waiting for the image builder's first image") {
		t.Errorf("status before the first image = %+v, want waiting for it", s)
	}
	if got := authOnly(u.LocalUnitData(id)); !maps.Equal(got, imageAuth) {
		t.Errorf("the unit's bag = %v, want the first cloud's auth map %v", got, imageAuth)
	}

	t.Log("the builder's image: the manager's image, its tags among the labels")
	// The bed's image, then an ID Glance does not have (nothing is made).
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	first, second := openstacktest.LookupFixtures(t, provider, eo).ImageID, "6f9b2c1e-0000-4000-8000-000000000002"
	if r := u.SetRemoteUnitData(id, "image-builder/0", map[string]string{"id": first, "tags": "noble, arm64"}); r.Code != 0 {
		t.Fatalf("image-relation-changed: exit %d: %s", r.Code, r.Stderr)
	}
	f := managerFile(t, u)
	if f.OpenStack == nil || f.OpenStack.Image != first {
		t.Fatalf("the manager's image = %+v, want %s", f.OpenStack, first)
	}
	wantLabels := []string{"self-hosted", "linux", "arm64", "ci-runners", openstacktest.FlavorName, "noble", "large", "gpu"}
	if got := f.GitHub.RunnerLabels(); !slices.Equal(got, wantLabels) {
		t.Errorf("runner labels = %v, want %v", got, wantLabels)
	}
	u.Hook("update-status")
	if s := u.Status(); s.Status == "blocked" || strings.Contains(s.Message, "image") {
		t.Errorf("status with the bed's image = %+v, want neither blocked nor about the image", s)
	}

	t.Log("openstack-image set too: the relation wins")
	if r := u.Configure(map[string]any{"openstack-image": "runner-image"}); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	if f := managerFile(t, u); f.OpenStack.Image != first {
		t.Errorf("the manager's image with openstack-image set = %s, want the relation's %s", f.OpenStack.Image, first)
	}

	t.Log("a new image from the builder")
	u.SetRemoteUnitData(id, "image-builder/0", map[string]string{"id": second, "tags": "noble,arm64,gpu-driver"})
	if f := managerFile(t, u); f.OpenStack.Image != second || !slices.Contains(f.GitHub.RunnerLabels(), "gpu-driver") {
		t.Errorf("after the builder's new image: image %s labels %v, want %s with gpu-driver", f.OpenStack.Image, f.GitHub.RunnerLabels(), second)
	}

	t.Log("new credentials in the clouds.yaml reach the builder; keys gone from it are deleted")
	rotated := cloudsWith(map[string]string{"password": password + "-rotated", "trust_id": "t1"})
	if r := u.Configure(map[string]any{"openstack-clouds-yaml": rotated}); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	want := maps.Clone(imageAuth)
	want["password"], want["trust_id"] = password+"-rotated", "t1"
	if got := authOnly(u.LocalUnitData(id)); !maps.Equal(got, want) {
		t.Errorf("the unit's bag after the clouds.yaml changed = %v, want %v", got, want)
	}

	if r := u.Configure(map[string]any{"openstack-clouds-yaml": cloudsWith(nil)}); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	if got := authOnly(u.LocalUnitData(id)); !maps.Equal(got, imageAuth) {
		t.Errorf("the unit's bag after a key left the clouds.yaml = %v, want %v", got, imageAuth)
	}

	t.Log("the relation removed: openstack-image again")
	if r := u.Unrelate(id); r.Code != 0 {
		t.Fatalf("image-relation-broken: exit %d: %s", r.Code, r.Stderr)
	}
	if f := managerFile(t, u); f.OpenStack.Image != "runner-image" || slices.Contains(f.GitHub.RunnerLabels(), "gpu-driver") {
		t.Errorf("after the relation went: image %s labels %v, want runner-image without the tags", f.OpenStack.Image, f.GitHub.RunnerLabels())
	}
	assertNoSecret(t, u)
	for _, l := range u.Logs() {
		if strings.Contains(l.Message, password) {
			t.Errorf("the OpenStack password leaked into the log: %q", l.Message)
		}
	}
	for _, s := range u.StatusHistory() {
		if strings.Contains(s.Message, password) {
			t.Errorf("the OpenStack password leaked into a status: %q", s.Message)
		}
	}
}

// The relation with no image, when openstack-image names one: the relation
// still wins, so the unit waits for the builder's image.
func TestImageRelationWaitsEvenWithOpenStackImage(t *testing.T) {
	u := harness.New(t, harness.Options{Leader: true})
	config, _, _ := openStackConfig(t)
	config["openstack-image"] = "runner-image"
	u.SetConfig(config)
	u.Deploy()
	u.Relate("image", "image-builder", nil, map[string]map[string]string{"image-builder/0": {"tags": "noble"}})
	if s := u.Status(); s.Status != "waiting" || !strings.Contains(s.Message, "waiting for the image builder's first image") {
		t.Errorf("status = %+v, want waiting for the builder's image", s)
	}
	// Other problems come first: Blocked names them.
	if r := u.Configure(map[string]any{"openstack-flavor": ""}); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "openstack-flavor is required") || strings.Contains(s.Message, "openstack-image") {
		t.Errorf("status with no flavor = %+v, want blocked naming the flavor only", s)
	}
}

func TestImageRelationRefusedOnLXD(t *testing.T) {
	config, _ := withFakeGitHub(t)
	u := harness.New(t, harness.Options{Leader: true})
	u.SetConfig(config)
	u.Deploy()
	if s := u.Status(); s.Status == "blocked" {
		t.Fatalf("status before the relation = %+v", s)
	}
	id := u.Relate("image", "image-builder", nil, map[string]map[string]string{"image-builder/0": {"id": "6f9b2c1e-0000-4000-8000-000000000001", "tags": "noble"}})
	s := u.Status()
	if s.Status != "blocked" || !strings.Contains(s.Message, "the image relation is for OpenStack runners and these are LXD instances: remove it (juju remove-relation github-runner image-builder)") {
		t.Errorf("status with the relation on LXD = %+v, want blocked asking to remove it", s)
	}
	if got := authOnly(u.LocalUnitData(id)); len(got) != 0 {
		t.Errorf("an LXD unit published %v", got)
	}
	if r := u.Unrelate(id); r.Code != 0 {
		t.Fatalf("image-relation-broken: exit %d: %s", r.Code, r.Stderr)
	}
	if s := u.Status(); s.Status == "blocked" {
		t.Errorf("status once the relation is gone = %+v, want not blocked", s)
	}
}

// The clouds.yaml in a Juju secret (openstack-clouds-yaml-secret-id): the
// unit is still an OpenStack one, and the builder gets the secret's auth map.
func TestImageRelationWithCloudsYAMLInASecret(t *testing.T) {
	config, cloudsWith, imageAuth := openStackConfig(t)
	u := harness.New(t, harness.Options{Leader: true})
	uri := u.AddSecret(map[string]string{"clouds-yaml": cloudsWith(nil)})
	u.GrantSecret(uri)
	delete(config, "openstack-clouds-yaml")
	config["openstack-clouds-yaml-secret-id"] = uri
	u.SetConfig(config)
	u.Deploy()
	if s := u.Status(); s.Status != "blocked" || !strings.Contains(s.Message, "provide an image") {
		t.Fatalf("status with no image = %+v, want blocked asking for one", s)
	}
	id := u.Relate("image", "image-builder", nil, map[string]map[string]string{"image-builder/0": {}})
	if s := u.Status(); s.Status != "waiting" || !strings.Contains(s.Message, "waiting for the image builder's first image") {
		t.Errorf("status before the first image = %+v, want waiting for it", s)
	}
	if got := authOnly(u.LocalUnitData(id)); !maps.Equal(got, imageAuth) {
		t.Errorf("the unit's bag = %v, want the secret's first cloud's auth map %v", got, imageAuth)
	}
}
