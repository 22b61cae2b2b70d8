// Package lxdsocket finds the LXD daemon's unix socket. It stands apart
// from package lxd so the charm can look for LXD without linking the LXD
// client into its dispatch binary.
package lxdsocket

import (
	"fmt"
	"os"
	"strings"
)

// Candidates are where LXD listens: the snap's socket first (what the charm
// installs on Ubuntu), then Debian's and Ubuntu's deb package.
var Candidates = []string{"/var/snap/lxd/common/lxd/unix.socket", "/var/lib/lxd/unix.socket"}

// Find returns configured if set, else $LXD_SOCKET or $LXD_DIR/unix.socket,
// else the first candidate that exists.
func Find(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if s := os.Getenv("LXD_SOCKET"); s != "" {
		return s, nil
	}
	if dir := os.Getenv("LXD_DIR"); dir != "" {
		return dir + "/unix.socket", nil
	}
	for _, s := range Candidates {
		if _, err := os.Stat(s); err == nil {
			return s, nil
		}
	}
	return "", fmt.Errorf("no LXD socket at %s", strings.Join(Candidates, " or "))
}
