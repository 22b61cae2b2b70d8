package github

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

// The URL rule lives in src/config (config.ParseAPIURL); New applies it.
func TestNewRefusesBadURLs(t *testing.T) {
	for _, url := range []string{"http://ghes.example.com", "https://github.com/canonical", "https://user:hunter2@ghes.example.com"} {
		_, err := New(Config{Path: "canonical", BaseURL: url, Token: testToken})
		if err == nil || !strings.HasPrefix(err.Error(), "cannot use GitHub URL") {
			t.Errorf("New(URL %q) = %v, want a URL error", url, err)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("New(URL %q) error echoes the password: %v", url, err)
		}
	}
}

// Path rules live in src/config (config.ParsePath); New applies them.
func TestNewRefusesBadPaths(t *testing.T) {
	for _, path := range []string{"", "/repo", "owner/", "a/b/c", "owner/re po"} {
		if _, err := New(Config{Path: path, Token: "t"}); err == nil || !strings.Contains(err.Error(), "cannot use GitHub path") {
			t.Errorf("New(path %q) = %v, want a path error", path, err)
		}
	}
}

func testPrivateKeyPEM(t *testing.T) ([]byte, *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), key
}

func TestNewRefusesBadCredentials(t *testing.T) {
	keyPEM, _ := testPrivateKeyPEM(t)
	app := &AppCredentials{AppID: 1, InstallationID: 2, PrivateKeyPEM: keyPEM}
	tests := []struct {
		name    string
		token   string
		app     *AppCredentials
		wantErr string
	}{
		{name: "neither", wantErr: "configure a token or GitHub App credentials"},
		{name: "both", token: testToken, app: app, wantErr: "both a GitHub token and GitHub App credentials"},
		{name: "whitespace in token", token: "ghp_abc def", wantErr: "no spaces"},
		{name: "no key", app: &AppCredentials{AppID: 1, InstallationID: 2}, wantErr: "must be the App's RSA private key"},
		{name: "garbage key", app: &AppCredentials{AppID: 1, InstallationID: 2, PrivateKeyPEM: []byte("not-a-key-SECRET")}, wantErr: "private key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Path: "canonical", Token: tt.token, App: tt.app})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
			assertNoSecret(t, "error", err.Error(), "ghp_abc def", "not-a-key-SECRET", string(keyPEM[40:80]))
		})
	}
}

func TestNewAcceptsOneCredential(t *testing.T) {
	keyPEM, _ := testPrivateKeyPEM(t)
	for _, cfg := range []Config{
		{Path: "canonical", Token: testToken},
		{Path: "canonical", Token: testToken + "\n"}, // a pasted trailing newline is forgiven
		{Path: "canonical", App: &AppCredentials{AppID: 1, InstallationID: 2, PrivateKeyPEM: keyPEM}},
	} {
		if _, err := New(cfg); err != nil {
			t.Errorf("New(%v): %v", cfg.App != nil, err)
		}
	}
}

func TestRunnerArchitecture(t *testing.T) {
	for goarch, want := range map[string]string{"amd64": "x64", "arm64": "arm64"} {
		if got, err := runnerArchitecture(goarch); err != nil || got != want {
			t.Errorf("runnerArchitecture(%q) = %q, %v; want %q", goarch, got, err, want)
		}
	}
	if _, err := runnerArchitecture("riscv64"); err == nil || !strings.Contains(err.Error(), "riscv64") {
		t.Errorf("runnerArchitecture(riscv64) error = %v, want one naming the architecture", err)
	}
}
