package runner

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	prefix := Prefix("github-runner", 1)
	name := NewName(prefix)
	if !HasPrefix(name, prefix) || len(name) != len(prefix)+13 {
		t.Fatalf("name %q does not carry prefix %q", name, prefix)
	}
	if NewName(prefix) == name {
		t.Error("two names are equal")
	}
	tests := []struct {
		name, prefix string
		want         bool
	}{
		{"github-runner-1-0123456789ab", "github-runner-1", true},
		{"github-runner-10-0123456789ab", "github-runner-1", false}, // another unit
		{"github-runner-1-0123456789a", "github-runner-1", false},   // short suffix
		{"github-runner-1-0123456789AB", "github-runner-1", false},
		{"github-runner-1-0123456789xy", "github-runner-1", false},
		{"other-1-0123456789ab", "github-runner-1", false},
	}
	for _, test := range tests {
		if got := HasPrefix(test.name, test.prefix); got != test.want {
			t.Errorf("HasPrefix(%q, %q) = %v", test.name, test.prefix, got)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	if err := CheckPrefix(Prefix("github-runner", 12)); err != nil {
		t.Error(err)
	}
	long := Prefix(strings.Repeat("a", 49), 0)
	if err := CheckPrefix(long); err == nil || !strings.Contains(err.Error(), "at most 48 characters") {
		t.Errorf("long prefix: %v", err)
	}
	if err := CheckPrefix(Prefix(strings.Repeat("a", 48), 1)); err != nil {
		t.Errorf("prefix at the limit: %v", err)
	}
}
