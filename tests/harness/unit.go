package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	jujucharm "github.com/juju/charm/v12"

	"github.com/canonical/github-runner-charm/charm/pack"
)

// JujuVersion is the agent version the harness claims to be.
const JujuVersion = "3.6.11"

// hookTimeout bounds one dispatch. Juju has none, but a test must not hang.
const hookTimeout = 2 * time.Minute

// Status is a workload status, as set by the charm or by Juju itself.
type Status struct {
	Status  string
	Message string
}

// LogLine is one juju-log call.
type LogLine struct {
	Level   string
	Message string
}

// HookResult is how dispatch ended.
type HookResult struct {
	Code           int
	Stdout, Stderr string
}

// ActionResult is the task as `juju show-task` reports it.
type ActionResult struct {
	Status  string         // completed or failed
	Message string         // action-fail's message, or "exit status N"
	Results map[string]any // action-set's results, nested by dotted keys
	Log     []string       // action-log messages
	HookResult
}

// Options describe the unit.
type Options struct {
	App    string // default "github-runner"
	Number int    // unit number
	Leader bool
	// Model is the model's UUID, JUJU_MODEL_UUID; default DefaultModel.
	// Two units of one application name in two models differ only here.
	Model string
	// ModelProxy is juju-http-proxy etc., exported as JUJU_CHARM_*_PROXY.
	ModelProxy struct{ HTTP, HTTPS, NoProxy string }
	// StateRoot is where the charm keeps per-unit state; a temporary
	// directory by default.
	StateRoot string
	// HostRoot stands for the machine's "/" where the charm looks for
	// what Canonical's Python charm left (GITHUB_RUNNER_HOST_ROOT); a
	// temporary directory by default, so no test touches the machine's
	// /etc.
	HostRoot string
}

// DefaultModel is the model UUID of units whose Options name none.
const DefaultModel = "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10"

// Model is the unit's model UUID.
func (u *Unit) Model() string {
	if u.opts.Model == "" {
		return DefaultModel
	}
	return u.opts.Model
}

// Unit is one unit of the packed charm, with its agent.
type Unit struct {
	t         testing.TB
	Name      string
	CharmDir  string
	StateRoot string
	HostRoot  string // see Options.HostRoot
	opts      Options
	toolsDir  string
	socket    string
	charm     *jujucharm.CharmArchive

	mu         sync.Mutex
	config     jujucharm.Settings // values the operator set
	leader     bool
	status     Status
	history    []Status
	statusSet  bool // whether anything ever set a status (Juju's own rules need it)
	logs       []LogLine
	appVersion string
	current    *hookContext
	nextAction int
	removed    bool
	relations  relationWorld // relations.go
	secrets    secretWorld   // secrets.go
	hooks      []HookRun
}

type hookContext struct {
	id     string
	action *actionState
	// relation is the relation of a relation hook; secretURI and
	// secretLabel those of a secret hook (relations.go, secrets.go).
	relation       *hookRelation
	secretURI      string
	secretLabel    string
	relationWrites map[bagKey]map[string]string // relation-set, committed at exit 0
}

type actionState struct {
	params      map[string]any
	results     map[string]any
	log         []string
	failed      bool
	failMessage string
}

