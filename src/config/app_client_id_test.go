package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A GitHub App is named by exactly one of its numeric ID and its client ID;
// the client ID is checked, and either is the issuer of the App's JWTs.
func TestAppClientID(t *testing.T) {
	key := testAppKey(t)
	tests := []struct {
		name       string
		app        GitHubApp
		want       []Problem
		wantIssuer string
	}{
		{"numeric ID", GitHubApp{ID: 17, InstallationID: 2, PrivateKey: key}, nil, "17"},
		{"client ID", GitHubApp{ClientID: "Iv1.0123456789abcdef", InstallationID: 2, PrivateKey: key}, nil, "Iv1.0123456789abcdef"},
		{"new-style client ID", GitHubApp{ClientID: "Iv23liAbCdEf012345", InstallationID: 2, PrivateKey: key}, nil, "Iv23liAbCdEf012345"},
		{"client ID that is the numeric ID", GitHubApp{ClientID: "17", InstallationID: 2, PrivateKey: key}, nil, "17"},
		{"both", GitHubApp{ID: 17, ClientID: "Iv1.0123456789abcdef", InstallationID: 2, PrivateKey: key},
			[]Problem{{"github.app", "must set exactly one of id and client-id"}}, "Iv1.0123456789abcdef"},
		{"neither", GitHubApp{InstallationID: 2, PrivateKey: key}, []Problem{{"github.app.id", "must be the App's numeric ID"}}, "0"},
		{"client ID with a space", GitHubApp{ClientID: "Iv1.0123 456", InstallationID: 2, PrivateKey: key},
			[]Problem{{"github.app.client-id", "must be the App's client ID, such as Iv1.0123456789abcdef (letters, digits and dots)"}}, "Iv1.0123 456"},
		{"client ID on two lines", GitHubApp{ClientID: "Iv1.0123\nx", InstallationID: 2, PrivateKey: key},
			[]Problem{{"github.app.client-id", "must be the App's client ID, such as Iv1.0123456789abcdef (letters, digits and dots)"}}, "Iv1.0123\nx"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			f := validFile()
			app := test.app
			f.GitHub.Token, f.GitHub.App = "", &app
			if got := f.Problems(); !slices.Equal(got, test.want) {
				t.Errorf("Problems() = %q, want %q", got, test.want)
			}
			if got := app.Issuer(); got != test.wantIssuer {
				t.Errorf("Issuer() = %q, want %q", got, test.wantIssuer)
			}
			if test.want != nil {
				return
			}
			// The manager reads back what the charm wrote.
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := f.Write(path); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if *back.GitHub.App != app {
				t.Errorf("read back %+v, want %+v", *back.GitHub.App, app)
			}
		})
	}
}
