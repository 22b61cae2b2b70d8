// Package harness emulates a Juju 3.6 unit agent for the packed charm: it
// expands the .charm with juju/charm/v12 (as Juju's deployer does), runs
// dispatch with exactly the environment Juju gives a hook or action, and
// answers the hook tools the charm calls with their real CLI contract.
//
// The hook tools are one small binary (cmd/hooktool) linked under each tool's
// name. Like Juju's own tools, it sends its name, arguments and JUJU_CONTEXT_ID
// over the agent socket named by JUJU_AGENT_SOCKET_ADDRESS (an abstract unix
// socket) and prints what the agent answers. The agent lives in the test
// process, so tests read what the charm set directly.
package harness

// ToolRequest is one hook tool invocation, sent by cmd/hooktool.
type ToolRequest struct {
	ContextID string   `json:"context-id"`
	Tool      string   `json:"tool"`
	Args      []string `json:"args"`
	Stdin     []byte   `json:"stdin,omitempty"` // read only for `--file -`
	Dir       string   `json:"dir,omitempty"`   // the tool's working directory, for relative paths
}

// ToolResponse is what the tool prints and how it exits.
type ToolResponse struct {
	Stdout []byte `json:"stdout"`
	Stderr []byte `json:"stderr"`
	Code   int    `json:"code"`
}
