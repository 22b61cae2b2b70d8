package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"regexp"
	"strconv"
	"strings"
)

// ParseToken reads a GitHub token: surrounding whitespace (a pasted
// newline) is dropped, and what is left must be visible ASCII, since it
// travels in an HTTP header, where anything else fails every request.
// Errors never quote the token.
func ParseToken(s string) (string, error) {
	token := strings.TrimSpace(s)
	if token == "" {
		return "", errors.New("is empty")
	}
	for i := 0; i < len(token); i++ {
		if token[i] < 0x21 || token[i] > 0x7e {
			return "", errors.New("must hold only visible ASCII characters, no spaces")
		}
	}
	return token, nil
}

// ParseAppKey reads a GitHub App's private key: one PEM block holding an
// RSA key, PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"), as GitHub
// issues and as the App's JWTs need. Errors never quote the key.
func ParseAppKey(s string) (*rsa.PrivateKey, error) {
	const want = "must be the App's RSA private key in PEM (PKCS#1 or PKCS#8)"
	block, _ := pem.Decode([]byte(strings.TrimSpace(s)))
	if block == nil {
		return nil, errors.New(want)
	}
	if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return key, nil
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New(want)
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New(want + ", not another kind of key")
	}
	return key, nil
}

// Issuer is the iss claim of the App's JWTs: its client ID, or its
// numeric ID (GitHub takes either).
func (a *GitHubApp) Issuer() string {
	if a.ClientID != "" {
		return a.ClientID
	}
	return strconv.FormatInt(a.ID, 10)
}

// appClientID is the shape of a GitHub App's client ID: "Iv1." and 16 hex
// digits for older Apps, "Iv23li…" for newer ones; GitHub documents no
// more than letters, digits and dots, so that, within a sane length, is
// the rule.
var appClientID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// ParseAppClientID checks a GitHub App's client ID (it is not secret, but
// it travels in every JWT, so what cannot be one is refused here).
func ParseAppClientID(s string) error {
	if !appClientID.MatchString(s) {
		return errors.New("must be the App's client ID, such as Iv1.0123456789abcdef (letters, digits and dots)")
	}
	return nil
}
