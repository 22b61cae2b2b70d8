package openstack

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gcopenstack "github.com/gophercloud/gophercloud/v2/openstack"
	gcconfig "github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"gopkg.in/yaml.v3"
)

// Classes of connection failures, one sentence each, meant for the unit's
// status; test them with errors.Is. The error's own text adds the detail
// (which key, which URL) and never a secret.
var (
	ErrCloudsYAMLSyntax     = errors.New("openstack-clouds-yaml is not valid clouds.yaml")
	ErrCloudsYAMLIncomplete = errors.New("openstack-clouds-yaml lacks required settings")
	ErrUnreachable          = errors.New("cannot reach OpenStack")
	ErrTLS                  = errors.New("cannot verify OpenStack's TLS certificate (set cacert in clouds.yaml)")
	ErrUnauthorized         = errors.New("OpenStack rejected the credentials in openstack-clouds-yaml")
	ErrNoEndpoint           = errors.New("OpenStack's service catalogue lacks a service the charm needs")
)

// classified is a failure with its class: Error reads "<class>: <detail>",
// and errors.Is finds the class (and the cause, when there is one that is
// safe to keep).
type classified struct {
	class  error
	detail string
	cause  error
}

func (e *classified) Error() string { return e.class.Error() + ": " + e.detail }
func (e *classified) Unwrap() []error {
	if e.cause == nil {
		return []error{e.class}
	}
	return []error{e.class, e.cause}
}

func classify(class error, cause error, format string, args ...any) error {
	return &classified{class: class, detail: fmt.Sprintf(format, args...), cause: cause}
}

// Timeouts of single calls. requestTimeout is the HTTP client's own limit,
// a backstop under the per-call contexts, so that nothing ever waits on a
// wedged endpoint forever.
const (
	apiTimeout     = time.Minute
	requestTimeout = 90 * time.Second
)

// cloudEntry is what this package reads of one cloud of clouds.yaml, to
// check it before gophercloud parses it, and to name what is missing.
type cloudEntry struct {
	AuthType   string `yaml:"auth_type"`
	RegionName string `yaml:"region_name"`
	CACert     string `yaml:"cacert"`
	Auth       struct {
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

// secrets are the values no message may show.
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

// parsedCloud is one cloud of a clouds.yaml, ready to authenticate.
type parsedCloud struct {
	name     string
	auth     gophercloud.AuthOptions
	endpoint gophercloud.EndpointOpts
	tls      *tls.Config
	secrets  []string
}

// yamlLine finds the line number in a YAML error; the rest of the message
// is dropped because yaml quotes offending values, which may be secrets.
var yamlLine = regexp.MustCompile(`line \d+`)

// parseCloudsYAML picks the cloud named name (the first one if name is "")
// of a clouds.yaml text and checks it has what authentication needs.
func parseCloudsYAML(text, name string) (*parsedCloud, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		where := yamlLine.FindString(err.Error())
		if where == "" {
			where = "syntax error"
		}
		return nil, classify(ErrCloudsYAMLSyntax, nil, "cannot parse it as YAML (%s)", where)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, classify(ErrCloudsYAMLSyntax, nil, "it is not a mapping with a clouds key")
	}
	cloudsNode := mappingValue(doc.Content[0], "clouds")
	if cloudsNode == nil || cloudsNode.Kind != yaml.MappingNode || len(cloudsNode.Content) == 0 {
		return nil, classify(ErrCloudsYAMLSyntax, nil, "it has no clouds")
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
		return nil, classify(ErrCloudsYAMLIncomplete, nil, "it has no cloud %q (it has %s)", name, strings.Join(names, ", "))
	}
	if entryNode.Kind != yaml.MappingNode {
		return nil, classify(ErrCloudsYAMLSyntax, nil, "cloud %q is not a mapping", name)
	}
	var entry cloudEntry
	if err := entryNode.Decode(&entry); err != nil {
		where := yamlLine.FindString(err.Error())
		return nil, classify(ErrCloudsYAMLSyntax, nil, "cloud %q has a setting of the wrong type (%s)", name, where)
	}
	missing, err := entry.missing()
	if err != nil {
		return nil, classify(ErrCloudsYAMLIncomplete, nil, "cloud %q: %v", name, err)
	}
	if len(missing) > 0 {
		return nil, classify(ErrCloudsYAMLIncomplete, nil, "cloud %q has no %s", name, strings.Join(missing, ", "))
	}
	if u, err := url.Parse(entry.Auth.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, classify(ErrCloudsYAMLIncomplete, nil, "cloud %q: auth.auth_url %q is not an http(s) URL", name, entry.Auth.AuthURL)
	}

	// The CA is ours to read: a charm config value cannot ship a file, so
	// cacert may also be the PEM text itself. gophercloud then gets the
	// cloud without it.
	roots, err := loadCACert(entry.CACert)
	if err != nil {
		return nil, classify(ErrCloudsYAMLIncomplete, nil, "cloud %q: %v", name, err)
	}
	deleteMappingKey(entryNode, "cacert")
	stripped, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, classify(ErrCloudsYAMLSyntax, nil, "cannot re-encode it")
	}
	opts := []clouds.ParseOption{clouds.WithCloudsYAML(bytes.NewReader(stripped)), clouds.WithCloudName(name)}
	// Parse lets OS_* variables of the process override the file; the file
	// is the one truth here.
	if entry.RegionName != "" {
		opts = append(opts, clouds.WithRegion(entry.RegionName))
	}
	ao, eo, tlsConfig, err := clouds.Parse(opts...)
	if err != nil {
		return nil, classify(ErrCloudsYAMLIncomplete, nil, "cloud %q: %s", name, redact(err.Error(), entry.secrets()))
	}
	// Tokens expire (an hour, by default); the manager runs for months.
	ao.AllowReauth = true
	if tlsConfig == nil {
		tlsConfig = &tls.Config{}
	}
	if roots != nil {
		tlsConfig.RootCAs = roots
	}
	eo.Availability = availability(entryNode)
	return &parsedCloud{name: name, auth: ao, endpoint: eo, tls: tlsConfig, secrets: entry.secrets()}, nil
}

