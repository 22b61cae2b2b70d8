package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/runner"
)

func validFile() *File {
	return &File{
		Unit: "github-runner/0", Model: "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10", StateDir: "/var/lib/github-runner/github-runner-0",
		Runners: 3, ReconcileInterval: 5 * time.Minute,
		GitHub: GitHub{Path: "org/repo", APIURL: "https://api.github.com", Token: "ghp_SECRET", Group: "default", Labels: []string{"large"}},
		LXD:    &LXD{Type: "container", BaseImage: "noble", CPU: 2, Memory: 7 << 30, Disk: 10 << 30},
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
	if got.GitHub.Token != "ghp_SECRET" || got.LXD.Memory != 7<<30 || got.ReconcileInterval != 5*time.Minute || got.Runners != 3 {
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
		{"every problem", "unit: a\n", "model is required; state-dir is required; reconcile-interval must be at least 1 minute and at most 1 day; github.path:"},
		{"size not a size", "unit: a\nlxd: {memory: 8G, disk: [1]}\n", `line 2: "8G" is not a size like 512MiB or 10GiB (units KiB, MiB, GiB, TiB); line 2: is not a size like 512MiB or 10GiB`},
		{"denylist entries", "unit: a\nrunner:\n  denylist:\n  - 10.0.0.0/8\n  - fe80::/10\n  - 10.0.0.0/33\n",
			`line 5: "fe80::/10" is not an IPv4 CIDR like 10.0.0.0/8; line 6: "10.0.0.0/33" is not an IPv4 CIDR like 10.0.0.0/8`},
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
		if got, err := ParseSize(in); err != nil || got.Bytes() != want || got.String() != in {
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
		{"negative image max age", func(f *File) { f.LXD.ImageMaxAge = -time.Hour }, Problem{"lxd.image-max-age", "must not be negative, not -1h0m0s"}},
		{"runners", func(f *File) { f.Runners = -2 }, Problem{"runners", "must be 0 or more, not -2"}},
		{"no memory", func(f *File) { f.LXD.Memory = 0 }, Problem{"lxd.memory", "is required (a size like 512MiB or 10GiB)"}},
		{"interval too short", func(f *File) { f.ReconcileInterval = 59 * time.Second }, Problem{"reconcile-interval", "must be at least 1 minute and at most 1 day"}},
		{"interval too long", func(f *File) { f.ReconcileInterval = 24*time.Hour + time.Minute }, Problem{"reconcile-interval", "must be at least 1 minute and at most 1 day"}},
		{"no group", func(f *File) { f.GitHub.Group = "" }, Problem{"github.group", `must name a runner group (the default group is "default")`}},
		{"group with a space at the end", func(f *File) { f.GitHub.Group = "default " }, Problem{"github.group", `must name a runner group (the default group is "default")`}},
		{"a label holding a comma", func(f *File) { f.GitHub.Labels = []string{"a,b"} }, Problem{"github.labels", `"a,b" may only contain letters, digits, '_' and '-'`}},
		{"proxy without a scheme", func(f *File) { f.Runner.HTTPProxy = "proxy:3128" }, Problem{"runner.http-proxy", "must be an http(s) URL such as http://proxy.example.com:3128"}},
		{"https proxy not a URL", func(f *File) { f.Runner.HTTPSProxy = "http://u:SECRET@ proxy" }, Problem{"runner.https-proxy", "must be an http(s) URL such as http://proxy.example.com:3128"}},
		{"no-proxy on two lines", func(f *File) { f.Runner.NoProxy = "a\nb" }, Problem{"runner.no-proxy", "must be one line of hosts and networks, comma-separated"}},
		{"mirror over http", func(f *File) { f.Runner.DockerhubMirror = "http://mirror.example.com" }, Problem{"runner.dockerhub-mirror", "must be an https:// URL of a registry"}},
		{"mirror without a host", func(f *File) { f.Runner.DockerhubMirror = "https:///x" }, Problem{"runner.dockerhub-mirror", "must be an https:// URL of a registry"}},
		{"denylist of IPv6", func(f *File) { f.Runner.Denylist = Denylist{netip.MustParsePrefix("fe80::/10")} }, Problem{"runner.denylist", `"fe80::/10" is not an IPv4 CIDR like 10.0.0.0/8`}},
		{"state dir too long for the socket", func(f *File) { f.StateDir = "/" + strings.Repeat("d", 92) }, Problem{"state-dir",
			`"/` + strings.Repeat("d", 92) + `" is too long for the manager's socket: manager.socket in it must be at most 107 bytes`}},
		{"api url", func(f *File) { f.GitHub.APIURL = "http://192.0.2.1/" }, Problem{"github.api-url", `"http://192.0.2.1/" must use https (http only on a loopback host)`}},
		{"token", func(f *File) { f.GitHub.Token = "ghp_SECRET x" }, Problem{"github.token", "must hold only visible ASCII characters, no spaces"}},
		{"app key", func(f *File) {
			f.GitHub.Token, f.GitHub.App = "", &GitHubApp{ID: 1, InstallationID: 2, PrivateKey: "SECRET"}
		}, Problem{"github.app.private-key", "must be the App's RSA private key in PEM (PKCS#1 or PKCS#8)"}},
		{"app ids", func(f *File) {
			f.GitHub.Token, f.GitHub.App = "", &GitHubApp{ID: 1, InstallationID: 0, PrivateKey: testAppKey(t)}
		}, Problem{"github.app.installation-id", "must be the installation's numeric ID"}},
		{"max runners", func(f *File) { f.MaxRunners = -1 }, Problem{"max-runners", "must be 0 (no cap) or more, not -1"}},
		{"base above the cap", func(f *File) { f.Runners, f.MaxRunners = 3, 2 }, Problem{"max-runners", "must be 0 (no cap) or at least the base of 3 runners, not 2"}},
		{"scale set name with a space", func(f *File) { f.GitHub.ScaleSet = "linux x64" }, Problem{"github.scale-set",
			`"linux x64" may only contain letters, digits, '-', '_' and '.', and must start and end with a letter or digit`}},
		{"scale set name starting with a dot", func(f *File) { f.GitHub.ScaleSet = ".x" }, Problem{"github.scale-set",
			`".x" may only contain letters, digits, '-', '_' and '.', and must start and end with a letter or digit`}},
		{"scale set name ending with a hyphen", func(f *File) { f.GitHub.ScaleSet = "x-" }, Problem{"github.scale-set",
			`"x-" may only contain letters, digits, '-', '_' and '.', and must start and end with a letter or digit`}},
		{"scale set name too long", func(f *File) { f.GitHub.ScaleSet = strings.Repeat("n", 37) }, Problem{"github.scale-set",
			`"` + strings.Repeat("n", 37) + `" is too long: the unit's scale set, "` + strings.Repeat("n", 37) + `-0-` + testModelTag + `", must be at most 45 characters`}},
		{"scale set name too long for unit 10", func(f *File) { f.Unit, f.GitHub.ScaleSet = "github-runner/10", strings.Repeat("n", 36) }, Problem{"github.scale-set",
			`"` + strings.Repeat("n", 36) + `" is too long: the unit's scale set, "` + strings.Repeat("n", 36) + `-10-` + testModelTag + `", must be at most 45 characters`}},
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

// testModelTag is validFile's model's tag (src/runner's ModelTag).
var testModelTag = runner.Identity{Model: validFile().Model}.ModelTag()

// The longest scale-set names the rule lets through, and the cap with the
// base at it or no cap, are valid.
func TestScalingValid(t *testing.T) {
	tests := []struct {
		name   string
		change func(*File)
	}{
		{"no cap", func(f *File) { f.Runners, f.MaxRunners = 3, 0 }},
		{"cap at the base", func(f *File) { f.Runners, f.MaxRunners = 3, 3 }},
		{"cap above the base", func(f *File) { f.Runners, f.MaxRunners = 0, 20 }},
		{"longest name of unit 0", func(f *File) { f.GitHub.ScaleSet = strings.Repeat("n", 36) }},
		{"longest name of unit 10", func(f *File) { f.Unit, f.GitHub.ScaleSet = "github-runner/10", strings.Repeat("n", 35) }},
		{"every character", func(f *File) { f.GitHub.ScaleSet = "Linux_x64-2.0" }},
		{"one character", func(f *File) { f.GitHub.ScaleSet = "x" }},
	}
	for _, test := range tests {
		f := validFile()
		test.change(f)
		if got := f.Problems(); len(got) != 0 {
			t.Errorf("%s: Problems() = %q, want none", test.name, got)
		}
		// A name the rule lets through is the unit's scale set's, uncut.
		id, err := runner.ParseIdentity(f.Model, f.Unit)
		if name := f.GitHub.ScaleSet; err != nil || name != "" && !strings.HasPrefix(id.ScaleSetName(name), name+"-") {
			t.Errorf("%s: ScaleSetName(%q) = %q, %v: cut", test.name, name, id.ScaleSetName(name), err)
		}
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
	if f.ReconcileInterval != 5*time.Minute || f.LXD == nil || f.Runner.Denylist[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("parsed = %+v", f)
	}
}

// Sizes and denylists are written as the options spell them, and read
// back the same; a denylist's host bits are cleared as the option's are.
func TestTypedValuesRoundTrip(t *testing.T) {
	f := validFile()
	f.LXD.Memory, f.LXD.Disk = 1536<<20, 1<<40
	f.Runner.Denylist = Denylist{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
	data, err := yaml.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"memory: 1536MiB\n", "disk: 1TiB\n", "- 10.0.0.0/8\n", "- 192.168.1.7/32\n"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("the file does not say %q:\n%s", want, data)
		}
	}
	got, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.LXD.Memory != f.LXD.Memory || got.LXD.Disk != f.LXD.Disk || !slices.Equal(got.Runner.Denylist, f.Runner.Denylist) {
		t.Errorf("read back %+v %v, want %+v %v", got.LXD, got.Runner.Denylist, f.LXD, f.Runner.Denylist)
	}
	masked, err := Parse([]byte(strings.Replace(string(data), "- 10.0.0.0/8", "- 10.1.2.3/8", 1)))
	if err != nil || masked.Runner.Denylist[0] != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("10.1.2.3/8 reads as %v, %v; want 10.0.0.0/8", masked.Runner.Denylist, err)
	}
}

// Virtual machines need KVM: the rule is here, the host's fact is the
// caller's (the charm's and src/lxd's).
func TestProblemsOnHost(t *testing.T) {
	f := validFile()
	f.LXD.Type = "virtual-machine"
	want := []Problem{{"lxd.type", `must be "container" on this host: virtual machines need KVM (/dev/kvm)`}}
	if got := f.ProblemsOn(Host{KVM: false}); !slices.Equal(got, want) {
		t.Errorf("ProblemsOn(no KVM) = %q, want %q", got, want)
	}
	if got := f.ProblemsOn(Host{KVM: true}); len(got) != 0 {
		t.Errorf("ProblemsOn(KVM) = %q, want none", got)
	}
	f.LXD.Type = "container"
	if got := f.ProblemsOn(Host{}); len(got) != 0 {
		t.Errorf("ProblemsOn(containers, no KVM) = %q, want none", got)
	}
	if HasKVM(filepath.Join(t.TempDir(), "kvm")) {
		t.Error("HasKVM of a missing device")
	}
}

func testAppKey(t *testing.T) string {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
}
