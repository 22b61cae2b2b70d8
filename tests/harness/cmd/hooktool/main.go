// Command hooktool stands in for every Juju hook tool (config-get,
// status-set, …): linked under the tool's name, it forwards its invocation to
// the harness's agent socket and prints the answer, exiting as Juju's tools
// do (0 success, 1 runtime error, 2 usage error).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/canonical/github-runner-charm/tests/harness"
)

func main() {
	os.Exit(run())
}

func run() int {
	network := os.Getenv("JUJU_AGENT_SOCKET_NETWORK")
	address := os.Getenv("JUJU_AGENT_SOCKET_ADDRESS")
	if network == "" || address == "" {
		fmt.Fprintln(os.Stderr, "ERROR JUJU_AGENT_SOCKET_ADDRESS not set: hook tools only work inside a hook")
		return 1
	}
	conn, err := net.DialTimeout(network, address, 10*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ERROR cannot reach the unit agent:", err)
		return 1
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	req := harness.ToolRequest{
		ContextID: os.Getenv("JUJU_CONTEXT_ID"),
		Tool:      filepath.Base(os.Args[0]),
		Args:      os.Args[1:],
	}
	req.Dir, _ = os.Getwd()
	if readsStdin(req.Args) {
		in, err := io.ReadAll(io.LimitReader(os.Stdin, maxStdin+1))
		if err != nil {
			fmt.Fprintln(os.Stderr, "ERROR cannot read stdin:", err)
			return 1
		}
		if len(in) > maxStdin {
			fmt.Fprintf(os.Stderr, "ERROR stdin is larger than %d bytes\n", maxStdin)
			return 1
		}
		req.Stdin = in
	}
	var resp harness.ToolResponse
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		fmt.Fprintln(os.Stderr, "ERROR cannot talk to the unit agent:", err)
		return 1
	}
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		fmt.Fprintln(os.Stderr, "ERROR cannot read the unit agent's answer:", err)
		return 1
	}
	os.Stdout.Write(resp.Stdout)
	os.Stderr.Write(resp.Stderr)
	return resp.Code
}

// maxStdin bounds what `--file -` may carry (Juju's own limit on relation
// data is far above what a charm writes).
const maxStdin = 16 << 20

// readsStdin tells whether the tool was asked to read its input from stdin
// (`--file -` or `--file=-`, before any "--"): only then is stdin read, so a
// tool run from a terminal never waits on it.
func readsStdin(args []string) bool {
	for i, arg := range args {
		switch {
		case arg == "--":
			return false
		case arg == "--file=-" || arg == "-file=-":
			return true
		case (arg == "--file" || arg == "-file") && i+1 < len(args) && args[i+1] == "-":
			return true
		}
	}
	return false
}
