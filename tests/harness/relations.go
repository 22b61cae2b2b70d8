package harness

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// relation is one integration of this unit's application with a remote one,
// as the unit agent knows it. Bags hold committed data only: relation-set
// buffers in the hook context until the hook exits 0 (see commit).
type relation struct {
	id        int
	endpoint  string
	remoteApp string
	units     map[string]map[string]string // joined remote units' bags
	departed  map[string]map[string]string // bags of units that left (Juju keeps them readable)
	app       map[string]string            // the remote application's bag
	local     map[string]string            // this unit's bag
	localApp  map[string]string            // this application's bag (the leader writes it)
	broken    bool                         // -relation-broken has started: no longer listed
	removed   bool                         // -relation-broken succeeded: gone
}

func (r *relation) fakeID() string { return fmt.Sprintf("%s:%d", r.endpoint, r.id) }

// relationWorld is every relation of the unit, by id.
type relationWorld struct {
	next int
	byID map[int]*relation
}

// hookRelation is the relation context of a relation hook: what Juju puts in
// JUJU_RELATION, JUJU_RELATION_ID, JUJU_REMOTE_UNIT, JUJU_REMOTE_APP and
// JUJU_DEPARTING_UNIT.
type hookRelation struct {
	id         int
	remoteUnit string
	remoteApp  string
	departing  string
}

// bagKey names a bag this unit may write: its own, or its application's.
type bagKey struct {
	id  int
	app bool
}

// relationEnv is the relation and secret part of a hook's environment, as
// Juju's HookVars adds it.
func (u *Unit) relationEnv(ctx *hookContext) []string {
	var env []string
	if ctx.relation != nil {
		u.mu.Lock()
		r := u.relations.byID[ctx.relation.id]
		u.mu.Unlock()
		env = append(env,
			"JUJU_RELATION="+r.endpoint,
			"JUJU_RELATION_ID="+r.fakeID(),
			"JUJU_REMOTE_UNIT="+ctx.relation.remoteUnit,
			"JUJU_REMOTE_APP="+ctx.relation.remoteApp,
		)
		if ctx.relation.departing != "" {
			env = append(env, "JUJU_DEPARTING_UNIT="+ctx.relation.departing)
		}
	}
	if ctx.secretURI != "" {
		env = append(env, "JUJU_SECRET_ID="+ctx.secretURI, "JUJU_SECRET_LABEL="+ctx.secretLabel)
	}
	return env
}

// commit applies what the hook's relation-set calls buffered: Juju flushes
// them only when the hook exits 0, so a failed hook changes no relation data.
func (u *Unit) commit(ctx *hookContext) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for key, changes := range ctx.relationWrites {
		r := u.relations.byID[key.id]
		if r == nil {
			continue
		}
		bag := r.local
		if key.app {
			bag = r.localApp
		}
		for k, v := range changes {
			if v == "" {
				delete(bag, k)
			} else {
				bag[k] = v
			}
		}
	}
	ctx.relationWrites = nil
}

// endpointExists tells whether endpoint is one of the charm's metadata
// relations (provides, requires or peers).
func (u *Unit) endpointExists(endpoint string) bool {
	meta := u.charm.Meta()
	_, p := meta.Provides[endpoint]
	_, r := meta.Requires[endpoint]
	_, s := meta.Peers[endpoint]
	return p || r || s
}

var unitName = regexp.MustCompile(`^([a-z][a-z0-9]*(?:-[a-z0-9]*[a-z][a-z0-9]*)*)/(0|[1-9][0-9]*)$`)

