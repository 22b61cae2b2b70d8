// Command dispatch is the charm's single entry point: Juju runs it for every
// hook and action, naming the event in JUJU_DISPATCH_PATH.
package main

import (
	"os"

	"github.com/canonical/github-runner-charm/charm"
)

func main() {
	os.Exit(charm.Main())
}
