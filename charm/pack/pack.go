// Package pack builds the charm archive Juju deploys: the Go binaries, the
// three YAML files Juju reads, a manifest naming the bases, and the licence,
// zipped with the file modes Juju's extractor keeps.
package pack

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Options says what to build.
type Options struct {
	SourceDir string // the repository root
	OutDir    string // where the .charm goes
	Arch      string // Go architecture: amd64 or arm64
	Version   string // shown by `juju status` and printed by the binaries
}

// binaries are the Go programs in the archive: path in the archive → Go package.
var binaries = []struct{ name, pkg, versionVar string }{
	{"dispatch", "./hooks", "github.com/canonical/github-runner-charm/charm.Version"},
	{"bin/github-runner-manager", "./src/cmd/github-runner-manager", "main.version"},
	{"bin/pebble", "github.com/canonical/pebble/cmd/pebble", ""},
}

// yamlFiles are copied verbatim from the source tree.
var yamlFiles = []string{"metadata.yaml", "config.yaml", "actions.yaml"}

// ubuntuChannel is the Ubuntu release the charm runs on.
const ubuntuChannel = "24.04"

// FileName is the archive's name for arch, as charmcraft names it.
func FileName(arch string) string {
	return "github-runner_ubuntu@" + ubuntuChannel + "-" + arch + ".charm"
}

// Build compiles the binaries and writes the archive; it returns its path.
func Build(ctx context.Context, opts Options) (string, error) {
	work, err := os.MkdirTemp("", "charm-pack-")
	if err != nil {
		return "", fmt.Errorf("cannot create build directory: %w", err)
	}
	defer os.RemoveAll(work)
	for _, b := range binaries {
		if err := goBuild(ctx, opts, filepath.Join(work, b.name), b.pkg, b.versionVar); err != nil {
			return "", err
		}
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("cannot create %s: %w", opts.OutDir, err)
	}
	out := filepath.Join(opts.OutDir, FileName(opts.Arch))
	if err := writeArchive(out, opts, work); err != nil {
		return "", err
	}
	return out, nil
}

func goBuild(ctx context.Context, opts Options, out, pkg, versionVar string) error {
	// -s -w: no symbol tables; the charm is downloaded to every unit.
	ldflags := "-s -w"
	if versionVar != "" {
		ldflags += " -X " + versionVar + "=" + opts.Version
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = opts.SourceDir
	// Static binaries: the unit's machine may have another libc than ours.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+opts.Arch)
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cannot build %s: %v\n%s", pkg, err, output)
	}
	return nil
}

// manifest is what charmcraft writes; Juju reads only the bases.
func manifest(arch string) []byte {
	return []byte(fmt.Sprintf(`analysis:
  attributes:
  - name: language
    result: go
  - name: framework
    result: unknown
bases:
- name: ubuntu
  channel: "%s"
  architectures: [%s]
`, ubuntuChannel, arch))
}

type member struct {
	name string
	mode os.FileMode
	data func() (io.ReadCloser, error)
}

func fileMember(name, path string, mode os.FileMode) member {
	return member{name, mode, func() (io.ReadCloser, error) { return os.Open(path) }}
}

func bytesMember(name string, data []byte) member {
	return member{name, 0o644, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

func writeArchive(out string, opts Options, binDir string) error {
	members := []member{bytesMember("manifest.yaml", manifest(opts.Arch))}
	for _, name := range yamlFiles {
		members = append(members, fileMember(name, filepath.Join(opts.SourceDir, name), 0o644))
	}
	members = append(members,
		fileMember("LICENSE", filepath.Join(opts.SourceDir, "LICENSE"), 0o644),
		bytesMember("version", []byte(opts.Version+"\n")))
	for _, b := range binaries {
		// Juju's extractor keeps the zip entry's mode and does not fix
		// dispatch: without 0755 every hook would fail to start.
		members = append(members, fileMember(b.name, filepath.Join(binDir, b.name), 0o755))
	}

	tmp := out + ".tmp"
	if err := writeZip(tmp, members); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("cannot write %s: %w", out, err)
	}
	return nil
}

func writeZip(path string, members []member) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", path, err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	for _, m := range members {
		if err := addMember(zw, m); err != nil {
			return err
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return f.Close()
}

func addMember(zw *zip.Writer, m member) error {
	src, err := m.data()
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", m.name, err)
	}
	defer src.Close()
	header := &zip.FileHeader{Name: m.name, Method: zip.Deflate, Modified: time.Unix(0, 0).UTC()}
	header.SetMode(m.mode)
	w, err := zw.CreateHeader(header)
	if err != nil {
		return fmt.Errorf("cannot add %s: %w", m.name, err)
	}
	if _, err := io.Copy(w, src); err != nil {
		return fmt.Errorf("cannot add %s: %w", m.name, err)
	}
	return nil
}

// GitVersion describes the source tree for the version file, or "dev".
func GitVersion(ctx context.Context, dir string) string {
	cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
	cmd.Dir = dir
	out, err := cmd.Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "dev"
}