// New deploys the packed charm as one unit: the archive is expanded with
// juju/charm/v12's ExpandTo, as Juju's deployer does, so a wrong file mode
// fails here as it would in Juju.
func New(t testing.TB, opts Options) *Unit {
	t.Helper()
	if opts.App == "" {
		opts.App = "github-runner"
	}
	if opts.StateRoot == "" {
		// Short: unix socket paths (Pebble's, the manager's) are limited to
		// 108 bytes, which t.TempDir's test-named paths can exceed.
		root, err := os.MkdirTemp("", "gr-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(root) })
		opts.StateRoot = root
	}
	if opts.HostRoot == "" {
		opts.HostRoot = t.TempDir()
	}
	archivePath, toolPath := buildArtifacts(t)
	archive, err := jujucharm.ReadCharmArchive(archivePath)
	if err != nil {
		t.Fatalf("cannot read the charm archive: %v", err)
	}
	u := &Unit{
		t:         t,
		Name:      fmt.Sprintf("%s/%d", opts.App, opts.Number),
		CharmDir:  filepath.Join(t.TempDir(), "charm"),
		StateRoot: opts.StateRoot,
		HostRoot:  opts.HostRoot,
		opts:      opts,
		toolsDir:  t.TempDir(),
		charm:     archive,
		config:    jujucharm.Settings{},
		leader:    opts.Leader,
	}
	if err := archive.ExpandTo(u.CharmDir); err != nil {
		t.Fatalf("cannot expand the charm: %v", err)
	}
	for _, name := range ToolNames() {
		if err := os.Symlink(toolPath, filepath.Join(u.toolsDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	u.listen()
	// Juju removes a unit with stop then remove; doing the same at the end
	// of every test ends the processes the charm started (Pebble and the
	// manager) and removes its state.
	t.Cleanup(func() {
		if !u.removed {
			u.unrelateAll()
			u.Hook("stop")
			u.Hook("remove")
		}
	})
	return u
}

// Charm is the archive as Juju parsed it.
func (u *Unit) Charm() *jujucharm.CharmArchive { return u.charm }

// StateDir is the unit's own state directory under StateRoot.
func (u *Unit) StateDir() string {
	return filepath.Join(u.StateRoot, strings.ReplaceAll(u.Name, "/", "-"))
}

// Configure is `juju config app k=v …`: values are validated against
// config.yaml by Juju's own code (a wrong type fails the test, as the juju
// client refuses it), then config-changed runs. A nil value resets the option.
func (u *Unit) Configure(values map[string]any) HookResult {
	u.t.Helper()
	u.SetConfig(values)
	return u.Hook("config-changed")
}

// SetConfig changes settings without running config-changed.
func (u *Unit) SetConfig(values map[string]any) {
	u.t.Helper()
	settings, err := u.charm.Config().ValidateSettings(jujucharm.Settings(values))
	if err != nil {
		u.t.Fatalf("juju config would refuse %v: %v", keys(values), err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, v := range settings {
		if v == nil {
			delete(u.config, k)
		} else {
			u.config[k] = v
		}
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// configSettings is config-get --all: defaults overlaid with set values.
func (u *Unit) configSettings() map[string]any {
	settings := map[string]any(u.charm.Config().DefaultSettings())
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, v := range u.config {
		settings[k] = v
	}
	return settings
}

// SetLeader changes leadership (run leader-elected yourself if you want it).
func (u *Unit) SetLeader(leader bool) {
	u.mu.Lock()
	u.leader = leader
	u.mu.Unlock()
}

func (u *Unit) isLeader() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.leader
}

func (u *Unit) setStatus(s Status) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.status, u.statusSet = s, true
	u.history = append(u.history, s)
}

// Status is the unit's workload status now.
func (u *Unit) Status() Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.status
}

// StatusHistory is every status set, oldest first.
func (u *Unit) StatusHistory() []Status {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Status(nil), u.history...)
}

// Logs is every juju-log line so far.
func (u *Unit) Logs() []LogLine {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]LogLine(nil), u.logs...)
}

// AppVersion is what application-version-set set.
func (u *Unit) AppVersion() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.appVersion
}

// Deploy runs what Juju runs when a unit is deployed, failing the test if
// any hook fails: install, leader-elected (or leader-settings-changed),
// config-changed, start, then one update-status.
func (u *Unit) Deploy() {
	u.t.Helper()
	leaderHook := "leader-settings-changed"
	if u.isLeader() {
		leaderHook = "leader-elected"
	}
	for _, hook := range []string{"install", leaderHook, "config-changed", "start", "update-status"} {
		if r := u.Hook(hook); r.Code != 0 {
			u.t.Fatalf("hook %s failed with exit %d: %s\nunit log: %v", hook, r.Code, r.Stderr, u.Logs())
		}
	}
}

// Hook runs one hook as Juju does, including the statuses Juju itself sets
// around install, start, stop and remove.
func (u *Unit) Hook(name string) HookResult {
	u.t.Helper()
	return u.runHook(name, &hookContext{id: u.contextID(name)})
}

// runHook runs hook name in ctx (a relation or secret hook's context).
func (u *Unit) runHook(name string, ctx *hookContext) HookResult {
	u.t.Helper()
	u.beforeHook(name)
	start := time.Now()
	result := u.dispatch(ctx, "hooks/"+name, []string{"JUJU_HOOK_NAME=" + name})
	u.t.Logf("hook %s: exit %d in %v", name, result.Code, time.Since(start).Round(time.Millisecond))
	u.recordHook(name, ctx, result.Code)
	if result.Code != 0 {
		u.setStatus(Status{Status: "error", Message: fmt.Sprintf("hook failed: %q", name)})
		return result
	}
	u.afterHook(name)
	return result
}

func (u *Unit) beforeHook(name string) {
	u.mu.Lock()
	set := u.statusSet
	u.mu.Unlock()
	switch {
	case name == "install" && !set:
		u.setStatus(Status{"maintenance", "installing charm software"})
	case name == "stop":
		u.setStatus(Status{"maintenance", "stopping charm software"})
	case name == "remove":
		u.setStatus(Status{"maintenance", "cleaning up prior to charm deletion"})
	}
}

func (u *Unit) afterHook(name string) {
	u.mu.Lock()
	set := u.statusSet
	u.mu.Unlock()
	switch {
	case name == "start" && !set:
		u.setStatus(Status{"unknown", ""})
	case name == "remove":
		u.setStatus(Status{"terminated", ""})
		u.removed = true
	}
}

// Action runs `juju run <unit> <name> k=v …`: the parameters are validated
// and defaulted against actions.yaml by Juju's own code first; a task Juju
// would refuse fails the test.
func (u *Unit) Action(name string, params map[string]any) ActionResult {
	u.t.Helper()
	spec, ok := u.charm.Actions().ActionSpecs[name]
	if !ok {
		u.t.Fatalf("juju run would refuse: the charm has no action %q", name)
	}
	if params == nil {
		params = map[string]any{}
	}
	withDefaults, err := spec.InsertDefaults(params)
	if err != nil {
		u.t.Fatalf("cannot insert defaults for %s: %v", name, err)
	}
	if err := spec.ValidateParams(withDefaults); err != nil {
		u.t.Fatalf("juju run would refuse %s %v: %v", name, params, err)
	}
	u.mu.Lock()
	u.nextAction++
	id := strconv.Itoa(u.nextAction)
	u.mu.Unlock()
	state := &actionState{params: withDefaults, results: map[string]any{}}
	ctx := &hookContext{id: u.contextID(name), action: state}
	hook := u.dispatch(ctx, "actions/"+name, []string{
		"JUJU_HOOK_NAME=", // empty for actions, as Juju sets it
		"JUJU_ACTION_NAME=" + name,
		"JUJU_ACTION_UUID=" + id,
		"JUJU_ACTION_TAG=action-" + id,
	})
	u.mu.Lock()
	defer u.mu.Unlock()
	result := ActionResult{Status: "completed", Results: state.results, Log: state.log, HookResult: hook}
	switch {
	case state.failed:
		result.Status, result.Message = "failed", state.failMessage
	case hook.Code != 0:
		result.Status, result.Message = "failed", fmt.Sprintf("exit status %d", hook.Code)
	}
	return result
}

func (u *Unit) contextID(event string) string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%s-%s", u.Name, event, hex.EncodeToString(b[:]))
}

