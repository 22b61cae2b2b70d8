package charm

import (
	"strings"
	"testing"
)

// openstack-base-image is an image source: with it alone the settings are
// good and the manager's config asks for a build; with neither image
// source it is no help, and an image given wins in the manager's config
// (src/openstack builds only without one).
func TestOpenStackBaseImage(t *testing.T) {
	openstack := map[string]any{"openstack-clouds-yaml": testCloudsYAML, "openstack-flavor": "m1.small", "openstack-network": "runners"}
	for _, tc := range []struct {
		name                string
		image, base         string
		problem             string
		wantImage, wantBase string
	}{
		{"a base image alone", "", "ubuntu-24.04", "", "", "ubuntu-24.04"},
		{"an image and a base image", "runner-noble", "ubuntu-24.04", "", "runner-noble", "ubuntu-24.04"},
		{"neither", "", "", "openstack-image is required", "", ""},
		{"a base image with a trailing space, trimmed as every option", "", "ubuntu ", "", "", "ubuntu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := with(openstack)
			raw["openstack-image"], raw["openstack-base-image"] = tc.image, tc.base
			s, err := ParseSettings(raw)
			if tc.problem != "" {
				if err == nil || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("ParseSettings = %v, want the problem %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f, err := managerConfig(s, "model-uuid", "github-runner/0", "/var/lib/state", Proxy{})
			if err != nil {
				t.Fatal(err)
			}
			if f.OpenStack == nil || f.OpenStack.Image != tc.wantImage || f.OpenStack.BaseImage != tc.wantBase {
				t.Errorf("manager config openstack = %+v, want image %q, base image %q", f.OpenStack, tc.wantImage, tc.wantBase)
			}
		})
	}
}
