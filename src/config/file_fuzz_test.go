package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// secretMark is in the secrets of the seed config files: an error that
// shows it has quoted a secret, unless the input also put it somewhere an
// error may quote (a key, or a non-secret value that validation names).
const secretMark = "S3CR3T"

// redactedTypeError is what is left of a type error: the line, the YAML
// tag (syntax, which the file may spell as it likes) and the Go type,
// never the value.
var redactedTypeError = regexp.MustCompile("^(cannot parse config: )?line [0-9]+: cannot unmarshal !\\S*( <value>)? into [][*.A-Za-z0-9]+$")

var (
	yamlTag   = regexp.MustCompile(`cannot unmarshal !\S*`)
	yamlAlias = regexp.MustCompile(`unknown anchor '.*' referenced`)
)

// secretPaths are the config file's secrets, as the loose walk names them.
var secretPaths = map[string]bool{"github.token": true, "github.app.private-key": true, "openstack.clouds-yaml": true}

// FuzzParse feeds Parse arbitrary files (seeds in testdata/fuzz/FuzzParse):
// no panic; a rejection says "cannot parse config: …" or "invalid config:
// …" and never shows a secret; an accepted file re-encodes (as the charm
// writes it) to a file that parses to the same value.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "cannot parse config: ") && !strings.HasPrefix(msg, "invalid config: ") || strings.HasSuffix(msg, ": ") {
				t.Fatalf("Parse(%q) error %q: want a message that says what is wrong", data, msg)
			}
			// A YAML tag ("!foo") or alias ("*foo") is syntax, and errors
			// name it: not a secret.
			untagged := yamlTag.ReplaceAllString(msg, "cannot unmarshal !<tag>")
			untagged = yamlAlias.ReplaceAllString(untagged, "unknown anchor <anchor>")
			if strings.Contains(untagged, secretMark) && !quotable(data) {
				t.Fatalf("Parse(%q) error %q shows a secret", data, msg)
			}
			// Clauses are split after the tags are replaced: a tag may
			// hold "; " itself ("!;").
			for _, clause := range strings.Split(untagged, "; ") {
				if strings.Contains(clause, "cannot unmarshal") && !redactedTypeError.MatchString(clause) {
					t.Fatalf("Parse(%q) error %q shows a value: %q", data, msg, clause)
				}
			}
			return
		}
		if literalTrouble(reflect.ValueOf(file).Elem()) {
			return
		}
		encoded, err := yaml.Marshal(file)
		if err != nil {
			t.Fatalf("cannot encode %+v: %v", file, err)
		}
		again, err := Parse(encoded)
		if err != nil {
			t.Fatalf("Parse(%q) accepted it, but its encoding %q is refused: %v", data, encoded, err)
		}
		if !reflect.DeepEqual(normalised(file), normalised(again)) {
			t.Fatalf("Parse(%q) = %+v, which re-encoded as %q parses to %+v", data, file, encoded, again)
		}
	})
}

// literalTrouble tells whether a string in v is one yaml.v3 cannot write
// as a literal block and read back: a leading newline is lost ("\nx" comes
// back "x"), and a line that starts with a tab is written so that the file
// no longer parses. File.Write has the same limits (see the report on
// issue 7); they are left out here so the fuzzer looks further.
func literalTrouble(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		s := v.String()
		return strings.Contains(s, "\n") && (strings.HasPrefix(s, "\n") || strings.HasPrefix(s, "\t") || strings.Contains(s, "\n\t"))
	case reflect.Pointer:
		return !v.IsNil() && literalTrouble(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if literalTrouble(v.Field(i)) {
				return true
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			if literalTrouble(v.Index(i)) {
				return true
			}
		}
	}
	return false
}

// normalised forgets the difference between an empty list and none, which
// the encoding's omitempty does not keep.
func normalised(f *File) *File {
	c := *f
	if len(c.GitHub.Labels) == 0 {
		c.GitHub.Labels = nil
	}
	if len(c.Runner.Denylist) == 0 {
		c.Runner.Denylist = nil
	}
	return &c
}

// quotable tells whether the input put secretMark somewhere an error may
// show it: a key (an unknown or repeated field is named), or a non-secret
// value (a bad path, size or CIDR is quoted).
func quotable(data []byte) bool {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return false
	}
	found := false
	walkYAML(doc, "", func(path, text string, isKey bool) {
		if strings.Contains(text, secretMark) && (isKey || !secretPaths[path]) {
			found = true
		}
	})
	return found
}

// walkYAML visits every key and scalar of a loosely decoded document with
// its dotted path.
func walkYAML(node any, path string, visit func(path, text string, isKey bool)) {
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch n := node.(type) {
	case map[string]any:
		for k, v := range n {
			visit(join(k), k, true)
			walkYAML(v, join(k), visit)
		}
	case map[any]any:
		for k, v := range n {
			key := fmt.Sprint(k)
			visit(join(key), key, true)
			walkYAML(v, join(key), visit)
		}
	case []any:
		for _, v := range n {
			walkYAML(v, path+"[]", visit)
		}
	case nil:
	default:
		visit(path, fmt.Sprint(n), false)
	}
}