// Relate is `juju integrate`: endpoint must be one of the charm's metadata
// relations. It runs <endpoint>-relation-created, then for each remote unit
// (sorted) -relation-joined and -relation-changed (JUJU_REMOTE_UNIT set),
// then, if appData is non-empty, an application -relation-changed
// (JUJU_REMOTE_UNIT empty). It fails the test if a hook exits non-zero and
// returns the relation's number N (its id is "endpoint:N").
func (u *Unit) Relate(endpoint, remoteApp string, appData map[string]string, units map[string]map[string]string) int {
	u.t.Helper()
	if !u.endpointExists(endpoint) {
		u.t.Fatalf("juju integrate would refuse: the charm has no relation endpoint %q", endpoint)
	}
	for unit := range units {
		if m := unitName.FindStringSubmatch(unit); m == nil || m[1] != remoteApp {
			u.t.Fatalf("juju integrate: %q is not a unit of %q", unit, remoteApp)
		}
	}
	u.mu.Lock()
	if u.relations.byID == nil {
		u.relations.byID = map[int]*relation{}
	}
	u.relations.next++
	r := &relation{
		id: u.relations.next, endpoint: endpoint, remoteApp: remoteApp,
		units: map[string]map[string]string{}, departed: map[string]map[string]string{},
		app: map[string]string{}, local: map[string]string{}, localApp: map[string]string{},
	}
	u.relations.byID[r.id] = r
	u.mu.Unlock()

	mustPass := func(res HookResult, hook string) {
		u.t.Helper()
		if res.Code != 0 {
			u.t.Fatalf("hook %s failed with exit %d: %s\nunit log: %v", hook, res.Code, res.Stderr, u.Logs())
		}
	}
	mustPass(u.relationHook(r, "created", "", ""), endpoint+"-relation-created")
	for _, unit := range slices.Sorted(maps.Keys(units)) {
		mustPass(u.SetRemoteUnitData(r.id, unit, units[unit]), endpoint+"-relation-joined/changed")
	}
	if len(appData) > 0 {
		mustPass(u.SetRemoteAppData(r.id, appData), endpoint+"-relation-changed")
	}
	return r.id
}

// liveRelation is relation id, failing the test if the unit has no such
// relation or it is gone.
func (u *Unit) liveRelation(id int) *relation {
	u.t.Helper()
	u.mu.Lock()
	r := u.relations.byID[id]
	u.mu.Unlock()
	if r == nil || r.removed {
		u.t.Fatalf("the unit has no relation %d", id)
	}
	return r
}

// SetRemoteUnitData replaces a remote unit's bag. A unit new to the relation
// joins first (-relation-joined, then -relation-changed); a known one gets
// -relation-changed. The result is the last hook's.
func (u *Unit) SetRemoteUnitData(id int, unit string, data map[string]string) HookResult {
	u.t.Helper()
	r := u.liveRelation(id)
	if m := unitName.FindStringSubmatch(unit); m == nil || m[1] != r.remoteApp {
		u.t.Fatalf("%q is not a unit of %q", unit, r.remoteApp)
	}
	u.mu.Lock()
	_, known := r.units[unit]
	r.units[unit] = copyBag(data)
	delete(r.departed, unit)
	u.mu.Unlock()
	if !known {
		if res := u.relationHook(r, "joined", unit, ""); res.Code != 0 {
			return res
		}
	}
	return u.relationHook(r, "changed", unit, "")
}

// SetRemoteAppData replaces the remote application's bag, then runs an
// application -relation-changed (JUJU_REMOTE_UNIT empty).
func (u *Unit) SetRemoteAppData(id int, data map[string]string) HookResult {
	u.t.Helper()
	r := u.liveRelation(id)
	u.mu.Lock()
	r.app = copyBag(data)
	u.mu.Unlock()
	return u.relationHook(r, "changed", "", "")
}

// DepartRemoteUnit is a remote unit leaving: -relation-departed runs with
// JUJU_REMOTE_UNIT and JUJU_DEPARTING_UNIT naming it; relation-list no
// longer lists it, its data stays readable.
func (u *Unit) DepartRemoteUnit(id int, unit string) HookResult {
	u.t.Helper()
	r := u.liveRelation(id)
	u.mu.Lock()
	bag, ok := r.units[unit]
	if ok {
		delete(r.units, unit)
		r.departed[unit] = bag
	}
	u.mu.Unlock()
	if !ok {
		u.t.Fatalf("%s is not in relation %s", unit, r.fakeID())
	}
	return u.relationHook(r, "departed", unit, unit)
}

