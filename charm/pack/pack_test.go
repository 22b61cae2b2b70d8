package pack_test

import (
	"archive/zip"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	jujucharm "github.com/juju/charm/v12"

	"github.com/canonical/github-runner-charm/charm/pack"
)

// buildOnce packs the charm for this test binary; Go's build cache makes
// every build after the first take seconds.
func build(t *testing.T) string {
	t.Helper()
	path, err := pack.Build(context.Background(), pack.Options{
		SourceDir: "../..",
		OutDir:    t.TempDir(),
		Arch:      runtime.GOARCH,
		Version:   "test-1",
	})
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func TestArchiveIsAcceptedByJuju(t *testing.T) {
	path := build(t)
	if filepath.Base(path) != "github-runner_ubuntu@24.04-"+runtime.GOARCH+".charm" {
		t.Errorf("archive name = %s", filepath.Base(path))
	}

	// ReadCharm runs CheckMeta, as `juju deploy ./x.charm` does.
	ch, err := jujucharm.ReadCharm(path)
	if err != nil {
		t.Fatalf("Juju's parser refuses the archive: %v", err)
	}
	if got := jujucharm.MetaFormat(ch); got != jujucharm.FormatV2 {
		t.Errorf("metadata format = %v, want v2 (bases from manifest.yaml)", got)
	}
	bases := ch.Manifest().Bases
	if len(bases) != 1 || bases[0].Name != "ubuntu" || bases[0].Channel.Track != "24.04" ||
		len(bases[0].Architectures) != 1 || bases[0].Architectures[0] != runtime.GOARCH {
		t.Errorf("bases = %+v, want ubuntu 24.04 on %s", bases, runtime.GOARCH)
	}
	meta := ch.Meta()
	if meta.Name != "github-runner" || meta.Subordinate {
		t.Errorf("name %q subordinate %v", meta.Name, meta.Subordinate)
	}
	wantRelations := map[string]string{"cos-agent": "cos_agent", "debug-ssh": "debug-ssh", "image": "github_runner_image_v0"}
	for name, iface := range wantRelations {
		rel, ok := meta.CombinedRelations()[name]
		if !ok || rel.Interface != iface {
			t.Errorf("relation %s = %+v, want interface %s", name, rel, iface)
		}
	}
	if meta.Provides["cos-agent"].Role != jujucharm.RoleProvider || meta.Requires["image"].Role != jujucharm.RoleRequirer ||
		meta.Requires["debug-ssh"].Role != jujucharm.RoleRequirer {
		t.Errorf("relation roles wrong: provides %v requires %v", meta.Provides, meta.Requires)
	}
	if v := ch.(*jujucharm.CharmArchive).Version(); v != "test-1" {
		t.Errorf("version = %q", v)
	}
}

func TestArchiveMembersAndModes(t *testing.T) {
	path := build(t)
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	modes := map[string]os.FileMode{}
	for _, f := range zr.File {
		modes[f.Name] = f.Mode().Perm()
	}
	want := map[string]os.FileMode{
		"manifest.yaml": 0o644, "metadata.yaml": 0o644, "config.yaml": 0o644, "actions.yaml": 0o644,
		"LICENSE": 0o644, "version": 0o644,
		"dispatch": 0o755, "bin/pebble": 0o755, "bin/github-runner-manager": 0o755,
	}
	for name, mode := range want {
		if got, ok := modes[name]; !ok || got != mode {
			t.Errorf("%s: mode %v present %v, want %v", name, got, ok, mode)
		}
	}
	if len(modes) != len(want) {
		names := make([]string, 0, len(modes))
		for n := range modes {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Errorf("archive holds %v, want exactly %d members", names, len(want))
	}
}

func TestExpandedBinariesRun(t *testing.T) {
	path := build(t)
	archive, err := jujucharm.ReadCharmArchive(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// ExpandTo is the extraction Juju's deployer uses; it keeps zip modes.
	if err := archive.ExpandTo(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dispatch", "bin/pebble", "bin/github-runner-manager"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode()&0o111 != 0o111 {
			t.Errorf("%s is %v after ExpandTo, want executable", name, info.Mode())
		}
	}
	out, err := exec.Command(filepath.Join(dir, "bin/github-runner-manager"), "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "test-1" {
		t.Errorf("github-runner-manager --version = %q, %v", out, err)
	}
	out, err = exec.Command(filepath.Join(dir, "bin/pebble"), "version", "--client").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "v1.19.2") {
		t.Errorf("pebble version = %q, %v", out, err)
	}
	// Outside Juju (no JUJU_DISPATCH_PATH), dispatch refuses with a usage error.
	cmd := exec.Command(filepath.Join(dir, "dispatch"))
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err = cmd.CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 2 || !strings.Contains(string(out), "JUJU_DISPATCH_PATH") {
		t.Errorf("dispatch outside Juju: %v %q, want exit 2 naming JUJU_DISPATCH_PATH", err, out)
	}
}
