package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// usageError is a tool's exit 2 (bad flags or arguments); any other error is
// exit 1, as juju/cmd does.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

type tool func(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error)

type toolDef struct {
	flags flagSpec
	run   tool
}

var tools = map[string]toolDef{
	"config-get":              {spec(withFormat(map[string]string{"a": "all", "all": "all"}), "format", "output"), configGet},
	"status-set":              {spec(map[string]string{"application": "application"}), statusSet},
	"status-get":              {spec(withFormat(map[string]string{"application": "application", "include-data": "include-data"}), "format", "output"), statusGet},
	"application-version-set": {spec(nil), applicationVersionSet},
	"juju-log":                {spec(map[string]string{"debug": "debug", "l": "log-level", "log-level": "log-level", "format": "format"}, "log-level", "format"), jujuLog},
	"action-get":              {spec(withFormat(nil), "format", "output"), actionGet},
	"action-set":              {spec(nil), actionSet},
	"action-fail":             {spec(nil), actionFail},
	"action-log":              {spec(nil), actionLog},
	"is-leader":               {spec(withFormat(nil), "format", "output"), isLeader},
	"relation-ids":            {spec(withFormat(nil), "format", "output"), relationIDs},
	"relation-list":           {spec(withFormat(relationFlags("app")), "format", "output", "relation"), relationList},
	"relation-get":            {spec(withFormat(relationFlags("app")), "format", "output", "relation"), relationGet},
	"relation-set":            {spec(relationFlags("app", "file", "format"), "relation", "file", "format"), relationSet},
	"secret-get":              {spec(withFormat(map[string]string{"label": "label", "peek": "peek", "refresh": "refresh"}), "format", "output", "label"), secretGet},
}

// relationFlags are -r/--relation plus the named flags.
func relationFlags(names ...string) map[string]string {
	m := map[string]string{"r": "relation", "relation": "relation"}
	for _, n := range names {
		m[n] = n
	}
	return m
}