// environment is exactly what Juju 3.6 gives dispatch: the agent's own
// environment is not inherited (no HOME, no USER), only PATH is derived.
func (u *Unit) environment(ctx *hookContext, dispatchPath string, extra []string) []string {
	env := []string{
		"CHARM_DIR=" + u.CharmDir,
		"JUJU_CHARM_DIR=" + u.CharmDir,
		"JUJU_CONTEXT_ID=" + ctx.id,
		"JUJU_AGENT_SOCKET_ADDRESS=" + u.socket,
		"JUJU_AGENT_SOCKET_NETWORK=unix",
		"JUJU_UNIT_NAME=" + u.Name,
		"JUJU_MODEL_UUID=" + u.Model(),
		"JUJU_MODEL_NAME=ci",
		"JUJU_API_ADDRESSES=10.0.0.1:17070",
		"JUJU_SLA=unsupported",
		"JUJU_MACHINE_ID=0",
		"JUJU_PRINCIPAL_UNIT=",
		"JUJU_AVAILABILITY_ZONE=",
		"JUJU_VERSION=" + JujuVersion,
		"CLOUD_API_VERSION=",
		"JUJU_CHARM_HTTP_PROXY=" + u.opts.ModelProxy.HTTP,
		"JUJU_CHARM_HTTPS_PROXY=" + u.opts.ModelProxy.HTTPS,
		"JUJU_CHARM_FTP_PROXY=",
		"JUJU_CHARM_NO_PROXY=" + u.opts.ModelProxy.NoProxy,
		"APT_LISTCHANGES_FRONTEND=none",
		"DEBIAN_FRONTEND=noninteractive",
		"LANG=C.UTF-8",
		"TERM=tmux-256color",
		"PATH=" + u.toolsDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"JUJU_DISPATCH_PATH=" + dispatchPath,
		// Not Juju's: lets tests keep the unit's state out of /var/lib.
		"GITHUB_RUNNER_STATE_ROOT=" + u.StateRoot,
		"GITHUB_RUNNER_LOG_ROOT=" + filepath.Join(u.StateRoot, "log"), // and /var/log
		"GITHUB_RUNNER_HOST_ROOT=" + u.HostRoot,
	}
	env = append(env, u.relationEnv(ctx)...)
	return append(env, extra...)
}

