package charm

import (
	"path/filepath"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
)

// configure returns early only for the same config: the one it wrote and
// reads back must count as the same (an empty denylist comes back as none),
// and any change as another.
func TestSameConfig(t *testing.T) {
	s, err := ParseSettings(with(map[string]any{"runner-type": "container"}))
	if err != nil {
		t.Fatal(err)
	}
	made, err := managerConfig(s, testModel, "github-runner/0", t.TempDir(), Proxy{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := made.Write(path); err != nil {
		t.Fatal(err)
	}
	read, err := config.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !sameConfig(read, made) {
		t.Errorf("the config read back is not the same as the one written:\n%+v\n%+v", read, made)
	}
	changed := *made
	changed.Runners++
	if sameConfig(read, &changed) {
		t.Error("a config with another runner count is the same")
	}
}
