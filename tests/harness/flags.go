package harness

import (
	"fmt"
	"strings"
)

// flagSpec describes one tool's flags the way juju/cmd declares them with
// gnuflag: each name (long or short alias) maps to its canonical name, and
// valued says which flags take a value.
type flagSpec struct {
	names  map[string]string
	valued map[string]bool
}

type parsedArgs struct {
	flags map[string]string // canonical name → value ("true" for booleans)
	args  []string          // positional arguments, in order
	stdin []byte            // what the tool read from stdin (only for `--file -`)
	dir   string            // the tool's working directory
}

func (p parsedArgs) has(name string) bool { _, ok := p.flags[name]; return ok }

// parse applies GNU-style rules as gnuflag does: flags and positional
// arguments may interleave; "--name=value", "--name value", "-n value" are
// accepted; "--" ends the flags; a lone "-" is positional.
func (s flagSpec) parse(args []string) (parsedArgs, error) {
	p := parsedArgs{flags: map[string]string{}}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			p.args = append(p.args, args[i+1:]...)
			break
		}
		if len(arg) < 2 || arg[0] != '-' {
			p.args = append(p.args, arg)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		canonical, ok := s.names[name]
		if !ok {
			return p, fmt.Errorf("flag provided but not defined: %s", strings.SplitN(arg, "=", 2)[0])
		}
		switch {
		case !s.valued[canonical]:
			if hasValue && value != "true" && value != "false" {
				return p, fmt.Errorf("invalid value %q for flag %s", value, arg)
			}
			if !hasValue {
				value = "true"
			}
		case !hasValue:
			if i+1 >= len(args) {
				return p, fmt.Errorf("flag needs an argument: %s", arg)
			}
			i++
			value = args[i]
		}
		p.flags[canonical] = value
	}
	return p, nil
}

// formatFlags are the output flags of every tool that prints something.
var formatFlags = map[string]string{"format": "format", "o": "output", "output": "output"}

func spec(names map[string]string, valued ...string) flagSpec {
	s := flagSpec{names: map[string]string{}, valued: map[string]bool{}}
	for k, v := range names {
		s.names[k] = v
	}
	for _, v := range valued {
		s.valued[v] = true
	}
	return s
}

func withFormat(names map[string]string) map[string]string {
	all := map[string]string{}
	for k, v := range formatFlags {
		all[k] = v
	}
	for k, v := range names {
		all[k] = v
	}
	return all
}