func (u *Unit) dispatch(ctx *hookContext, dispatchPath string, extra []string) HookResult {
	u.t.Helper()
	u.mu.Lock()
	u.current = ctx
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.current = nil
		u.mu.Unlock()
	}()

	runCtx, cancel := context.WithTimeout(context.Background(), hookTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(runCtx, filepath.Join(u.CharmDir, "dispatch"))
	cmd.Dir = u.CharmDir
	cmd.Env = u.environment(ctx, dispatchPath, extra)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	result := HookResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		result.Code = exit.ExitCode()
	case err != nil:
		u.t.Fatalf("cannot run dispatch for %s: %v", dispatchPath, err)
	}
	if runCtx.Err() != nil {
		u.t.Fatalf("dispatch for %s did not finish within %v", dispatchPath, hookTimeout)
	}
	if result.Code == 0 {
		u.commit(ctx) // relation-set is flushed only when the hook succeeds
	}
	return result
}

// listen serves the agent socket, an abstract unix socket like Juju's.
func (u *Unit) listen() {
	var b [8]byte
	rand.Read(b[:])
	u.socket = "@github-runner-harness-" + hex.EncodeToString(b[:])
	l, err := net.Listen("unix", u.socket)
	if err != nil {
		u.t.Fatalf("cannot listen on the agent socket: %v", err)
	}
	u.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go u.serve(conn)
		}
	}()
}

func (u *Unit) serve(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var req ToolRequest
	if err := json.NewDecoder(conn).Decode(&req); err != nil {
		return
	}
	json.NewEncoder(conn).Encode(u.runTool(req))
}

