package config

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"gopkg.in/yaml.v3"
)

// CloudsYAML is one cloud of a clouds.yaml, checked to have what
// authentication needs. src/openstack hands Stripped to gophercloud.
type CloudsYAML struct {
	Name string // the cloud's key under clouds:
	// Stripped is the document without the cloud's cacert (which may be
	// the PEM text itself, which gophercloud would read as a path).
	Stripped   []byte
	RegionName string
	// Interface is the endpoint interface: public (default), internal or admin.
	Interface string
	// RootCAs is the cloud's cacert, nil for the system's roots.
	RootCAs *x509.CertPool
	// Secrets are the values no message may show.
	Secrets []string
	// Auth is the cloud's auth settings, each scalar as its text (nested
	// and null values left out): what an image builder needs to upload
	// into the runners' project.
	Auth map[string]string
}

// CloudsYAMLError is what is wrong with a clouds.yaml. It never quotes a
// value of the file but the cloud's names, auth_url and a cacert path.
type CloudsYAMLError struct {
	// Syntax: the text is no clouds.yaml at all; otherwise a setting
	// authentication needs is missing or wrong.
	Syntax bool
	Detail string
}

func (e *CloudsYAMLError) Error() string {
	if e.Syntax {
		return "is not valid clouds.yaml: " + e.Detail
	}
	return "lacks required settings: " + e.Detail
}

func syntaxError(format string, args ...any) error {
	return &CloudsYAMLError{Syntax: true, Detail: fmt.Sprintf(format, args...)}
}

func incomplete(format string, args ...any) error {
	return &CloudsYAMLError{Detail: fmt.Sprintf(format, args...)}
}

// cloudEntry is what is read of one cloud of clouds.yaml, to check it and
// to name what is missing.
type cloudEntry struct {
	AuthType   string `yaml:"auth_type"`
	RegionName string `yaml:"region_name"`
	CACert     string `yaml:"cacert"`
	Interface  string `yaml:"interface"`
	// EndpointType is the older spelling of Interface ("internalURL").
	EndpointType string `yaml:"endpoint_type"`
	Auth         struct {
		AuthURL                     string `yaml:"auth_url"`
		Username                    string `yaml:"username"`
		UserID                      string `yaml:"user_id"`
		Password                    string `yaml:"password"`
		ProjectName                 string `yaml:"project_name"`
		ProjectID                   string `yaml:"project_id"`
		UserDomainName              string `yaml:"user_domain_name"`
		UserDomainID                string `yaml:"user_domain_id"`
		ProjectDomainName           string `yaml:"project_domain_name"`
		ProjectDomainID             string `yaml:"project_domain_id"`
		DomainName                  string `yaml:"domain_name"`
		DomainID                    string `yaml:"domain_id"`
		ApplicationCredentialID     string `yaml:"application_credential_id"`
		ApplicationCredentialName   string `yaml:"application_credential_name"`
		ApplicationCredentialSecret string `yaml:"application_credential_secret"`
		Token                       string `yaml:"token"`
	} `yaml:"auth"`
}

