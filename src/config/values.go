// Package config holds the value rules shared by the charm (which validates
// Juju config) and the runner manager (which reads its own config file): what
// a GitHub path, a label list, a size or a denylist is, and how each is parsed.
// Keeping them here means the charm and the service can never disagree on what
// a valid value is.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/canonical/github-runner-charm/src/runner"
)

// Path is where runners register: an organisation, or one repository.
type Path struct {
	Owner string // organisation or user
	Repo  string // empty for an organisation
}

// IsOrg tells whether runners register at organisation level.
func (p Path) IsOrg() bool { return p.Repo == "" }

func (p Path) String() string {
	if p.IsOrg() {
		return p.Owner
	}
	return p.Owner + "/" + p.Repo
}

var (
	// GitHub logins: alphanumerics and single hyphens, not at either end, at most 39 characters.
	ownerPattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9]|-[A-Za-z0-9]){0,38}$`)
	// Repository names: alphanumerics, '-', '_' and '.', but not "." or "..".
	repoPattern  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	labelPattern = regexp.MustCompile(`^[\w-]+$`)
	// Scale-set names: what a label, a URL query value and the client
	// take as they are, and src/runner's ScaleSetName keeps whole.
	scaleSetPattern = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	sizePattern     = regexp.MustCompile(`^([0-9]+)(KiB|MiB|GiB|TiB)$`)
)

// ParsePath reads "org" or "owner/repo".
func ParsePath(s string) (Path, error) {
	owner, repo, isRepo := strings.Cut(s, "/")
	if !ownerPattern.MatchString(owner) {
		return Path{}, fmt.Errorf("%q is neither an organisation nor owner/repo", s)
	}
	if !isRepo {
		return Path{Owner: owner}, nil
	}
	if !repoPattern.MatchString(repo) || repo == "." || repo == ".." {
		return Path{}, fmt.Errorf("%q is neither an organisation nor owner/repo", s)
	}
	return Path{Owner: owner, Repo: repo}, nil
}

// ParseLabels reads a comma-separated label list. Blank entries are ignored so
// that "a, b," means [a b]; each label must match ^[\w-]+$ as GitHub requires.
func ParseLabels(s string) ([]string, error) {
	var labels []string
	for _, field := range strings.Split(s, ",") {
		if label := strings.TrimSpace(field); label != "" {
			labels = append(labels, label)
		}
	}
	if err := labelsProblem(labels); err != nil {
		return nil, err
	}
	return labels, nil
}

// labelsProblem is what is wrong with a list of labels: each must match
// ^[\w-]+$.
func labelsProblem(labels []string) error {
	var bad []string
	for _, label := range labels {
		if !labelPattern.MatchString(label) {
			bad = append(bad, strconv.Quote(label))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s may only contain letters, digits, '_' and '-'", strings.Join(bad, ", "))
	}
	return nil
}

// scaleSetProblem is what is wrong with a runner-scale-set option: its
// characters, or a length that makes the name of the unit's scale set
// longer than src/runner allows (which would cut it). An identity that
// does not parse (reported as such) is not measured.
func scaleSetProblem(name, model, unit string) error {
	if !scaleSetPattern.MatchString(name) {
		return fmt.Errorf("%q may only contain letters, digits, '-', '_' and '.', and must start and end with a letter or digit", name)
	}
	id, err := runner.ParseIdentity(model, unit)
	if err != nil {
		return nil
	}
	// The unit's and model's part of the name, as ScaleSetName adds it.
	suffix := strings.TrimPrefix(id.ScaleSetName("x"), "x")
	if full := name + suffix; len(full) > runner.MaxScaleSetNameLength {
		return fmt.Errorf("%q is too long: the unit's scale set, %q, must be at most %d characters", name, full, runner.MaxScaleSetNameLength)
	}
	return nil
}

var sizeUnits = map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

// Size is a number of bytes, written "<n>KiB|MiB|GiB|TiB" (ParseSize).
type Size int64

// ParseSize reads "<n>KiB|MiB|GiB|TiB". Zero is refused: no instance runs
// with no memory or disk.
func ParseSize(s string) (Size, error) {
	m := sizePattern.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size like 512MiB or 10GiB (units KiB, MiB, GiB, TiB)", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	unit := sizeUnits[m[2]]
	if err != nil || n > (1<<62)/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("%q must be more than zero", s)
	}
	return Size(n * unit), nil
}

// Bytes is the size in bytes.
func (s Size) Bytes() int64 { return int64(s) }

// String writes the size in its largest whole unit ("7GiB"), as ParseSize
// reads it; a size of no whole KiB (which ParseSize never gives) is
// written in bytes, which ParseSize refuses.
func (s Size) String() string {
	for _, unit := range []string{"TiB", "GiB", "MiB", "KiB"} {
		if n := sizeUnits[unit]; s != 0 && int64(s)%n == 0 {
			return strconv.FormatInt(int64(s)/n, 10) + unit
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalYAML writes the size as ParseSize reads it.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }

// UnmarshalYAML reads a size by ParseSize.
func (s *Size) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.ScalarNode {
		return lineError(node, nil, "is not a size like 512MiB or 10GiB")
	}
	size, err := ParseSize(node.Value)
	if err != nil {
		return lineError(node, err, "")
	}
	*s = size
	return nil
}

// lineError is a value's error at its line of the file, as yaml.v3 reports
// its own: a *yaml.TypeError, so that every bad value is reported at once.
func lineError(node *yaml.Node, err error, otherwise string) error {
	text := otherwise
	if err != nil {
		text = err.Error()
	}
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", node.Line, text)}}
}

// Denylist is the IPv4 networks runners must not reach.
type Denylist []netip.Prefix

// ParseDenylist reads a comma-separated list of IPv4 CIDRs ("10.0.0.0/8,
// 192.168.1.7/32"). Blank entries are ignored; host bits are cleared.
func ParseDenylist(s string) (Denylist, error) {
	var prefixes Denylist
	var bad []string
	for _, field := range strings.Split(s, ",") {
		entry := strings.TrimSpace(field)
		if entry == "" {
			continue
		}
		prefix, err := parseCIDR(entry)
		if err != nil {
			bad = append(bad, strconv.Quote(entry))
			continue
		}
		prefixes = append(prefixes, prefix)
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s not an IPv4 CIDR like 10.0.0.0/8", joinIsAre(bad))
	}
	return prefixes, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	prefix, err := netip.ParsePrefix(s)
	if err != nil || !prefix.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 CIDR like 10.0.0.0/8", s)
	}
	return prefix.Masked(), nil
}

// UnmarshalYAML reads a list of IPv4 CIDRs, reporting every bad one.
func (d *Denylist) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.SequenceNode {
		return lineError(node, nil, "must be a list of IPv4 CIDRs like 10.0.0.0/8")
	}
	var list Denylist
	var errs []string
	for _, item := range node.Content {
		prefix, err := parseCIDR(item.Value)
		if item.Kind != yaml.ScalarNode {
			err = errors.New("is not an IPv4 CIDR like 10.0.0.0/8")
		}
		if err != nil {
			errs = append(errs, lineError(item, err, "").(*yaml.TypeError).Errors...)
			continue
		}
		list = append(list, prefix)
	}
	if len(errs) > 0 {
		return &yaml.TypeError{Errors: errs}
	}
	*d = list
	return nil
}

// problem is what is wrong with a denylist built in code (read ones are
// checked as they are read): each entry must be an IPv4 CIDR.
func (d Denylist) problem() error {
	var bad []string
	for _, p := range d {
		if !p.IsValid() || !p.Addr().Is4() {
			bad = append(bad, strconv.Quote(p.String()))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s not an IPv4 CIDR like 10.0.0.0/8", joinIsAre(bad))
	}
	return nil
}

func joinIsAre(items []string) string {
	if len(items) == 1 {
		return items[0] + " is"
	}
	return strings.Join(items, ", ") + " are"
}
