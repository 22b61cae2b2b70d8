package config

import (
	"strings"
	"testing"
)

// The OpenStack image is given (openstack.image) or built from a base
// image (openstack.base-image): one of them is required.
func TestOpenStackImageOrBaseImage(t *testing.T) {
	clouds := "clouds:\n  prod:\n    " + testAuth + "\n"
	for _, tc := range []struct {
		name, image, base string
		want              string // the problem, "" for none
	}{
		{"an image", "runner", "", ""},
		{"a base image", "", "ubuntu", ""},
		{"both: the image is used", "runner", "ubuntu", ""},
		{"neither", "", "", "openstack.image: is required"},
		{"a base image with spaces around it", "", " ubuntu", "openstack.base-image: has leading or trailing spaces"},
	} {
		o := &OpenStack{CloudsYAML: clouds, Flavor: "f", Network: "n", Image: tc.image, BaseImage: tc.base}
		var got []string
		for _, p := range o.Problems() {
			got = append(got, p.Field+": "+p.Problem)
		}
		if tc.want == "" && len(got) > 0 || tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.want)) {
			t.Errorf("%s: problems %q, want %q", tc.name, got, tc.want)
		}
	}
}
