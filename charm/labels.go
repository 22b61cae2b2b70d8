package charm

import (
	"runtime"
	"strings"

	"github.com/canonical/github-runner-charm/src/config"
)

// machineArch is the unit's machine's architecture: the charm runs there,
// built for it. (A variable so that a test can be another machine.)
var machineArch = runtime.GOARCH

// platformLabels are the labels, besides self-hosted and linux, that a
// runner gets from its platform, as config.sh and the Python charm gave
// them: the architecture (x64 or arm64), the application's name, the base
// image (LXD) or the flavor (OpenStack), and the image relation's tags.
// On LXD the architecture is the unit's machine's (LXD runs its own
// architecture's images); on OpenStack it is the one the image's tags name
// (the image builder tags its images with it), else the unit's machine's.
// A derived value that is no label (a flavor "m1.small", a base image
// "ubuntu:24.04" gives "24.04") is left out; the labels option can add
// what a workflow asks for.
func platformLabels(s Settings, unit string) []string {
	arch := config.ArchLabel(machineArch)
	labels := []string{arch, unitApp(unit)}
	if o := s.OpenStack; o != nil {
		if tagged := config.ArchOfTags(s.ImageTags); tagged != "" {
			arch = tagged
		}
		labels = []string{arch, unitApp(unit), o.Flavor}
		labels = append(labels, s.ImageTags...)
	} else {
		alias := s.BaseImage[strings.LastIndex(s.BaseImage, ":")+1:]
		labels = append(labels, alias)
	}
	var out []string
	for _, l := range labels {
		if l != "" && config.IsLabel(l) {
			out = append(out, l)
		}
	}
	return config.RunnerLabels(nil, out)[len(config.DefaultLabels):]
}

// unitApp is the application of a unit name.
func unitApp(unit string) string {
	app, _, _ := strings.Cut(unit, "/")
	return app
}