// ToolNames are the hook tools the harness provides.
func ToolNames() []string {
	names := make([]string, 0, len(tools))
	for name := range tools {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// output renders v as juju/cmd's formatters do.
func output(p parsedArgs, v any) ([]byte, error) {
	switch format := p.flags["format"]; format {
	case "json":
		b, err := json.Marshal(v)
		return append(b, '\n'), err
	case "yaml":
		if v == nil {
			return nil, nil
		}
		return yaml.Marshal(v)
	case "", "smart":
		switch v := v.(type) {
		case nil:
			return nil, nil
		case string:
			if v == "" {
				return nil, nil
			}
			return []byte(v + "\n"), nil
		case []string: // juju/cmd FormatSmart: one per line
			if len(v) == 0 {
				return nil, nil
			}
			return []byte(strings.Join(v, "\n") + "\n"), nil
		case bool:
			if v {
				return []byte("True\n"), nil
			}
			return []byte("False\n"), nil
		default:
			return yaml.Marshal(v)
		}
	default:
		return nil, usagef("invalid value %q for option --format: unknown format %q", format, format)
	}
}

func configGet(u *Unit, _ *hookContext, p parsedArgs) ([]byte, error) {
	if len(p.args) > 1 {
		return nil, usagef("unrecognized args: %q", p.args[1:])
	}
	settings := u.configSettings()
	if len(p.args) == 1 {
		if p.has("all") {
			return nil, usagef("cannot use argument --all together with key %q", p.args[0])
		}
		// An unknown key is not an error: it prints null.
		return output(p, settings[p.args[0]])
	}
	if !p.has("all") {
		for k, v := range settings {
			if v == nil {
				delete(settings, k)
			}
		}
	}
	return output(p, settings)
}

var settableStatuses = []string{"maintenance", "blocked", "waiting", "active"}

func statusSet(u *Unit, _ *hookContext, p parsedArgs) ([]byte, error) {
	if len(p.args) < 1 {
		return nil, usagef("invalid args, require <status> [message] [data]")
	}
	if len(p.args) > 2 {
		return nil, usagef("unrecognized args: %q", p.args[2:])
	}
	status := p.args[0]
	valid := false
	for _, s := range settableStatuses {
		valid = valid || s == status
	}
	if !valid {
		return nil, usagef("invalid status %q, expected one of [%s]", status, strings.Join(settableStatuses, " "))
	}
	if p.has("application") && !u.isLeader() {
		return nil, errors.New("this unit is not the leader")
	}
	message := ""
	if len(p.args) == 2 {
		message = p.args[1]
	}
	u.setStatus(Status{Status: status, Message: message})
	return nil, nil
}

func statusGet(u *Unit, _ *hookContext, p parsedArgs) ([]byte, error) {
	s := u.Status()
	if p.has("include-data") {
		return output(p, map[string]any{"status": s.Status, "message": s.Message, "status-data": map[string]any{}})
	}
	if p.flags["format"] == "json" {
		return output(p, map[string]any{"status": s.Status})
	}
	return output(p, s.Status)
}

func applicationVersionSet(u *Unit, _ *hookContext, p parsedArgs) ([]byte, error) {
	switch len(p.args) {
	case 0:
		return nil, usagef("no version specified")
	case 1:
		u.mu.Lock()
		u.appVersion = p.args[0]
		u.mu.Unlock()
		return nil, nil
	default:
		return nil, usagef("unrecognized args: %q", p.args[1:])
	}
}

var logLevels = map[string]bool{"TRACE": true, "DEBUG": true, "INFO": true, "WARNING": true, "ERROR": true, "CRITICAL": true}

func jujuLog(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	if len(p.args) == 0 {
		return nil, usagef("no message specified")
	}
	level := strings.ToUpper(p.flags["log-level"])
	if p.has("debug") {
		level = "DEBUG"
	}
	var warning []byte
	if level == "" {
		level = "INFO"
	} else if !logLevels[level] {
		warning = []byte(fmt.Sprintf("WARNING Specified log level (%s) is not valid\n", p.flags["log-level"]))
		level = "INFO"
	}
	u.mu.Lock()
	prefix := "" // in a relation hook Juju prefixes the relation: "cos-agent:1: "
	if ctx.relation != nil {
		prefix = u.relations.byID[ctx.relation.id].fakeID() + ": "
	}
	u.logs = append(u.logs, LogLine{Level: level, Message: prefix + strings.Join(p.args, " ")})
	u.mu.Unlock()
	return warning, nil
}

func requireAction(ctx *hookContext) error {
	if ctx.action == nil {
		return errors.New("not running an action")
	}
	return nil
}

func actionGet(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	if err := requireAction(ctx); err != nil {
		return nil, err
	}
	if len(p.args) > 1 {
		return nil, usagef("unrecognized args: %q", p.args[1:])
	}
	if len(p.args) == 0 {
		return output(p, ctx.action.params)
	}
	var value any = ctx.action.params
	for _, key := range strings.Split(p.args[0], ".") {
		m, ok := value.(map[string]any)
		if !ok {
			value = nil
			break
		}
		value = m[key]
	}
	return output(p, value)
}

var actionKeySegment = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$`)

var reservedActionKeys = map[string]bool{"stdout": true, "stdout-encoding": true, "stderr": true, "stderr-encoding": true}

func actionSet(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	if len(p.args) == 0 {
		return nil, usagef("no action results specified")
	}
	type pair struct {
		path  []string
		value string
	}
	var pairs []pair
	for _, arg := range p.args {
		key, value, ok := strings.Cut(arg, "=")
		if !ok || key == "" {
			return nil, usagef("argument %q must be of the form key...=value", arg)
		}
		path := strings.Split(key, ".")
		for _, segment := range path {
			if !actionKeySegment.MatchString(segment) {
				return nil, usagef("key %q must start and end with lowercase alphanumeric, and contain only lowercase alphanumeric and hyphens", segment)
			}
		}
		if reservedActionKeys[path[0]] {
			return nil, usagef("cannot set reserved action key %q", path[0])
		}
		pairs = append(pairs, pair{path, value})
	}
	if err := requireAction(ctx); err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, kv := range pairs {
		m := ctx.action.results
		for _, segment := range kv.path[:len(kv.path)-1] {
			inner, ok := m[segment].(map[string]any)
			if !ok {
				inner = map[string]any{}
				m[segment] = inner
			}
			m = inner
		}
		m[kv.path[len(kv.path)-1]] = kv.value
	}
	return nil, nil
}

func actionFail(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	if len(p.args) > 1 {
		return nil, usagef("unrecognized args: %q", p.args[1:])
	}
	if err := requireAction(ctx); err != nil {
		return nil, err
	}
	message := "action failed without reason given, check action for errors"
	if len(p.args) == 1 {
		message = p.args[0]
	}
	u.mu.Lock()
	ctx.action.failed, ctx.action.failMessage = true, message
	u.mu.Unlock()
	return nil, nil
}

func actionLog(u *Unit, ctx *hookContext, p parsedArgs) ([]byte, error) {
	if len(p.args) == 0 {
		return nil, usagef("no message specified")
	}
	if err := requireAction(ctx); err != nil {
		return nil, err
	}
	u.mu.Lock()
	ctx.action.log = append(ctx.action.log, strings.Join(p.args, " "))
	u.mu.Unlock()
	return nil, nil
}

func isLeader(u *Unit, _ *hookContext, p parsedArgs) ([]byte, error) {
	if len(p.args) > 0 {
		return nil, usagef("unrecognized args: %q", p.args)
	}
	return output(p, u.isLeader())
}
