package config

import (
	"slices"
	"strings"
)

// DefaultLabels are what GitHub's config.sh gives every runner and a JIT
// configuration does not: workflows ask for them (runs-on: [self-hosted,
// linux]). The architecture, config.sh's third, is a platform label.
var DefaultLabels = []string{"self-hosted", "linux"}

// ArchLabel is GitHub's label for a Go architecture (runtime.GOARCH): x64
// or arm64, the runner application's two Linux builds; "" for any other.
func ArchLabel(goarch string) string {
	switch goarch {
	case "amd64":
		return "x64"
	case "arm64":
		return "arm64"
	}
	return ""
}

// ArchOfTags is the architecture label a tag names (the image builder tags
// its images with their base and architecture, e.g. "noble,x64"), in
// GitHub's spelling; "" when no tag names one.
func ArchOfTags(tags []string) string {
	for _, tag := range tags {
		switch strings.ToLower(tag) {
		case "x64", "amd64", "x86_64":
			return "x64"
		case "arm64", "aarch64":
			return "arm64"
		}
	}
	return ""
}

// IsLabel tells a value that can be a runner label as it is (the rule of
// the labels option, ParseLabels): a derived value that cannot (a flavor
// "m1.small") is left out of the platform labels rather than mangled.
func IsLabel(value string) bool { return labelPattern.MatchString(value) }

// RunnerLabels is every label a runner registers with, once each (GitHub's
// labels are case-insensitive), in order: DefaultLabels, the platform's
// (github.platform-labels: the architecture, the application, the base
// image or the flavor, the image's tags), then the labels option's. Classic
// runners and the scale set get the same list.
func RunnerLabels(platform, labels []string) []string {
	var out []string
	for _, group := range [][]string{DefaultLabels, platform, labels} {
		for _, label := range group {
			if label != "" && !slices.ContainsFunc(out, func(l string) bool { return strings.EqualFold(l, label) }) {
				out = append(out, label)
			}
		}
	}
	return out
}

// RunnerLabels is the labels of the unit's runners (see RunnerLabels).
func (g GitHub) RunnerLabels() []string { return RunnerLabels(g.PlatformLabels, g.Labels) }