// Unrelate is `juju remove-relation`: -relation-departed for each remaining
// remote unit (sorted), then -relation-broken, during which relation-ids no
// longer lists the relation and relation-list lists no unit. It stops at the
// first failing hook and returns the last hook's result.
func (u *Unit) Unrelate(id int) HookResult {
	u.t.Helper()
	r := u.liveRelation(id)
	u.mu.Lock()
	units := slices.Sorted(maps.Keys(r.units))
	u.mu.Unlock()
	for _, unit := range units {
		if res := u.DepartRemoteUnit(id, unit); res.Code != 0 {
			return res
		}
	}
	u.mu.Lock()
	r.broken = true
	u.mu.Unlock()
	res := u.relationHook(r, "broken", "", "")
	if res.Code == 0 {
		u.mu.Lock()
		r.removed = true
		u.mu.Unlock()
	}
	return res
}

// unrelateAll breaks every relation, as Juju does before stop when a unit
// is removed.
func (u *Unit) unrelateAll() {
	u.mu.Lock()
	var ids []int
	for id, r := range u.relations.byID {
		if !r.broken {
			ids = append(ids, id)
		}
	}
	u.mu.Unlock()
	sort.Ints(ids)
	for _, id := range ids {
		u.Unrelate(id)
	}
}

// LocalUnitData is this unit's own bag in relation id, as committed.
func (u *Unit) LocalUnitData(id int) map[string]string {
	u.t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.relations.byID[id]
	if r == nil {
		u.t.Fatalf("the unit has no relation %d", id)
	}
	return copyBag(r.local)
}

// LocalAppData is this application's bag in relation id, as committed.
func (u *Unit) LocalAppData(id int) map[string]string {
	u.t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	r := u.relations.byID[id]
	if r == nil {
		u.t.Fatalf("the unit has no relation %d", id)
	}
	return copyBag(r.localApp)
}

