// Command pack builds the charm archive (what `make charm` runs) and prints its path.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/canonical/github-runner-charm/charm/pack"
)

func main() {
	out := flag.String("out", "build", "directory for the .charm")
	arch := flag.String("arch", runtime.GOARCH, "architecture of the unit's machine: amd64 or arm64")
	flag.Parse()
	ctx := context.Background()
	path, err := pack.Build(ctx, pack.Options{
		SourceDir: ".",
		OutDir:    *out,
		Arch:      *arch,
		Version:   pack.GitVersion(ctx, "."),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println(path)
}
