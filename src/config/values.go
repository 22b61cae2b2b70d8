// Package config holds the value rules shared by the charm (which validates
// Juju config) and the runner manager (which reads its own config file): what
// a GitHub path, a label list, a size or a denylist is, and how each is parsed.
// Keeping them here means the charm and the service can never disagree on what
// a valid value is.
package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
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
	sizePattern  = regexp.MustCompile(`^([0-9]+)(KiB|MiB|GiB|TiB)$`)
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
	var labels, bad []string
	for _, field := range strings.Split(s, ",") {
		label := strings.TrimSpace(field)
		switch {
		case label == "":
		case labelPattern.MatchString(label):
			labels = append(labels, label)
		default:
			bad = append(bad, strconv.Quote(label))
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s may only contain letters, digits, '_' and '-'", strings.Join(bad, ", "))
	}
	return labels, nil
}

var sizeUnits = map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}

// ParseSize reads "<n>KiB|MiB|GiB|TiB" and returns bytes. Zero is refused:
// no instance runs with no memory or disk.
func ParseSize(s string) (int64, error) {
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
	return n * unit, nil
}

// ParseDenylist reads a comma-separated list of IPv4 CIDRs ("10.0.0.0/8,
// 192.168.1.7/32"). Blank entries are ignored.
func ParseDenylist(s string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	var bad []string
	for _, field := range strings.Split(s, ",") {
		entry := strings.TrimSpace(field)
		if entry == "" {
			continue
		}
		prefix, err := netip.ParsePrefix(entry)
		if err != nil || !prefix.Addr().Is4() {
			bad = append(bad, strconv.Quote(entry))
			continue
		}
		prefixes = append(prefixes, prefix.Masked())
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("%s not an IPv4 CIDR like 10.0.0.0/8", joinIsAre(bad))
	}
	return prefixes, nil
}

func joinIsAre(items []string) string {
	if len(items) == 1 {
		return items[0] + " is"
	}
	return strings.Join(items, ", ") + " are"
}
