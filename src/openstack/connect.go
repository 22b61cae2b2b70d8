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
	"strings"
	"syscall"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/config"
	"github.com/gophercloud/gophercloud/v2"
	gcopenstack "github.com/gophercloud/gophercloud/v2/openstack"
	gcconfig "github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
)

// Classes of connection failures, one sentence each, meant for the unit's
// status; test them with errors.Is. Those only the operator can fix are
// cloud.OperatorErrors. The error's own text adds the detail
// (which key, which URL) and never a secret.
var (
	ErrCloudsYAMLSyntax     = cloud.NewOperatorError("openstack-clouds-yaml is not valid clouds.yaml")
	ErrCloudsYAMLIncomplete = cloud.NewOperatorError("openstack-clouds-yaml lacks required settings")
	ErrUnreachable          = errors.New("cannot reach OpenStack")
	ErrTLS                  = cloud.NewOperatorError("cannot verify OpenStack's TLS certificate (set cacert in clouds.yaml)")
	ErrUnauthorized         = cloud.NewOperatorError("OpenStack rejected the credentials in openstack-clouds-yaml")
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

// parsedCloud is one cloud of a clouds.yaml, ready to authenticate.
type parsedCloud struct {
	name     string
	auth     gophercloud.AuthOptions
	endpoint gophercloud.EndpointOpts
	tls      *tls.Config
	secrets  []string
}

// parseCloudsYAML turns the cloud src/config has checked into
// gophercloud's options. What a clouds.yaml must hold is config's rule
// (config.ParseCloudsYAML); only gophercloud's own reading is done here.
func parseCloudsYAML(text, name string) (*parsedCloud, error) {
	checked, err := config.ParseCloudsYAML(text, name)
	if err != nil {
		var bad *config.CloudsYAMLError
		if errors.As(err, &bad) && bad.Syntax {
			return nil, classify(ErrCloudsYAMLSyntax, nil, "%s", bad.Detail)
		} else if bad != nil {
			return nil, classify(ErrCloudsYAMLIncomplete, nil, "%s", bad.Detail)
		}
		return nil, classify(ErrCloudsYAMLSyntax, nil, "cannot read it")
	}
	name = checked.Name
	opts := []clouds.ParseOption{clouds.WithCloudsYAML(bytes.NewReader(checked.Stripped)), clouds.WithCloudName(name)}
	// Parse lets OS_* variables of the process override the file; the file
	// is the one truth here.
	if checked.RegionName != "" {
		opts = append(opts, clouds.WithRegion(checked.RegionName))
	}
	ao, eo, tlsConfig, err := clouds.Parse(opts...)
	if err != nil {
		return nil, classify(ErrCloudsYAMLIncomplete, nil, "cloud %q: %s", name, redact(err.Error(), checked.Secrets))
	}
	// Tokens expire (an hour, by default); the manager runs for months.
	ao.AllowReauth = true
	if tlsConfig == nil {
		tlsConfig = &tls.Config{}
	}
	if checked.RootCAs != nil {
		tlsConfig.RootCAs = checked.RootCAs
	}
	switch checked.Interface {
	case "internal":
		eo.Availability = gophercloud.AvailabilityInternal
	case "admin":
		eo.Availability = gophercloud.AvailabilityAdmin
	default:
		eo.Availability = gophercloud.AvailabilityPublic
	}
	return &parsedCloud{name: name, auth: ao, endpoint: eo, tls: tlsConfig, secrets: checked.Secrets}, nil
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
