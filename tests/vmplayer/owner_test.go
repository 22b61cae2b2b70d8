package vmplayer

import (
	"os/exec"
	"strconv"
	"testing"
)

// TestOwnerAlive: a player deletes only what a dead process made, so players of test
// binaries running at the same time never delete each other's containers.
func TestOwnerAlive(t *testing.T) {
	child := exec.Command("true")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := strconv.Itoa(child.Process.Pid) + "/" + processStart(child.Process.Pid)
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		owner string
		alive bool
	}{
		{ownerValue(), true},
		{exited, false},
		{"1/99999999999", false}, // PID 1 runs, but it did not start then (a reused PID)
		{"", false},              // made before owners were recorded
		{"x/1", false},
	} {
		if got := ownerAlive(c.owner); got != c.alive {
			t.Errorf("ownerAlive(%q) = %v, want %v", c.owner, got, c.alive)
		}
	}
}
