package runner

import (
	"strings"
	"testing"
)

var (
	modelA = "3c5b1f5c-8a51-4d5e-8e4b-6a0c2a9b7f10"
	modelB = "f1e2d3c4-0000-4000-8000-000000000001"
)

func TestNames(t *testing.T) {
	id := Identity{Model: modelA, App: "github-runner", Unit: 1}
	name := id.NewName()
	if id.Generation(name) != Current || len(name) != len(id.Prefix())+1+suffixLength {
		t.Fatalf("name %q is not of prefix %q", name, id.Prefix())
	}
	if id.NewName() == name {
		t.Error("two names are equal")
	}
	if !strings.HasPrefix(id.Prefix(), "github-runner-") || !strings.HasSuffix(id.Prefix(), "-"+id.ModelTag()+"-1") {
		t.Errorf("prefix %q", id.Prefix())
	}
	other := Identity{Model: modelB, App: "github-runner", Unit: 1}
	if other.Prefix() == id.Prefix() {
		t.Fatal("two models share a prefix")
	}
	tag := id.ModelTag()
	tests := []struct {
		name string
		want Generation
	}{
		{"github-runner-" + tag + "-1-0123abcd", Current},
		{"github-runner-" + tag + "-10-0123abcd", NotOurs}, // another unit
		{"github-runner-" + tag + "-1-0123abc", NotOurs},   // short suffix
		{"github-runner-" + tag + "-1-0123ABCD", NotOurs},
		{"github-runner-" + other.ModelTag() + "-1-0123abcd", NotOurs}, // another model
		{"github-runner-1-0123456789ab", Legacy},
		{"github-runner-10-0123456789ab", NotOurs},
		{"github-runner-1-0123456789a", NotOurs},
		{"github-runner-1-0123456789AB", NotOurs},
		{"github-runner-1-0123456789xy", NotOurs},
		{"github-runner-1-0123abcd", NotOurs}, // a current suffix on the legacy prefix
		{"other-1-0123456789ab", NotOurs},
	}
	for _, test := range tests {
		if got := id.Generation(test.name); got != test.want {
			t.Errorf("Generation(%q) = %v, want %v", test.name, got, test.want)
		}
	}
}

// An instance is ours only when its name and its metadata both say so.
func TestOwnsInstance(t *testing.T) {
	id := Identity{Model: modelA, App: "github-runner", Unit: 0}
	current, legacy := id.NewName(), "github-runner-0-0123456789ab"
	tests := []struct {
		name  string
		inst  string
		owner Owner
		want  bool
	}{
		{"current, our metadata", current, id.Owner(), true},
		{"current, another model's metadata", current, Owner{Model: modelB, Unit: "github-runner/0"}, false},
		{"current, another unit's metadata", current, Owner{Model: modelA, Unit: "github-runner/1"}, false},
		{"current, metadata lost", current, Owner{}, false},
		{"legacy, legacy metadata", legacy, Owner{Unit: "github-runner/0"}, true},
		{"legacy, another unit", legacy, Owner{Unit: "github-runner/1"}, false},
		{"legacy name with a model's metadata", legacy, id.Owner(), false},
		{"another app", "other-0-0123456789ab", Owner{Unit: "other/0"}, false},
	}
	for _, test := range tests {
		if got := id.OwnsInstance(test.inst, test.owner); got != test.want {
			t.Errorf("%s: OwnsInstance = %v", test.name, got)
		}
	}
}

// Generation keeps what it works out of the last identity it was asked
// for; identities asked for in turn, from many goroutines, each still get
// their own answers.
func TestGenerationOfIdentitiesInTurn(t *testing.T) {
	ids := []Identity{
		{Model: modelA, App: "github-runner", Unit: 0},
		{Model: modelB, App: "github-runner", Unit: 0},
		{Model: modelA, App: "github-runner", Unit: 1},
		{Model: modelA, App: "other", Unit: 0},
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.NewName()
	}
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 200 {
				for i, id := range ids {
					for j, name := range names {
						if got, want := id.Generation(name) == Current, i == j; got != want {
							t.Errorf("%+v: Generation(%q) current = %v", id, name, got)
							return
						}
						if got, want := id.OwnsInstance(name, ids[j].Owner()), i == j; got != want {
							t.Errorf("%+v: OwnsInstance(%q) = %v", id, name, got)
							return
						}
					}
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
}

func TestCheck(t *testing.T) {
	if err := (Identity{Model: modelA, App: "github-runner", Unit: 12}).Check(); err != nil {
		t.Error(err)
	}
	// 63 = app + "-" + 6 + "-" + "0" + "-" + 8: the app may have 45.
	if err := (Identity{Model: modelA, App: strings.Repeat("a", 46), Unit: 0}).Check(); err == nil || !strings.Contains(err.Error(), "at most 45 characters") {
		t.Errorf("long app: %v", err)
	}
	if err := (Identity{Model: modelA, App: strings.Repeat("a", 45), Unit: 1}).Check(); err != nil {
		t.Errorf("app at the limit: %v", err)
	}
	if err := (Identity{Model: modelA, App: "a_b", Unit: 1}).Check(); err == nil {
		t.Error("an underscore makes no host name")
	}
}

func TestParseIdentity(t *testing.T) {
	id, err := ParseIdentity(modelA, "github-runner/3")
	if err != nil || id != (Identity{Model: modelA, App: "github-runner", Unit: 3}) {
		t.Fatalf("%+v, %v", id, err)
	}
	for _, unit := range []string{"", "app", "app/", "/0", "app/-1", "app/x"} {
		if _, err := ParseIdentity(modelA, unit); err == nil {
			t.Errorf("%q: no error", unit)
		}
	}
	if _, err := ParseIdentity("", "app/0"); err == nil {
		t.Error("no model: no error")
	}
}

func TestScope(t *testing.T) {
	s := NewScope("https://ghe.example.com/api/v3/", "my-org")
	got, ok := ParseScope(s.String())
	if !ok || got != s || got.APIURL != "https://ghe.example.com/api/v3" {
		t.Fatalf("round trip: %+v %v", got, ok)
	}
	for _, bad := range []string{"", "my-org", "@https://x", "my-org@"} {
		if _, ok := ParseScope(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}
