package lxd

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestRaiseHostLimits(t *testing.T) {
	for _, c := range []struct {
		name                string
		instances, watches  string
		wantInst, wantWatch string
	}{
		{"kernel defaults are raised", "128\n", "8192\n", "1024", "1048576"},
		{"higher values are kept", "4096\n", "2097152\n", "4096\n", "2097152\n"},
		{"one of each", "2048\n", "65536\n", "2048\n", "1048576"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			old := procSys
			procSys = dir
			t.Cleanup(func() { procSys = old })
			if err := os.MkdirAll(filepath.Join(dir, "fs/inotify"), 0o755); err != nil {
				t.Fatal(err)
			}
			write := func(name, value string) {
				if err := os.WriteFile(filepath.Join(dir, "fs/inotify", name), []byte(value), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write("max_user_instances", c.instances)
			write("max_user_watches", c.watches)
			raiseHostLimits(slog.New(slog.NewTextHandler(io.Discard, nil)))
			for name, want := range map[string]string{"max_user_instances": c.wantInst, "max_user_watches": c.wantWatch} {
				got, err := os.ReadFile(filepath.Join(dir, "fs/inotify", name))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

// A limit that cannot be read or written is left, without failing.
func TestRaiseHostLimitsUnwritable(t *testing.T) {
	old := procSys
	procSys = filepath.Join(t.TempDir(), "missing")
	t.Cleanup(func() { procSys = old })
	raiseHostLimits(slog.New(slog.NewTextHandler(io.Discard, nil)))
}