func (u *Unit) runTool(req ToolRequest) ToolResponse {
	u.mu.Lock()
	ctx := u.current
	u.mu.Unlock()
	// Juju rejects a tool call whose context is not the running hook's.
	if ctx == nil || ctx.id != req.ContextID {
		return ToolResponse{Stderr: []byte(fmt.Sprintf("ERROR bad request: unknown context %q\n", req.ContextID)), Code: 1}
	}
	def, ok := tools[req.Tool]
	if !ok {
		return ToolResponse{Stderr: []byte(fmt.Sprintf("ERROR unknown command %q\n", req.Tool)), Code: 2}
	}
	p, err := def.flags.parse(req.Args)
	if err != nil {
		return ToolResponse{Stderr: []byte("ERROR " + err.Error() + "\n"), Code: 2}
	}
	p.stdin, p.dir = req.Stdin, req.Dir
	out, err := def.run(u, ctx, p)
	var usage usageError
	switch {
	case errors.As(err, &usage):
		return ToolResponse{Stderr: []byte("ERROR " + err.Error() + "\n"), Code: 2}
	case err != nil:
		return ToolResponse{Stderr: []byte("ERROR " + err.Error() + "\n"), Code: 1}
	}
	// juju-log's warning about an unknown level goes to stderr.
	if req.Tool == "juju-log" {
		return ToolResponse{Stderr: out}
	}
	return ToolResponse{Stdout: out}
}

// Main runs a package's tests and removes what the harness built; call it
// from TestMain: os.Exit(harness.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	return code
}

// Version is the version of the charm New deploys.
const Version = "harness"

var (
	buildMu  sync.Mutex
	buildDir string
	builds   = map[string]*build{} // by charm version; "" is the hook tool
)

type build struct {
	once sync.Once
	path string
	err  error
}

// buildArtifacts packs the charm New deploys and builds the hook tool, once
// per test binary; Go's build cache makes this take seconds after the
// first time.
func buildArtifacts(t testing.TB) (archive, tool string) {
	t.Helper()
	return buildCharm(t, Version), built(t, "", func(root, out string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		tool := filepath.Join(out, "hooktool")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tool, "./tests/harness/cmd/hooktool")
		cmd.Dir = root
		if output, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("cannot build the hook tool: %v\n%s", err, output)
		}
		return tool, nil
	})
}

// buildCharm packs the charm with version linked into its binaries, once
// per test binary and version. Two versions differ in every binary the
// version is linked into (dispatch and the manager), not in Pebble.
func buildCharm(t testing.TB, version string) string {
	t.Helper()
	return built(t, version, func(root, out string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		return pack.Build(ctx, pack.Options{SourceDir: root, OutDir: filepath.Join(out, "charm-"+version), Arch: runtime.GOARCH, Version: version})
	})
}

