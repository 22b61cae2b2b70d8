package github

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// TestFakeAppAuthIssuer authenticates as a GitHub App against the fake
// GitHub, in front of which GitHub's check of the App's JWT stands: the
// signature must verify with the App's public key and the issuer must be
// the App, named by its numeric ID or by its client ID (GitHub takes
// either). The fake then mints an installation token the client lists
// runners with.
func TestFakeAppAuthIssuer(t *testing.T) {
	keyPEM, key := testPrivateKeyPEM(t)
	tests := []struct {
		name       string
		app        AppCredentials
		wantIssuer string
	}{
		{"numeric ID", AppCredentials{AppID: 17, InstallationID: 42}, "17"},
		{"client ID", AppCredentials{ClientID: "Iv1.0123456789abcdef", InstallationID: 42}, "Iv1.0123456789abcdef"},
		{"client ID wins over an ID", AppCredentials{AppID: 17, ClientID: "Iv23liABCdef", InstallationID: 42}, "Iv23liABCdef"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			var issued atomic.Int64
			env := newFake(t, []fakegithub.Token{}, func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.HasSuffix(r.URL.Path, "/access_tokens") {
						iss, ok := verifyAppJWT(t, r.Header.Get("Authorization"), &key.PublicKey)
						if !ok || iss != test.wantIssuer {
							t.Errorf("the App's JWT: issuer %q (verified %v), want %q", iss, ok, test.wantIssuer)
							writeJSON(w, 401, `{"message":"A JSON web token could not be decoded"}`)
							return
						}
						issued.Add(1)
					}
					next.ServeHTTP(w, r)
				})
			})
			app := test.app
			app.PrivateKeyPEM = keyPEM
			c := env.client(t, "canonical/repo", func(cfg *Config) { cfg.Token, cfg.App = "", &app })
			if _, err := c.ListRunners(context.Background(), ""); err != nil {
				t.Fatalf("ListRunners: %v", err)
			}
			if issued.Load() != 1 {
				t.Errorf("installation tokens issued = %d, want 1", issued.Load())
			}
			assertNoSecret(t, "logs", env.logs.String(), string(keyPEM[40:80]))
		})
	}
}
