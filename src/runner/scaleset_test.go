package runner

import (
	"strings"
	"testing"
)

func TestScaleSetName(t *testing.T) {
	id := Identity{Model: modelA, App: "github-runner", Unit: 3}
	tag := id.ModelTag()
	long := strings.Repeat("x", 60)
	tests := []struct {
		name   string
		id     Identity
		option string
		want   string
	}{
		{"plain", id, "linux-x64", "linux-x64-3-" + tag},
		{"another unit", Identity{Model: modelA, App: "github-runner", Unit: 12}, "linux-x64", "linux-x64-12-" + tag},
		{"another model", Identity{Model: modelB, App: "github-runner", Unit: 3}, "linux-x64", "linux-x64-3-" + Identity{Model: modelB}.ModelTag()},
		// The option is cut, never the unit or the model tag: those keep
		// the names of two units apart.
		{"long option", id, long, long[:MaxScaleSetNameLength-len("-3-"+tag)] + "-3-" + tag},
		// Characters the client would put in a query unescaped, or GitHub
		// would refuse, become '-'.
		{"query characters", id, "a&b#c+d e/f?g", "a-b-c-d-e-f-g-3-" + tag},
		{"dots and underscores kept", id, "gpu_v1.2", "gpu_v1.2-3-" + tag},
		{"cut leaves no trailing dash", id, strings.Repeat("y", MaxScaleSetNameLength-len("-3-"+tag)-1) + "-z", strings.Repeat("y", MaxScaleSetNameLength-len("-3-"+tag)-1) + "-3-" + tag},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			got := test.id.ScaleSetName(test.option)
			if got != test.want {
				t.Errorf("ScaleSetName(%q) = %q, want %q", test.option, got, test.want)
			}
			if len(got) > MaxScaleSetNameLength {
				t.Errorf("%q is %d characters, more than %d", got, len(got), MaxScaleSetNameLength)
			}
			if strings.ContainsAny(got, "&#+ ?/") {
				t.Errorf("%q holds a character a query carries unescaped", got)
			}
		})
	}
	if id.ScaleSetName("a") == (Identity{Model: modelA, App: "github-runner", Unit: 30}).ScaleSetName("a") {
		t.Error("units 3 and 30 share a scale set")
	}
}