// built runs make once per key, in the test binary's build directory.
func built(t testing.TB, key string, make func(root, out string) (string, error)) string {
	t.Helper()
	buildMu.Lock()
	if buildDir == "" {
		dir, err := os.MkdirTemp("", "github-runner-harness-")
		if err != nil {
			buildMu.Unlock()
			t.Fatal(err)
		}
		buildDir = dir
	}
	b, ok := builds[key]
	if !ok {
		b = &build{}
		builds[key] = b
	}
	out := buildDir
	buildMu.Unlock()
	b.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		b.path, b.err = make(root, out)
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Refresh is what `juju refresh` does to the unit before any hook runs: the
// charm of version (packed like New's, with version linked in) replaces
// the charm directory's contents. The directory stays where it is, as
// Juju's deployer keeps it, and the files are new ones: a running process
// keeps the binary it started from. Options the new charm no longer has
// lose their values, as in Juju.
func (u *Unit) Refresh(version string) {
	u.t.Helper()
	archive, err := jujucharm.ReadCharmArchive(buildCharm(u.t, version))
	if err != nil {
		u.t.Fatalf("cannot read the charm archive of %s: %v", version, err)
	}
	entries, err := os.ReadDir(u.CharmDir)
	if err != nil {
		u.t.Fatalf("cannot read the charm directory: %v", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(u.CharmDir, e.Name())); err != nil {
			u.t.Fatalf("cannot remove the old charm's %s: %v", e.Name(), err)
		}
	}
	if err := archive.ExpandTo(u.CharmDir); err != nil {
		u.t.Fatalf("cannot expand the charm of %s: %v", version, err)
	}
	options := archive.Config().Options
	u.mu.Lock()
	u.charm = archive
	for k := range u.config {
		if _, ok := options[k]; !ok {
			delete(u.config, k)
		}
	}
	u.mu.Unlock()
}

// Upgrade is `juju refresh` to the charm of version as Juju carries it out:
// Refresh, then upgrade-charm and config-changed, failing the test if
// either hook fails.
func (u *Unit) Upgrade(version string) {
	u.t.Helper()
	u.Refresh(version)
	for _, hook := range []string{"upgrade-charm", "config-changed"} {
		if r := u.Hook(hook); r.Code != 0 {
			u.t.Fatalf("hook %s failed with exit %d: %s\nunit log: %v", hook, r.Code, r.Stderr, u.Logs())
		}
	}
}

// Exec runs argv inside a hook (or, with an action name, an action) context,
// the way the charm calls hook tools, so tests can check a tool's contract.
// params are the action's parameters when action is true.
func (u *Unit) Exec(event string, action bool, params map[string]any, argv ...string) ActionResult {
	u.t.Helper()
	ctx := &hookContext{id: u.contextID(event)}
	if action {
		ctx.action = &actionState{params: params, results: map[string]any{}}
	}
	u.mu.Lock()
	u.current = ctx
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.current = nil
		u.mu.Unlock()
	}()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(u.toolsDir, argv[0]), argv[1:]...)
	cmd.Env = u.environment(ctx, "hooks/"+event, nil)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	result := ActionResult{HookResult: HookResult{Stdout: stdout.String(), Stderr: stderr.String()}}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		result.Code = exit.ExitCode()
	} else if err != nil {
		u.t.Fatalf("cannot run %s: %v", argv[0], err)
	}
	if result.Code == 0 {
		u.commit(ctx)
	}
	if ctx.action != nil {
		result.Results, result.Log = ctx.action.results, ctx.action.log
		if ctx.action.failed {
			result.Status, result.Message = "failed", ctx.action.failMessage
		}
	}
	return result
}

// ServiceLogs returns the last lines Pebble kept of the manager service,
// for a failing test's report.
func (u *Unit) ServiceLogs() string {
	cmd := exec.Command(filepath.Join(u.CharmDir, "bin", "pebble"), "logs", "-n", "200")
	cmd.Env = []string{"PEBBLE=" + filepath.Join(u.StateDir(), "pebble")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("cannot read the service's logs: %v: %s", err, out)
	}
	return string(out)
}

// ManagerPID finds the unit's running github-runner-manager (started by
// Pebble with the unit's config file), or 0.
func (u *Unit) ManagerPID() int {
	config := filepath.Join(u.StateDir(), "config.yaml")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 2 && strings.HasSuffix(args[0], "github-runner-manager") && slices.Contains(args, config) && !slices.Contains(args, "health") {
			return pid
		}
	}
	return 0
}

// PebblePID finds the unit's running Pebble daemon (a `pebble run` whose
// PEBBLE is the unit's Pebble directory), or 0. It looks at the processes,
// not at the charm's records of them.
func (u *Unit) PebblePID() int {
	want := "PEBBLE=" + filepath.Join(u.StateDir(), "pebble")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmdline), "\x00")
		if len(args) < 2 || !strings.HasSuffix(args[0], "pebble") || args[1] != "run" {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if slices.Contains(strings.Split(string(environ), "\x00"), want) {
			pid, _ := strconv.Atoi(e.Name())
			return pid
		}
	}
	return 0
}
