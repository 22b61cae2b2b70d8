package runner

import (
	"fmt"
	"strings"
)

// MaxScaleSetNameLength bounds a scale set's name. GitHub documents no
// limit; actions-runner-controller keeps its names within 45 characters,
// so ours do too.
const MaxScaleSetNameLength = 45

// ScaleSetName is the name of the unit's runner scale set, for the
// runner-scale-set option's value: "<option>-<unit>-<model tag>". Each
// unit owns one scale set (two listeners on one set conflict over its
// session), and the model tag keeps two models' units apart. Workflows
// reach the set by its labels (the option's value first), not its name.
//
// The option is cut to fit, never the unit or the tag; characters other
// than letters, digits, '-', '_' and '.' become '-', as the client puts
// the name in a query unescaped.
func (id Identity) ScaleSetName(option string) string {
	suffix := fmt.Sprintf("-%d-%s", id.Unit, id.ModelTag())
	name := strings.Map(func(c rune) rune {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' {
			return c
		}
		return '-'
	}, option)
	if max := MaxScaleSetNameLength - len(suffix); len(name) > max {
		name = name[:max]
	}
	// A cut may end on a '-'; "--" would read as a typo.
	if name = strings.Trim(name, "-"); name == "" {
		name = "scale-set"
	}
	return name + suffix
}
