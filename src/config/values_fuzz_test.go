package config

import (
	"slices"
	"strings"
	"testing"
)

// The value rules are fed arbitrary strings (seeds in testdata/fuzz/). For
// each: no panic, every rejection says something, and what is accepted is
// well formed and reads back the same.

func FuzzParseSize(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if err.Error() == "" || n != 0 {
				t.Fatalf("ParseSize(%q) = %d, %q: a rejection must say why and return 0", s, n, err)
			}
			return
		}
		if n <= 0 {
			t.Fatalf("ParseSize(%q) = %d bytes, want more than zero", s, n)
		}
		unit, ok := sizeUnits[s[len(s)-3:]]
		if !ok || int64(n)%unit != 0 {
			t.Fatalf("ParseSize(%q) = %d: not a whole number of its unit", s, n)
		}
		if again, err := ParseSize(strings.TrimLeft(s[:len(s)-3], "0") + s[len(s)-3:]); err != nil || again != n {
			t.Fatalf("ParseSize(%q) = %d, but without leading zeros %d, %v", s, n, again, err)
		}
	})
}

func FuzzParseLabels(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		labels, err := ParseLabels(s)
		if err != nil {
			if err.Error() == "" || labels != nil {
				t.Fatalf("ParseLabels(%q) = %q, %q: a rejection must say why and return nothing", s, labels, err)
			}
			return
		}
		for _, l := range labels {
			if !labelPattern.MatchString(l) {
				t.Fatalf("ParseLabels(%q) accepted %q", s, l)
			}
		}
		if again, err := ParseLabels(strings.Join(labels, ",")); err != nil || !slices.Equal(again, labels) {
			t.Fatalf("ParseLabels(%q) = %q, which reads back as %q, %v", s, labels, again, err)
		}
	})
}

func FuzzParsePath(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			if err.Error() == "" || p != (Path{}) {
				t.Fatalf("ParsePath(%q) = %+v, %q: a rejection must say why and return nothing", s, p, err)
			}
			return
		}
		// A path is not normalised: what is accepted is what GitHub gets.
		if p.String() != s || p.Owner == "" {
			t.Fatalf("ParsePath(%q) = %+v, which prints as %q", s, p, p)
		}
		if again, err := ParsePath(p.String()); err != nil || again != p {
			t.Fatalf("ParsePath(%q) = %+v, which reads back as %+v, %v", s, p, again, err)
		}
	})
}

func FuzzParseDenylist(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		prefixes, err := ParseDenylist(s)
		if err != nil {
			if err.Error() == "" || prefixes != nil {
				t.Fatalf("ParseDenylist(%q) = %v, %q: a rejection must say why and return nothing", s, prefixes, err)
			}
			return
		}
		texts := make([]string, len(prefixes))
		for i, p := range prefixes {
			if !p.Addr().Is4() || p != p.Masked() {
				t.Fatalf("ParseDenylist(%q) accepted %v, not a masked IPv4 CIDR", s, p)
			}
			texts[i] = p.String()
		}
		if again, err := ParseDenylist(strings.Join(texts, ",")); err != nil || !slices.Equal(again, prefixes) {
			t.Fatalf("ParseDenylist(%q) = %v, which reads back as %v, %v", s, prefixes, again, err)
		}
	})
}
