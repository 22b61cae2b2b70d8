package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func validFile() *File {
	return &File{
		Unit: "github-runner/0", Model: "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10", StateDir: "/var/lib/github-runner/github-runner-0",
		Runners: 3, ReconcileInterval: 5 * time.Minute,
		GitHub: GitHub{Path: "org/repo", APIURL: "https://api.github.com", Token: "ghp_SECRET", Group: "default", Labels: []string{"large"}},
		LXD:    &LXD{Type: "container", BaseImage: "noble", CPU: 2, Memory: "7GiB", Disk: "10GiB"},
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	want := validFile()
	if err := want.Write(path); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", info.Mode(), err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.GitHub.Token != "ghp_SECRET" || got.LXD.Memory != "7GiB" || got.ReconcileInterval != 5*time.Minute || got.Runners != 3 {
		t.Errorf("round trip = %+v", got)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "unit: a\ntokn: x\n", "field tokn not found"},
		{"empty", "", "the file is empty"},
		{"bad type hides value", "unit: a\nrunners: ghp_SECRET\n", "cannot unmarshal !!str <value> into int"},
		{"every problem", "unit: a\n", "model is required; state-dir is required; reconcile-interval must be at least 1m; github.path:"},
		{"both clouds", "unit: a\nlxd: {type: container}\nopenstack: {flavor: f}\n", "lxd must be set, or openstack, not both"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := Parse([]byte(test.yaml))
			if err == nil || !strings.Contains(err.Error(), test.want) {
				t.Fatalf("error %v, want it to contain %q", err, test.want)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q reveals a secret", err)
			}
		})
	}
}

func TestValuesParsers(t *testing.T) {
	sizes := map[string]int64{"1KiB": 1024, "7GiB": 7 << 30, "2TiB": 2 << 40}
	for in, want := range sizes {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "7", "7GB", "-1GiB", "1.5GiB", "0MiB", "99999999999TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	for in, want := range map[string]string{"org": "org", "owner/repo": "owner/repo", "a-b/c.d_e": "a-b/c.d_e"} {
		if p, err := ParsePath(in); err != nil || p.String() != want {
			t.Errorf("ParsePath(%q) = %v, %v", in, p, err)
		}
	}
	for _, bad := range []string{"", "/repo", "org/", "a/b/c", "-org", "org/..", "o rg"} {
		if _, err := ParsePath(bad); err == nil {
			t.Errorf("ParsePath(%q) accepted", bad)
		}
	}
}

// The charm refuses what these refuse, in option names: each rule is here
// once (the charm's tests check the option names).
func TestProblemsKeyedByField(t *testing.T) {
	tests := []struct {
		name   string
		change func(*File)
		want   Problem
	}{
		{"base image with a space", func(f *File) { f.LXD.BaseImage = "noble x" }, Problem{"lxd.base-image", "must be an image alias such as noble or ubuntu:24.04"}},
		{"runner type", func(f *File) { f.LXD.Type = "pod" }, Problem{"lxd.type", `must be "virtual-machine" or "container", not "pod"`}},
		{"cpu", func(f *File) { f.LXD.CPU = 0 }, Problem{"lxd.cpu", "must be at least 1, not 0"}},
		{"runners", func(f *File) { f.Runners = -2 }, Problem{"runners", "must be 0 or more, not -2"}},
		{"memory", func(f *File) { f.LXD.Memory = "8G" }, Problem{"lxd.memory", `"8G" is not a size like 512MiB or 10GiB (units KiB, MiB, GiB, TiB)`}},
		{"api url", func(f *File) { f.GitHub.APIURL = "http://192.0.2.1/" }, Problem{"github.api-url", `"http://192.0.2.1/" must use https (http only on a loopback host)`}},
		{"token", func(f *File) { f.GitHub.Token = "ghp_SECRET x" }, Problem{"github.token", "must hold only visible ASCII characters, no spaces"}},
		{"app key", func(f *File) {
			f.GitHub.Token, f.GitHub.App = "", &GitHubApp{ID: 1, InstallationID: 2, PrivateKey: "SECRET"}
		}, Problem{"github.app.private-key", "must be the App's RSA private key in PEM (PKCS#1 or PKCS#8)"}},
		{"clouds yaml", func(f *File) {
			f.LXD, f.OpenStack = nil, &OpenStack{CloudsYAML: "clouds: {}", Flavor: "f", Network: "n", Image: "i"}
		}, Problem{"openstack.clouds-yaml", "is not valid clouds.yaml: it has no clouds"}},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			f := validFile()
			test.change(f)
			if got := f.Problems(); len(got) != 1 || got[0] != test.want {
				t.Errorf("Problems() = %q, want [%q]", got, test.want)
			}
		})
	}
}

// The README's example config is what operators copy: it must parse.
func TestREADMEExampleParses(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "cat > /tmp/manager.yaml <<EOF2\n")
	example, _, ok2 := strings.Cut(rest, "EOF2\n")
	if !ok || !ok2 {
		t.Fatal("README.md has no example manager config")
	}
	f, err := Parse([]byte(example))
	if err != nil {
		t.Fatalf("the README's example is refused: %v", err)
	}
	if f.ReconcileInterval != 5*time.Minute || f.LXD == nil || f.Runner.Denylist[0] != "10.0.0.0/8" {
		t.Errorf("parsed = %+v", f)
	}
}
