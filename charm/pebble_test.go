package charm

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newTestSupervisor(t *testing.T) *Supervisor {
	t.Helper()
	s := &Supervisor{CharmDir: t.TempDir(), StateDir: t.TempDir(), Unit: "github-runner/0"}
	if err := os.MkdirAll(filepath.Join(s.CharmDir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	return s
}

// replace puts a new file at path, as Juju's refresh does: a new inode.
func replace(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// The layer names the manager binary's digest, so a new binary is a new
// layer (and Replan restarts the service), even when the digest of the old
// one is cached.
func TestLayerFollowsTheManagerBinary(t *testing.T) {
	old := digestSettle
	digestSettle = 0 // cache even a file written just now
	t.Cleanup(func() { digestSettle = old })
	s := newTestSupervisor(t)
	manager := filepath.Join(s.CharmDir, "bin", "github-runner-manager")
	first := replace(t, manager, "manager version 1")
	layer, err := s.Layer([]byte("runners: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(layer), "GITHUB_RUNNER_MANAGER_SHA256: "+first) {
		t.Fatalf("layer does not carry the manager's digest %s:\n%s", first, layer)
	}
	if _, err := os.Stat(s.digestCachePath()); err != nil {
		t.Fatalf("no digest cache: %v", err)
	}

	// A later hook is another process: only the cache on disk remembers.
	s = &Supervisor{CharmDir: s.CharmDir, StateDir: s.StateDir, Unit: s.Unit}
	again, err := s.Layer([]byte("runners: 1\n"))
	if err != nil || string(again) != string(layer) {
		t.Fatalf("same binary, same config: layer changed (%v)", err)
	}
	second := replace(t, manager, "manager version 2") // same size
	newLayer, err := s.Layer([]byte("runners: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(newLayer), "GITHUB_RUNNER_MANAGER_SHA256: "+second) {
		t.Errorf("after the binary was replaced, the layer does not carry its digest %s:\n%s", second, newLayer)
	}
	other, err := s.Layer([]byte("runners: 2\n"))
	if err != nil || string(other) == string(newLayer) {
		t.Errorf("another config, same layer (%v)", err)
	}
}

// UpToDate is false until the layer Pebble took is on disk, and again once
// the running Pebble's binary is not the charm's.
func TestUpToDate(t *testing.T) {
	s := newTestSupervisor(t)
	replace(t, filepath.Join(s.CharmDir, "bin", "github-runner-manager"), "manager")
	pebble := replace(t, filepath.Join(s.CharmDir, "bin", "pebble"), "pebble 1")
	config := []byte("runners: 1\n")
	if ok, err := s.UpToDate(config); ok || err != nil {
		t.Fatalf("nothing applied yet: UpToDate = %v, %v", ok, err)
	}
	layer, err := s.Layer(config)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(s.layerPath()), 0o700)
	if err := s.writeLayer(layer); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.UpToDate(config); ok || err != nil {
		t.Errorf("no record of the running Pebble's binary: UpToDate = %v, %v", ok, err)
	}
	if err := s.recordStartedFrom(pebble); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.UpToDate(config); !ok || err != nil {
		t.Errorf("layer on disk and Pebble current: UpToDate = %v, %v", ok, err)
	}
	if ok, _ := s.UpToDate([]byte("runners: 2\n")); ok {
		t.Error("another config: UpToDate = true")
	}
	replace(t, filepath.Join(s.CharmDir, "bin", "pebble"), "pebble 2")
	s = &Supervisor{CharmDir: s.CharmDir, StateDir: s.StateDir, Unit: s.Unit}
	if ok, err := s.UpToDate(config); ok || err != nil {
		t.Errorf("the charm's Pebble changed: UpToDate = %v, %v", ok, err)
	}
}
