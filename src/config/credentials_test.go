package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestParseToken(t *testing.T) {
	tests := []struct{ in, want, wantErr string }{
		{in: "ghp_SECRET0123", want: "ghp_SECRET0123"},
		{in: " github_pat_SECRET_01\n", want: "github_pat_SECRET_01"}, // a pasted newline is forgiven
		{in: "", wantErr: "is empty"},
		{in: "ghp_SECRET x", wantErr: "only visible ASCII"},
		{in: "ghp_SECRET\tx", wantErr: "only visible ASCII"},
		{in: "ghp_SECRET\x00", wantErr: "only visible ASCII"},
		{in: "ghp_SECRET…", wantErr: "only visible ASCII"},
	}
	for _, tt := range tests {
		got, err := ParseToken(tt.in)
		if tt.wantErr == "" && (err != nil || got != tt.want) {
			t.Errorf("ParseToken(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "SECRET")) {
			t.Errorf("ParseToken(%q) error = %v, want one saying %q and not quoting it", tt.in, err, tt.wantErr)
		}
	}
}

func TestParseAppKey(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rsaKey)
	ecPKCS8, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	encode := func(kind string, der []byte) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}))
	}
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"pkcs1", encode("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), true},
		{"pkcs8", encode("PRIVATE KEY", pkcs8), true},
		{"pasted with blank lines", "\n" + encode("PRIVATE KEY", pkcs8) + "\n\n", true},
		{"empty", "", false},
		{"not pem", "SECRET", false},
		{"pem of garbage", encode("PRIVATE KEY", []byte("SECRET")), false},
		{"ec key", encode("PRIVATE KEY", ecPKCS8), false},
		{"public key", encode("PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)), false},
	}
	for _, tt := range tests {
		key, err := ParseAppKey(tt.in)
		if tt.ok && (err != nil || !key.Equal(rsaKey)) {
			t.Errorf("%s: ParseAppKey = %v, want the key", tt.name, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), "RSA private key") || strings.Contains(err.Error(), "SECRET")) {
			t.Errorf("%s: ParseAppKey error = %v, want the rule, with nothing of the input", tt.name, err)
		}
	}
}