// RelationIDs are the numbers of endpoint's relations that are not broken,
// in order.
func (u *Unit) RelationIDs(endpoint string) []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	var ids []int
	for id, r := range u.relations.byID {
		if r.endpoint == endpoint && !r.broken {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	return ids
}

func copyBag(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	maps.Copy(out, m)
	return out
}

// relationHook runs <endpoint>-relation-<kind> in r's context.
func (u *Unit) relationHook(r *relation, kind, remoteUnit, departing string) HookResult {
	u.t.Helper()
	name := r.endpoint + "-relation-" + kind
	ctx := &hookContext{id: u.contextID(name), relation: &hookRelation{
		id: r.id, remoteUnit: remoteUnit, remoteApp: r.remoteApp, departing: departing,
	}}
	return u.runHook(name, ctx)
}

// ExecHook says in which hook context ExecIn runs.
type ExecHook struct {
	Hook       string // "config-changed", "cos-agent-relation-changed", …
	Relation   int    // the relation of a relation hook; 0 for none
	RemoteUnit string // JUJU_REMOTE_UNIT of a relation hook ("" for an application change)
	Departing  string // JUJU_DEPARTING_UNIT of a -relation-departed hook
	SecretURI  string // JUJU_SECRET_ID of a secret hook
	Stdin      string
}

// ExecIn runs argv (a hook tool, or any program, which finds the tools on
// PATH) in a hook context as Juju gives it, then commits what the tools
// buffered (relation-set) if argv exited 0, as at a hook's end. Unlike Hook
// it does not run dispatch, so tests can check tools in relation contexts
// and transactions.
func (u *Unit) ExecIn(h ExecHook, argv ...string) HookResult {
	u.t.Helper()
	ctx := &hookContext{id: u.contextID(h.Hook), secretURI: h.SecretURI}
	if h.Relation != 0 {
		r := u.liveRelation(h.Relation)
		if !strings.HasPrefix(h.Hook, r.endpoint+"-relation-") {
			u.t.Fatalf("hook %q is not a hook of relation %s", h.Hook, r.fakeID())
		}
		ctx.relation = &hookRelation{id: r.id, remoteUnit: h.RemoteUnit, remoteApp: r.remoteApp, departing: h.Departing}
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		if _, err := os.Stat(filepath.Join(u.toolsDir, path)); err == nil {
			path = filepath.Join(u.toolsDir, path)
		}
	}
	return u.execIn(ctx, "hooks/"+h.Hook, h.Stdin, path, argv[1:]...)
}

// relation-ids [<endpoint>] [--format]
func relationIDs(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	endpoint := ""
	if ctx.relation != nil {
		endpoint = u.relations.byID[ctx.relation.id].endpoint
	}
	switch {
	case len(p.args) > 1:
		return nil, usagef("unrecognized args: %q", p.args[1:])
	case len(p.args) == 1:
		endpoint = p.args[0]
	case endpoint == "":
		return nil, usagef("no endpoint name specified")
	}
	ids := []string{}
	for _, r := range u.relations.byID {
		if r.endpoint == endpoint && !r.broken {
			ids = append(ids, r.fakeID())
		}
	}
	sort.Strings(ids) // as Juju sorts them: as strings
	return output(p, ids)
}

// hookRelationOf resolves -r (N or endpoint:N) or the hook's own relation,
// with Juju's errors: both are usage errors (exit 2), since gnuflag parses
// the value.
func (u *Unit) hookRelationOf(ctx *hookContext, p parsedArgs) (*relation, error) {
	value, ok := p.flags["relation"]
	if !ok {
		if ctx.relation == nil {
			return nil, usagef("no relation id specified")
		}
		return u.relations.byID[ctx.relation.id], nil
	}
	flag := "-r"
	trim := value
	if i := strings.LastIndex(trim, ":"); i != -1 {
		trim = trim[i+1:]
	}
	id, err := strconv.Atoi(trim)
	if err != nil {
		return nil, usagef("invalid value %q for flag %s: invalid relation id", value, flag)
	}
	r := u.relations.byID[id]
	if r == nil || r.removed {
		return nil, usagef("invalid value %q for flag %s: relation not found", value, flag)
	}
	return r, nil
}

// relation-list [-r <id>] [--app] [--format]
func relationList(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, err := u.hookRelationOf(ctx, p)
	if err != nil {
		return nil, err
	}
	if len(p.args) > 0 {
		return nil, usagef("unrecognized args: %q", p.args)
	}
	if p.has("app") {
		return output(p, r.remoteApp)
	}
	units := []string{} // "[]", never "null", as Juju prints no units
	if !r.broken {
		units = append(units, slices.Sorted(maps.Keys(r.units))...)
	}
	return output(p, units)
}

// relation-get [-r <id>] [--app] [<key>|-] [<unit-or-app>] [--format]
func relationGet(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, err := u.hookRelationOf(ctx, p)
	if err != nil {
		return nil, err
	}
	args := p.args
	key := ""
	if len(args) > 0 {
		if key = args[0]; key == "-" {
			key = ""
		}
		args = args[1:]
	}
	app := p.has("app")
	target := ""
	switch {
	case len(args) > 0:
		target, args = args[0], args[1:]
		if app {
			if m := unitName.FindStringSubmatch(target); m != nil {
				target = m[1]
			}
		}
	case app:
		if ctx.relation == nil || ctx.relation.remoteApp == "" {
			return nil, usagef("no unit or application specified")
		}
		target = ctx.relation.remoteApp
	case ctx.relation != nil && ctx.relation.remoteUnit != "":
		target = ctx.relation.remoteUnit
	case ctx.relation != nil && ctx.relation.remoteApp != "":
		target, app = ctx.relation.remoteApp, true
	default:
		return nil, usagef("no unit or application specified")
	}
	if len(args) > 0 {
		return nil, usagef("unrecognized args: %q", args)
	}
	bag, err := u.readBag(ctx, r, target)
	if err != nil {
		return nil, err
	}
	if key == "" {
		return output(p, bag)
	}
	if v, ok := bag[key]; ok {
		return output(p, v)
	}
	return output(p, nil)
}

// readBag reads one bag as relation-get does: this unit's and (for the
// leader) this application's include the hook's own relation-set calls;
// another unit's or application's are what they committed.
func (u *Unit) readBag(ctx *hookContext, r *relation, target string) (map[string]string, error) {
	localApp, _, _ := strings.Cut(u.Name, "/")
	var bag map[string]string
	var pending map[string]string
	switch m := unitName.FindStringSubmatch(target); {
	case target == u.Name:
		bag, pending = r.local, ctx.relationWrites[bagKey{id: r.id}]
	case target == localApp:
		if !u.leader {
			return nil, fmt.Errorf("permission denied")
		}
		bag, pending = r.localApp, ctx.relationWrites[bagKey{id: r.id, app: true}]
	case target == r.remoteApp:
		bag = r.app
	case m != nil && m[1] == r.remoteApp:
		var ok bool
		if bag, ok = r.units[target]; !ok {
			if bag, ok = r.departed[target]; !ok {
				return nil, fmt.Errorf("unit %q: settings not found", target)
			}
		}
	case m != nil || validAppName(target):
		return nil, fmt.Errorf("permission denied")
	default:
		return nil, fmt.Errorf("%q is not a valid unit or application", target)
	}
	out := copyBag(bag)
	for k, v := range pending {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out, nil
}

var appName = regexp.MustCompile(`^[a-z][a-z0-9]*(?:-[a-z0-9]*[a-z][a-z0-9]*)*$`)

func validAppName(s string) bool { return appName.MatchString(s) }

// relation-set [-r <id>] [--app] [--file <path>|-] key=value ...
func relationSet(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	r, err := u.hookRelationOf(ctx, p)
	if err != nil {
		return nil, err
	}
	// juju/utils keyvalues.Parse(args, true): Init, so usage errors.
	overrides := map[string]string{}
	for _, arg := range p.args {
		k, v, ok := strings.Cut(arg, "=")
		if !ok {
			return nil, usagef("expected \"key=value\", got %q", arg)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "" {
			return nil, usagef("expected \"key=value\", got \"%s=%s\"", k, v)
		}
		if _, dup := overrides[k]; dup {
			return nil, usagef("key %q specified more than once", k)
		}
		overrides[k] = v
	}
	settings := map[string]string{}
	if file, ok := p.flags["file"]; ok {
		var data []byte
		if file == "-" {
			data = p.stdin
		} else {
			if !filepath.IsAbs(file) {
				file = filepath.Join(p.dir, file)
			}
			if data, err = os.ReadFile(file); err != nil {
				return nil, fmt.Errorf("open %s: no such file or directory", p.flags["file"])
			}
		}
		if err := yaml.Unmarshal(data, &settings); err != nil {
			return nil, fmt.Errorf("yaml: %v", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		if settings == nil {
			settings = map[string]string{}
		}
	}
	maps.Copy(settings, overrides)
	app := p.has("app")
	if app && !u.leader {
		return nil, fmt.Errorf("cannot write relation settings")
	}
	key := bagKey{id: r.id, app: app}
	if ctx.relationWrites == nil {
		ctx.relationWrites = map[bagKey]map[string]string{}
	}
	if ctx.relationWrites[key] == nil {
		ctx.relationWrites[key] = map[string]string{}
	}
	maps.Copy(ctx.relationWrites[key], settings)
	return nil, nil
}

// execIn runs path with args in ctx as Exec does, with stdin, committing the
// buffered relation data if it exits 0.
func (u *Unit) execIn(ctx *hookContext, dispatchPath, stdin, path string, args ...string) HookResult {
	u.t.Helper()
	u.mu.Lock()
	u.current = ctx
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		u.current = nil
		u.mu.Unlock()
	}()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path, args...)
	cmd.Env = u.environment(ctx, dispatchPath, nil)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	result := HookResult{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		result.Code = exit.ExitCode()
	} else if err != nil {
		u.t.Fatalf("cannot run %s: %v", path, err)
	}
	if result.Code == 0 {
		u.commit(ctx)
	}
	return result
}

// HookRun is one hook the harness ran: its name, exit code and the relation
// and secret variables Juju set for it (JUJU_RELATION, JUJU_RELATION_ID,
// JUJU_REMOTE_UNIT, JUJU_REMOTE_APP, JUJU_DEPARTING_UNIT, JUJU_SECRET_ID,
// JUJU_SECRET_LABEL; absent ones are not in Env).
type HookRun struct {
	Name string
	Code int
	Env  map[string]string
}

func (u *Unit) recordHook(name string, ctx *hookContext, code int) {
	env := map[string]string{}
	for _, kv := range u.relationEnv(ctx) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	u.mu.Lock()
	u.hooks = append(u.hooks, HookRun{Name: name, Code: code, Env: env})
	u.mu.Unlock()
}

// Hooks are the hooks run so far, oldest first.
func (u *Unit) Hooks() []HookRun {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.hooks)
}