func (c *cloudEntry) secrets() []string {
	var s []string
	for _, v := range []string{c.Auth.Password, c.Auth.ApplicationCredentialSecret, c.Auth.Token} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// missing names every required setting the entry lacks.
func (c *cloudEntry) missing() ([]string, error) {
	a := c.Auth
	var missing []string
	need := func(key string, values ...string) {
		if !slices.ContainsFunc(values, func(v string) bool { return v != "" }) {
			missing = append(missing, "auth."+key)
		}
	}
	need("auth_url", a.AuthURL)
	switch c.AuthType {
	case "", "password", "v3password":
		need("username (or user_id)", a.Username, a.UserID)
		need("password", a.Password)
		need("project_name (or project_id)", a.ProjectName, a.ProjectID)
		if a.UserID == "" && a.Username != "" {
			need("user_domain_name (or user_domain_id)", a.UserDomainName, a.UserDomainID, a.DomainName, a.DomainID)
		}
		if a.ProjectID == "" && a.ProjectName != "" {
			need("project_domain_name (or project_domain_id)", a.ProjectDomainName, a.ProjectDomainID, a.DomainName, a.DomainID)
		}
	case "v3applicationcredential":
		need("application_credential_id (or application_credential_name)", a.ApplicationCredentialID, a.ApplicationCredentialName)
		need("application_credential_secret", a.ApplicationCredentialSecret)
		if a.ApplicationCredentialID == "" && a.ApplicationCredentialName != "" {
			need("username (or user_id), with application_credential_name", a.Username, a.UserID)
		}
	default:
		return nil, fmt.Errorf("auth_type %q is not supported: use password or v3applicationcredential", c.AuthType)
	}
	return missing, nil
}

// yamlLine finds the line number in a YAML error; the rest of the message
// is dropped because yaml quotes offending values, which may be secrets.
var yamlLine = regexp.MustCompile(`line \d+`)

// ParseCloudsYAML picks the cloud named name (the first one if name is "")
// of a clouds.yaml text and checks it has what authentication needs. The
// error is a *CloudsYAMLError.
func ParseCloudsYAML(text, name string) (*CloudsYAML, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		where := yamlLine.FindString(err.Error())
		if where == "" {
			where = "syntax error"
		}
		return nil, syntaxError("cannot parse it as YAML (%s)", where)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, syntaxError("it is not a mapping with a clouds key")
	}
	cloudsNode := mappingValue(doc.Content[0], "clouds")
	if cloudsNode == nil || cloudsNode.Kind != yaml.MappingNode || len(cloudsNode.Content) == 0 {
		return nil, syntaxError("it has no clouds")
	}
	var entryNode *yaml.Node
	if name == "" {
		name = cloudsNode.Content[0].Value
		entryNode = cloudsNode.Content[1]
	} else if entryNode = mappingValue(cloudsNode, name); entryNode == nil {
		var names []string
		for i := 0; i < len(cloudsNode.Content); i += 2 {
			names = append(names, cloudsNode.Content[i].Value)
		}
		return nil, incomplete("it has no cloud %q (it has %s)", name, strings.Join(names, ", "))
	}
	if entryNode.Kind != yaml.MappingNode {
		return nil, syntaxError("cloud %q is not a mapping", name)
	}
	var entry cloudEntry
	if err := entryNode.Decode(&entry); err != nil {
		return nil, syntaxError("cloud %q has a setting of the wrong type (%s)", name, yamlLine.FindString(err.Error()))
	}
	missing, err := entry.missing()
	if err != nil {
		return nil, incomplete("cloud %q: %v", name, err)
	}
	if len(missing) > 0 {
		return nil, incomplete("cloud %q has no %s", name, strings.Join(missing, ", "))
	}
	if u, err := url.Parse(entry.Auth.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, incomplete("cloud %q: auth.auth_url %q is not an http(s) URL", name, entry.Auth.AuthURL)
	}
	// A charm config value cannot ship a file, so cacert may also be the
	// PEM text itself; it is read here and left out of what gophercloud
	// parses.
	roots, err := loadCACert(entry.CACert)
	if err != nil {
		return nil, incomplete("cloud %q: %v", name, err)
	}
	deleteMappingKey(entryNode, "cacert")
	stripped, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, syntaxError("cannot re-encode it")
	}
	if err := readsAsOpenStack(text, stripped, name, entry.RegionName, entry.secrets()); err != nil {
		return nil, err
	}
	iface := "public"
	for _, v := range []string{entry.Interface, entry.EndpointType} {
		if v := strings.TrimSuffix(v, "URL"); v == "internal" || v == "admin" {
			iface = v
			break
		}
	}
	return &CloudsYAML{Name: name, Stripped: stripped, RegionName: entry.RegionName, Interface: iface, RootCAs: roots, Secrets: entry.secrets(),
		Auth: scalars(mappingValue(entryNode, "auth"))}, nil
}

// scalars is a mapping's scalar values as text, by key.
func scalars(m *yaml.Node) map[string]string {
	out := map[string]string{}
	if m == nil || m.Kind != yaml.MappingNode {
		return out
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if v := m.Content[i+1]; v.Kind == yaml.ScalarNode && v.Tag != "!!null" {
			out[m.Content[i].Value] = v.Value
		}
	}
	return out
}

// readsAsOpenStack checks that OpenStack's client library (gophercloud,
// which src/openstack hands Stripped to) reads the document too: it reads
// every cloud of it into its own types, so a setting of the wrong type in
// any cloud (verify: sometimes, regions: RegionOne) refuses the whole file.
// Type errors name their line of the text; nothing quotes a value.
func readsAsOpenStack(text string, stripped []byte, name, region string, secrets []string) error {
	var typed clouds.Clouds
	if err := yaml.Unmarshal([]byte(text), &typed); err != nil {
		var typeErr *yaml.TypeError
		if errors.As(err, &typeErr) && len(typeErr.Errors) > 0 {
			return syntaxError("a setting has the wrong type for OpenStack's clients (%s)", yamlLine.FindString(typeErr.Errors[0]))
		}
		return syntaxError("OpenStack's clients cannot read it")
	}
	opts := []clouds.ParseOption{clouds.WithCloudsYAML(bytes.NewReader(stripped)), clouds.WithCloudName(name)}
	if region != "" {
		opts = append(opts, clouds.WithRegion(region))
	}
	if _, _, _, err := clouds.Parse(opts...); err != nil {
		detail := err.Error()
		if strings.HasPrefix(detail, "yaml: ") { // its lines are of the re-encoded text, its values may be secrets
			return syntaxError("a setting has the wrong type for OpenStack's clients")
		}
		for _, secret := range secrets {
			detail = strings.ReplaceAll(detail, secret, "<redacted>")
		}
		return incomplete("cloud %q cannot be read by OpenStack's clients: %s", name, detail)
	}
	return nil
}

func loadCACert(cacert string) (*x509.CertPool, error) {
	cacert = strings.TrimSpace(cacert)
	if cacert == "" {
		return nil, nil
	}
	pem := []byte(cacert)
	if !strings.HasPrefix(cacert, "-----BEGIN") {
		data, err := os.ReadFile(cacert)
		if err != nil {
			return nil, fmt.Errorf("cannot read cacert %s: %v", cacert, errors.Unwrap(err))
		}
		pem = data
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("cacert holds no PEM certificate")
	}
	return pool, nil
}

func mappingValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func deleteMappingKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}
