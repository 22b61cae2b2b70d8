package config

import (
	"slices"
	"testing"
)

func TestRunnerLabels(t *testing.T) {
	tests := []struct {
		name             string
		platform, labels []string
		want             []string
	}{
		{"defaults only", nil, nil, []string{"self-hosted", "linux"}},
		{"platform then option", []string{"x64", "github-runner", "noble"}, []string{"gpu"},
			[]string{"self-hosted", "linux", "x64", "github-runner", "noble", "gpu"}},
		{"once each, case-insensitively", []string{"x64", "noble", "X64"}, []string{"Linux", "noble", "gpu"},
			[]string{"self-hosted", "linux", "x64", "noble", "gpu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RunnerLabels(tt.platform, tt.labels); !slices.Equal(got, tt.want) {
				t.Errorf("RunnerLabels(%v, %v) = %v, want %v", tt.platform, tt.labels, got, tt.want)
			}
			g := GitHub{PlatformLabels: tt.platform, Labels: tt.labels}
			if got := g.RunnerLabels(); !slices.Equal(got, tt.want) {
				t.Errorf("GitHub.RunnerLabels = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestArchLabels(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x64", "arm64": "arm64", "s390x": "", "riscv64": ""} {
		if got := ArchLabel(goarch); got != want {
			t.Errorf("ArchLabel(%q) = %q, want %q", goarch, got, want)
		}
	}
	for _, tt := range []struct {
		tags []string
		want string
	}{
		{[]string{"noble", "x64"}, "x64"}, {[]string{"jammy", "ARM64"}, "arm64"}, {[]string{"amd64"}, "x64"},
		{[]string{"aarch64", "x64"}, "arm64"}, {[]string{"noble"}, ""}, {nil, ""},
	} {
		if got := ArchOfTags(tt.tags); got != tt.want {
			t.Errorf("ArchOfTags(%v) = %q, want %q", tt.tags, got, tt.want)
		}
	}
}

func TestPlatformLabelsAreChecked(t *testing.T) {
	f := validFile()
	f.GitHub.PlatformLabels = []string{"x64", "m1.small"}
	problems := f.Problems()
	if !slices.ContainsFunc(problems, func(p Problem) bool { return p.Field == "github.platform-labels" }) {
		t.Errorf("problems of a platform label with a dot = %v, want one of github.platform-labels", problems)
	}
	if IsLabel("m1.small") || !IsLabel("runner-small") {
		t.Errorf("IsLabel: a dot is no label character, a dash is")
	}
}
