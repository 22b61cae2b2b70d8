package github

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const installationToken = "ghs_INSTALLATIONsecret0123456789"

// verifyAppJWT checks an RS256 JWT against the App's public key and returns
// its issuer. (The client uses ghinstallation; this is the server side.)
func verifyAppJWT(t *testing.T, authorization string, pub *rsa.PublicKey) (issuer string, ok bool) {
	jwt, found := strings.CutPrefix(authorization, "Bearer ")
	parts := strings.Split(jwt, ".")
	if !found || len(parts) != 3 {
		return "", false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", false
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) != nil {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", false
	}
	var claims struct {
		Iss string `json:"iss"`
		Exp int64  `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || time.Unix(claims.Exp, 0).Before(time.Now()) {
		return "", false
	}
	return claims.Iss, true
}

// TestAppAuth uses a local handler for the installation-token endpoint
// (POST /app/installations/{id}/access_tokens): it checks that the client
// signs a JWT with the App's key, trades it for an installation token, and
// uses that token on the runner endpoints.
func TestAppAuth(t *testing.T) {
	keyPEM, key := testPrivateKeyPEM(t)
	var tokenRequests, apiRequests atomic.Int64
	srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == "POST" && r.URL.Path == "/api/v3/app/installations/42/access_tokens":
			tokenRequests.Add(1)
			if iss, ok := verifyAppJWT(t, r.Header.Get("Authorization"), &key.PublicKey); !ok || iss != "17" {
				writeJSON(w, 401, `{"message":"A JSON web token could not be decoded"}`)
				return
			}
			// The App's own budget: must not be mistaken for the installation's.
			w.Header().Set("X-Ratelimit-Remaining", "1")
			w.Header().Set("X-Ratelimit-Resource", "integration")
			writeJSON(w, 201, `{"token":"`+installationToken+`","expires_at":"`+time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`)
		case r.URL.Path == "/api/v3/repos/canonical/repo/actions/runners":
			apiRequests.Add(1)
			if r.Header.Get("Authorization") != "token "+installationToken {
				writeJSON(w, 401, `{"message":"Bad credentials"}`)
				return
			}
			w.Header().Set("X-Ratelimit-Remaining", "4999")
			w.Header().Set("X-Ratelimit-Resource", "core")
			writeJSON(w, 200, `{"total_count":0,"runners":[]}`)
		default:
			writeJSON(w, 404, `{"message":"Not Found"}`)
		}
	})
	logs := &syncBuffer{}
	cfg := testConfig("canonical/repo", srv.apiURL(), logs)
	cfg.Token = ""
	cfg.App = &AppCredentials{AppID: 17, InstallationID: 42, PrivateKeyPEM: keyPEM}
	c := mustNew(t, cfg)
	for range 2 {
		if _, err := c.ListRunners(context.Background(), ""); err != nil {
			t.Fatalf("ListRunners: %v", err)
		}
	}
	if tokenRequests.Load() != 1 || apiRequests.Load() != 2 {
		t.Errorf("token requests = %d, API requests = %d; want 1 and 2 (the installation token is reused)", tokenRequests.Load(), apiRequests.Load())
	}
	if b, ok := c.RateBudget(); !ok || b.Resource != "core" || b.Remaining != 4999 {
		t.Errorf("RateBudget = %+v, %v; want the API's core budget, not the App's", b, ok)
	}
	assertNoSecret(t, "logs", logs.String(), installationToken, string(keyPEM[40:80]))

	t.Run("wrong key", func(t *testing.T) {
		otherPEM, _ := testPrivateKeyPEM(t)
		cfg.App = &AppCredentials{AppID: 17, InstallationID: 42, PrivateKeyPEM: otherPEM}
		c := mustNew(t, cfg)
		_, err := c.ListRunners(context.Background(), "")
		if !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("error = %v, want ErrBadCredentials", err)
		}
		if msg := OperatorMessage(err); !strings.Contains(msg, "GitHub App credentials") || !strings.Contains(msg, "installation id") {
			t.Errorf("operator message = %q, want one about the App's credentials", msg)
		}
		assertNoSecret(t, "error", err.Error(), string(otherPEM[40:80]))
	})
	t.Run("unknown installation", func(t *testing.T) {
		cfg.App = &AppCredentials{AppID: 17, InstallationID: 99, PrivateKeyPEM: keyPEM}
		c := mustNew(t, cfg)
		if _, err := c.ListRunners(context.Background(), ""); !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("error = %v, want ErrBadCredentials", err)
		}
	})
}
