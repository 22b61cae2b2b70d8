package runner

import "testing"

// The Python charm's names (upstream MID: 24 hex; NEW: 12 hex, once after
// an "r-" or "n-" infix) are recognised for the unit they name, and only
// for it; an instance is a candidate of the Python charm only without any
// of this charm's metadata.
func TestFromPythonCharm(t *testing.T) {
	id := Identity{Model: modelA, App: "github-runner", Unit: 1}
	mid := "github-runner-1-0123456789abcdef01234567"
	tests := []struct {
		name  string
		inst  string
		owner Owner
		gen   Generation
		want  bool
	}{
		{"MID, 24 hex", mid, Owner{}, PythonCharm, true},
		{"NEW, 12 hex", "github-runner-1-0123456789ab", Owner{}, Legacy, true},
		{"NEW, reactive infix", "github-runner-1-r-0123456789ab", Owner{}, PythonCharm, true},
		{"NEW, non-reactive infix", "github-runner-1-n-0123456789ab", Owner{}, PythonCharm, true},
		{"another infix", "github-runner-1-x-0123456789ab", Owner{}, NotOurs, false},
		{"infix with 24 hex", "github-runner-1-r-0123456789abcdef01234567", Owner{}, NotOurs, false},
		{"23 hex", mid[:len(mid)-1], Owner{}, NotOurs, false},
		{"upper case", "github-runner-1-0123456789ABCDEF01234567", Owner{}, NotOurs, false},
		{"another unit", "github-runner-10-0123456789abcdef01234567", Owner{}, NotOurs, false},
		{"another unit, infix", "github-runner-11-n-0123456789ab", Owner{}, NotOurs, false},
		{"another application", "other-1-0123456789abcdef01234567", Owner{}, NotOurs, false},
		{"an application whose name ends like ours", "my-github-runner-1-0123456789abcdef01234567", Owner{}, NotOurs, false},
		{"12 hex with this charm's legacy metadata", "github-runner-1-0123456789ab", Owner{Unit: "github-runner/1"}, Legacy, false},
		{"24 hex with another model's metadata", mid, Owner{Model: modelB, Unit: "github-runner/1"}, PythonCharm, false},
		{"24 hex with our metadata", mid, id.Owner(), PythonCharm, false},
		{"a current name without metadata", id.NewName(), Owner{}, Current, false},
	}
	for _, test := range tests {
		if got := id.Generation(test.inst); got != test.gen {
			t.Errorf("%s: Generation(%q) = %v, want %v", test.name, test.inst, got, test.gen)
		}
		if got := id.FromPythonCharm(test.inst, test.owner); got != test.want {
			t.Errorf("%s: FromPythonCharm(%q, %+v) = %v", test.name, test.inst, test.owner, got)
		}
		// The Python charm's instances are never ours by OwnsInstance:
		// only the engine, with GitHub's word, takes one.
		if test.want && id.OwnsInstance(test.inst, test.owner) {
			t.Errorf("%s: OwnsInstance(%q) = true", test.name, test.inst)
		}
	}
}
