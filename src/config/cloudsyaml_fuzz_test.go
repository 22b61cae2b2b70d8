package config

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzParseCloudsYAML feeds ParseCloudsYAML arbitrary text (seeds in
// testdata/fuzz/FuzzParseCloudsYAML): no panic; a rejection is a
// *CloudsYAMLError that shows no secret of the text (the value of any
// password, application_credential_secret or token key).
func FuzzParseCloudsYAML(f *testing.F) {
	f.Fuzz(func(t *testing.T, text string) {
		_, err := ParseCloudsYAML(text, "")
		if err == nil {
			return
		}
		var bad *CloudsYAMLError
		if !errors.As(err, &bad) || bad.Detail == "" {
			t.Fatalf("ParseCloudsYAML(%q) = %v, want a *CloudsYAMLError with a detail", text, err)
		}
		var doc yaml.Node
		if yaml.Unmarshal([]byte(text), &doc) != nil {
			return // nothing decodes, so no value can be shown but through the line number
		}
		for _, secret := range secretValues(&doc) {
			if len(secret) >= 4 && strings.Contains(err.Error(), secret) && !strings.Contains(nonSecretText(&doc), secret) {
				t.Fatalf("ParseCloudsYAML(%q) error %q shows the secret %q", text, err, secret)
			}
		}
	})
}

var secretKeys = map[string]bool{"password": true, "application_credential_secret": true, "token": true}

func secretValues(n *yaml.Node) []string {
	var out []string
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if secretKeys[n.Content[i].Value] && n.Content[i+1].Kind == yaml.ScalarNode {
				out = append(out, n.Content[i+1].Value)
			}
		}
	}
	for _, c := range n.Content {
		out = append(out, secretValues(c)...)
	}
	return out
}

// nonSecretText is every scalar a problem may quote (keys, auth_url, a
// cacert path): a secret that also appears there may show through it.
func nonSecretText(n *yaml.Node) string {
	var b strings.Builder
	var walk func(n *yaml.Node, secret bool)
	walk = func(n *yaml.Node, secret bool) {
		if n.Kind == yaml.ScalarNode && !secret {
			b.WriteString(n.Value + "\x00")
		}
		for i, c := range n.Content {
			walk(c, n.Kind == yaml.MappingNode && i%2 == 1 && secretKeys[n.Content[i-1].Value])
		}
	}
	walk(n, false)
	return b.String()
}
