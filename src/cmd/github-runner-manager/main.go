// Command github-runner-manager is the long-running service that owns this
// unit's runners; the charm supervises it with Pebble.
package main

import (
	"flag"
	"fmt"
	"os"
)

// version is set by the packer with -ldflags.
var version = "dev"

func main() {
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(version)
		return
	}
	fmt.Fprintln(os.Stderr, "github-runner-manager", version, "cannot run yet: the runner manager engine is not built")
	os.Exit(1)
}