func availability(entry *yaml.Node) gophercloud.Availability {
	for _, key := range []string{"interface", "endpoint_type"} {
		if v := mappingValue(entry, key); v != nil {
			switch strings.TrimSuffix(v.Value, "URL") {
			case "internal":
				return gophercloud.AvailabilityInternal
			case "admin":
				return gophercloud.AvailabilityAdmin
			}
		}
	}
	return gophercloud.AvailabilityPublic
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

// redact replaces every secret in s.
func redact(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "<redacted>")
		}
	}
	return s
}

// clients are the service clients a Cloud uses.
type clients struct {
	compute *gophercloud.ServiceClient
	image   *gophercloud.ServiceClient
	network *gophercloud.ServiceClient
}

// connect authenticates as the cloud and finds the compute, image and
// network endpoints.
func connect(ctx context.Context, c *parsedCloud) (*clients, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = c.tls
	httpClient := http.Client{Timeout: requestTimeout, Transport: transport}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	provider, err := gcconfig.NewProviderClient(ctx, c.auth, gcconfig.WithHTTPClient(httpClient))
	if err != nil {
		return nil, explainAuth(err, c)
	}
	var out clients
	for _, svc := range []struct {
		name string
		new  func(*gophercloud.ProviderClient, gophercloud.EndpointOpts) (*gophercloud.ServiceClient, error)
		dst  **gophercloud.ServiceClient
	}{
		{"compute (Nova)", gcopenstack.NewComputeV2, &out.compute},
		{"image (Glance)", gcopenstack.NewImageV2, &out.image},
		{"network (Neutron)", gcopenstack.NewNetworkV2, &out.network},
	} {
		client, err := svc.new(provider, c.endpoint)
		if err != nil {
			region := c.endpoint.Region
			if region == "" {
				region = "any region"
			}
			return nil, classify(ErrNoEndpoint, nil, "no %s endpoint in %s for cloud %q", svc.name, region, c.name)
		}
		*svc.dst = client
	}
	return &out, nil
}

// explainAuth classifies a failure to get a token.
func explainAuth(err error, c *parsedCloud) error {
	where := c.auth.IdentityEndpoint
	msg := redact(err.Error(), c.secrets)
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verification *tls.CertificateVerificationError
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusUnauthorized):
		return classify(ErrUnauthorized, nil, "Keystone at %s refused cloud %q (401)", where, c.name)
	case errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verification):
		return classify(ErrTLS, nil, "Keystone at %s: %s", where, msg)
	case isUnreachable(err):
		return classify(ErrUnreachable, nil, "Keystone at %s does not answer: %s", where, msg)
	default:
		return classify(ErrUnreachable, nil, "cannot authenticate at Keystone %s: %s", where, msg)
	}
}

func isUnreachable(err error) bool {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	return errors.As(err, &opErr) || errors.As(err, &dnsErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, context.DeadlineExceeded) ||
		strings.Contains(err.Error(), "Client.Timeout exceeded")
}
