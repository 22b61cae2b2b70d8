package charm

import (
	"slices"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
)

func TestImageTags(t *testing.T) {
	for in, want := range map[string][]string{"": nil, "noble,x64": {"noble", "x64"}, " jammy , arm64,,": {"jammy", "arm64"}} {
		if got := imageTags(in); !slices.Equal(got, want) {
			t.Errorf("imageTags(%q) = %v, want %v", in, got, want)
		}
	}
}

// The labels config.sh would give (self-hosted, linux, the architecture),
// the Python charm's extras (the application; the base image or the
// flavor; the image's tags), then the labels option, per cloud.
func TestPlatformLabels(t *testing.T) {
	defer func(arch string) { machineArch = arch }(machineArch)
	lxd, err := ParseSettings(with(map[string]any{"labels": "gpu", "base-image": "noble"}))
	if err != nil {
		t.Fatal(err)
	}
	remote := lxd
	remote.BaseImage = "ubuntu:24.04"
	openstack, err := ParseSettings(with(map[string]any{"labels": "gpu", "openstack-clouds-yaml": testCloudsYAML,
		"openstack-flavor": "runner-small", "openstack-network": "n", "openstack-image": "i"}))
	if err != nil {
		t.Fatal(err)
	}
	tagged := openstack
	tagged.ImageTags = []string{"jammy", "arm64"}
	dotted := openstack
	dotted.OpenStack = &OpenStack{CloudsYAML: testCloudsYAML, Flavor: "m1.small", Network: "n", Image: "i"}
	tests := []struct {
		name, arch string
		s          Settings
		want       []string
	}{
		{"LXD on amd64", "amd64", lxd, []string{"self-hosted", "linux", "x64", "ci-runners", "noble", "gpu"}},
		{"LXD on arm64", "arm64", lxd, []string{"self-hosted", "linux", "arm64", "ci-runners", "noble", "gpu"}},
		{"LXD, remote image: a version is no label", "amd64", remote, []string{"self-hosted", "linux", "x64", "ci-runners", "gpu"}},
		{"OpenStack, no tags: the machine's architecture", "amd64", openstack, []string{"self-hosted", "linux", "x64", "ci-runners", "runner-small", "gpu"}},
		{"OpenStack, the tags' architecture", "amd64", tagged, []string{"self-hosted", "linux", "arm64", "ci-runners", "runner-small", "jammy", "gpu"}},
		{"OpenStack, a flavor that is no label", "amd64", dotted, []string{"self-hosted", "linux", "x64", "ci-runners", "gpu"}},
		{"a machine of no runner architecture", "s390x", lxd, []string{"self-hosted", "linux", "ci-runners", "noble", "gpu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			machineArch = tt.arch
			f, err := managerConfig(tt.s, testModel, "ci-runners/0", "/var/lib/github-runner/ci-runners-0", Proxy{})
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Validate(); err != nil {
				t.Fatalf("the charm wrote a config the service refuses: %v", err)
			}
			if got := f.GitHub.RunnerLabels(); !slices.Equal(got, tt.want) {
				t.Errorf("runner labels = %v, want %v", got, tt.want)
			}
		})
	}
}

// A new image (the relation's new id) or new tags drain the idle runners,
// as a change of labels does.
func TestDrainBeforeImageChanges(t *testing.T) {
	base := func() *config.File {
		return &config.File{GitHub: config.GitHub{Path: "o/r", Token: "t", Group: "default", PlatformLabels: []string{"x64", "app", "noble"}},
			OpenStack: &config.OpenStack{Image: "0b6e2a0e-1111-4c5e-9a0b-000000000001", Flavor: "f"}}
	}
	tests := []struct {
		name   string
		change func(*config.File)
		drain  bool
	}{
		{"nothing", func(*config.File) {}, false},
		{"a new image id", func(f *config.File) { f.OpenStack.Image = "0b6e2a0e-1111-4c5e-9a0b-000000000002" }, true},
		{"new tags", func(f *config.File) { f.GitHub.PlatformLabels = []string{"x64", "app", "noble", "gpu-driver"} }, true},
		{"the flavor", func(f *config.File) { f.GitHub.PlatformLabels = []string{"x64", "app", "large"} }, true},
	}
	for _, tt := range tests {
		next := base()
		tt.change(next)
		if drain, busyToo := drainBefore(base(), next); drain != tt.drain || busyToo {
			t.Errorf("%s: drain %v busy %v, want %v false", tt.name, drain, busyToo, tt.drain)
		}
	}
}
