package fakegithub

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// BusyboxPath builds a directory holding busybox's applets and nothing
// else, a PATH for the fake runner application run on the host: its
// scripts cannot lean on bash, curl, jq or GNU options, as in the runner
// image. busybox missing fails the test (tests/lxd/setup.sh installs it):
// a test that ran no runner application has tested nothing.
func BusyboxPath(tb testing.TB) string {
	tb.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		tb.Fatal("busybox is not installed (apt-get install busybox-static): the fake runner application needs its tools")
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		tb.Fatalf("cannot list busybox applets: %v", err)
	}
	dir := tb.TempDir()
	for _, applet := range strings.Fields(string(out)) {
		if err := os.Symlink(busybox, filepath.Join(dir, applet)); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}
