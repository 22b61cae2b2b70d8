package config

import (
	"maps"
	"strings"
	"testing"
)

const testAuth = "auth: {auth_url: https://keystone:5000/v3, username: u, password: hunter2, project_name: p, user_domain_name: d, project_domain_name: d}"

// What OpenStack's client library (which src/openstack hands the file to)
// cannot read is refused here, where the charm asks, not when the manager
// opens the cloud at start.
func TestParseCloudsYAMLAsOpenStackReadsIt(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"verify not a bool", "clouds:\n  prod:\n    " + testAuth + "\n    verify: sometimes\n",
			"is not valid clouds.yaml: a setting has the wrong type for OpenStack's clients (line 4)"},
		{"another cloud of the wrong shape", "clouds:\n  prod:\n    " + testAuth + "\n  other: [1, 2]\n",
			"is not valid clouds.yaml: a setting has the wrong type for OpenStack's clients (line 4)"},
		{"regions not a list", "clouds:\n  prod:\n    " + testAuth + "\n    regions: RegionOne\n",
			"is not valid clouds.yaml: a setting has the wrong type for OpenStack's clients (line 4)"},
		{"a cloud with no name", "clouds:\n  \"\":\n    " + testAuth + "\n",
			`lacks required settings: cloud "" cannot be read by OpenStack's clients: the empty string "" is not a valid cloud name`},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			_, err := ParseCloudsYAML(test.text, "")
			if err == nil || err.Error() != test.want {
				t.Fatalf("ParseCloudsYAML = %v, want %q", err, test.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	if _, err := ParseCloudsYAML("clouds:\n  prod:\n    "+testAuth+"\n    verify: false\n    regions: [RegionOne]\n", ""); err != nil {
		t.Errorf("a clouds.yaml OpenStack's clients read is refused: %v", err)
	}
}

// Auth is the chosen cloud's auth settings, as the image builder reads them
// (the first cloud's when none is named): scalars as text, nested and null
// values left out.
func TestCloudsYAMLAuth(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       map[string]string
		fails      bool
	}{
		{"the first cloud's auth, scalars as text",
			"clouds:\n  b:\n    region_name: R\n    auth:\n      auth_url: https://k:5000/v3\n      username: u\n      password: 'hunter 2'\n      project_name: p\n      user_domain_name: d\n      project_domain_name: d\n      port: 5000\n      nested: {x: y}\n      none: null\n  a:\n    auth: {auth_url: https://other/v3}\n",
			map[string]string{"auth_url": "https://k:5000/v3", "username": "u", "password": "hunter 2", "project_name": "p",
				"user_domain_name": "d", "project_domain_name": "d", "port": "5000"}, false},
		{"application credential",
			"clouds:\n  c:\n    auth_type: v3applicationcredential\n    auth: {auth_url: https://k/v3, application_credential_id: id1, application_credential_secret: s3}\n",
			map[string]string{"auth_url": "https://k/v3", "application_credential_id": "id1", "application_credential_secret": "s3"}, false},
		{"no auth", "clouds:\n  c: {region_name: R}\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCloudsYAML(tt.yaml, "")
			if (err != nil) != tt.fails {
				t.Fatalf("ParseCloudsYAML: %v, want failure %v", err, tt.fails)
			}
			if !tt.fails && !maps.Equal(c.Auth, tt.want) {
				t.Errorf("Auth = %v, want %v", c.Auth, tt.want)
			}
		})
	}
}
