package openstack

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
)

func mustDenylist(t testing.TB, cidrs ...string) []netip.Prefix {
	t.Helper()
	list, err := config.ParseDenylist(strings.Join(cidrs, ","))
	if err != nil {
		t.Fatal(err)
	}
	return list
}

const secret = "s3cr3t-Pa55word"

const goodCloudsYAML = `clouds:
  first:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: runner
      password: ` + secret + `
      project_name: runners
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionTwo
  second:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example:5000/v3
      application_credential_id: abc
      application_credential_secret: ` + secret + `
    interface: internal
`

func TestParseCloudsYAML(t *testing.T) {
	got, err := parseCloudsYAML(goodCloudsYAML, "")
	if err != nil {
		t.Fatal(err)
	}
	if got.name != "first" || got.auth.Username != "runner" || got.auth.Password != secret || !got.auth.AllowReauth ||
		got.endpoint.Region != "RegionTwo" || got.auth.Scope == nil || got.auth.Scope.ProjectName != "runners" {
		t.Errorf("first cloud parsed as %+v %+v", got.auth, got.endpoint)
	}
	got, err = parseCloudsYAML(goodCloudsYAML, "second")
	if err != nil {
		t.Fatal(err)
	}
	if got.auth.ApplicationCredentialID != "abc" || got.auth.ApplicationCredentialSecret != secret || got.endpoint.Availability != "internal" {
		t.Errorf("second cloud parsed as %+v %+v", got.auth, got.endpoint)
	}
}

func TestParseCloudsYAMLErrors(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, cloud string
		class             error
		want              string
	}{
		{"not yaml", "clouds: [\n  password: " + secret, "", ErrCloudsYAMLSyntax, "line "},
		{"tab", "clouds:\n\tfirst: " + secret, "", ErrCloudsYAMLSyntax, "line 2"},
		{"list", "- " + secret, "", ErrCloudsYAMLSyntax, "not a mapping"},
		{"no clouds", "cloud: {}", "", ErrCloudsYAMLSyntax, "no clouds"},
		{"empty clouds", "clouds: {}", "", ErrCloudsYAMLSyntax, "no clouds"},
		{"wrong type", "clouds:\n  a:\n    auth:\n      password: [" + secret + "]\n", "", ErrCloudsYAMLSyntax, "line 4"},
		{"no such cloud", goodCloudsYAML, "third", ErrCloudsYAMLIncomplete, `no cloud "third" (it has first, second)`},
		{"nothing", "clouds:\n  a:\n    auth: {}\n", "", ErrCloudsYAMLIncomplete,
			`cloud "a" has no auth.auth_url, auth.username (or user_id), auth.password, auth.project_name (or project_id)`},
		{"no domains", "clouds:\n  a:\n    auth:\n      auth_url: http://k/v3\n      username: u\n      password: " + secret + "\n      project_name: p\n", "",
			ErrCloudsYAMLIncomplete, "auth.user_domain_name (or user_domain_id), auth.project_domain_name (or project_domain_id)"},
		{"no secret", "clouds:\n  a:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: http://k/v3\n      application_credential_id: x\n", "",
			ErrCloudsYAMLIncomplete, "auth.application_credential_secret"},
		{"auth type", "clouds:\n  a:\n    auth_type: v3oidcpassword\n    auth:\n      auth_url: http://k/v3\n", "", ErrCloudsYAMLIncomplete, `auth_type "v3oidcpassword" is not supported`},
		{"bad url", strings.Replace(goodCloudsYAML, "http://127.0.0.1:5000/v3", "127.0.0.1:5000", 1), "", ErrCloudsYAMLIncomplete, "not an http(s) URL"},
		{"cacert file", strings.Replace(goodCloudsYAML, "    region_name: RegionTwo", "    cacert: /nonexistent/ca.pem", 1), "", ErrCloudsYAMLIncomplete, "cannot read cacert /nonexistent/ca.pem"},
		{"cacert text", strings.Replace(goodCloudsYAML, "    region_name: RegionTwo", "    cacert: \"-----BEGIN CERTIFICATE-----\\nnope\\n-----END CERTIFICATE-----\"", 1), "", ErrCloudsYAMLIncomplete, "no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseCloudsYAML(tt.yaml, tt.cloud)
			if !errors.Is(err, tt.class) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %v with %q", err, tt.class, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error shows the secret: %v", err)
			}
		})
	}
}

func TestParseCloudsYAMLInlineCACert(t *testing.T) {
	pem, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Skip("no CA bundle to use as a test certificate")
	}
	first := string(pem[:strings.Index(string(pem), "-----END CERTIFICATE-----")+len("-----END CERTIFICATE-----")])
	indented := "    cacert: |\n      " + strings.ReplaceAll(first, "\n", "\n      ") + "\n"
	got, err := parseCloudsYAML(strings.Replace(goodCloudsYAML, "    region_name: RegionTwo\n", indented, 1), "first")
	if err != nil {
		t.Fatal(err)
	}
	if got.tls.RootCAs == nil {
		t.Error("inline cacert did not become the root CAs")
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(path, []byte(first), 0o600)
	got, err = parseCloudsYAML(strings.Replace(goodCloudsYAML, "    region_name: RegionTwo", "    cacert: "+path, 1), "first")
	if err != nil || got.tls.RootCAs == nil {
		t.Errorf("cacert file: %v, roots %v", err, got)
	}
}

func TestEgressRules(t *testing.T) {
	if got := egressRules(nil); !slices.Equal(got, []egressRule{{etherType: "IPv4"}, {etherType: "IPv6"}}) {
		t.Errorf("no denylist: %v", got)
	}
	got := egressRules(mustDenylist(t, "10.0.0.0/8", "10.1.0.0/16", "192.168.1.7/32"))
	var v4 []netip.Prefix
	for _, r := range got {
		if r.etherType == "IPv6" {
			if r.prefix != "" {
				t.Errorf("IPv6 rule %v, want everything", r)
			}
			continue
		}
		v4 = append(v4, netip.MustParsePrefix(r.prefix))
	}
	// The rules cover every address but the denied ones, without overlap.
	for _, probe := range []struct {
		addr    string
		allowed bool
	}{
		{"0.0.0.0", true}, {"9.255.255.255", true}, {"10.0.0.0", false}, {"10.1.2.3", false}, {"10.255.255.255", false},
		{"11.0.0.0", true}, {"192.168.1.6", true}, {"192.168.1.7", false}, {"192.168.1.8", true}, {"255.255.255.255", true},
	} {
		n := 0
		for _, p := range v4 {
			if p.Contains(netip.MustParseAddr(probe.addr)) {
				n++
			}
		}
		if (n == 1) != probe.allowed || n > 1 {
			t.Errorf("%s is in %d rules, want allowed=%v", probe.addr, n, probe.allowed)
		}
	}
	if len(v4) != 8-1+31 { // 0/0 less 10/8 is 8 prefixes; less a /32, one of them (a /1) becomes 31
		t.Errorf("%d IPv4 rules, want %d: %v", len(v4), 8-1+31, v4)
	}
}

func TestUserData(t *testing.T) {
	jit := base64.StdEncoding.EncodeToString([]byte(`{".runner":"secret settings"}`))
	image := config.RunnerImage{HTTPProxy: "http://p:3128", NoProxy: "a,b", DockerhubMirror: "https://m.example"}
	encoded, err := userData("app-0-0123456789ab", jit, "ubuntu", "/home/ubuntu/actions-runner", image)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatal(err)
	}
	script := string(raw)
	if !strings.HasPrefix(script, "#!/bin/sh\n") {
		t.Errorf("user-data is not a shell script:\n%s", script)
	}
	// The secret is written once, and only to its file: the one line of the
	// here-document that writes boot.JITConfigPath.
	if body, ok := hereDocument(script, boot.JITConfigPath); strings.Count(script, jit) != 1 || !ok || len(body) != 1 || body[0] != jit {
		t.Errorf("the JIT config is not once, alone, in the here-document of %s:\n%s", boot.JITConfigPath, script)
	}
	for _, want := range []string{"http_proxy='http://p:3128'", "no_proxy='a,b'", "DOCKERHUB_MIRROR='https://m.example'", "HTTPS_PROXY"} {
		if strings.Contains(script, want) != (want != "HTTPS_PROXY") {
			t.Errorf("environment: %q present=%v", want, strings.Contains(script, want))
		}
	}
	path := filepath.Join(t.TempDir(), "user-data")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
		t.Errorf("sh -n: %v\n%s", err, out)
	}
	if shellcheck, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(shellcheck, "-s", "sh", path).CombinedOutput(); err != nil {
			t.Errorf("shellcheck: %v\n%s", err, out)
		}
	}

	// Without a mirror, no Docker settings.
	encoded, _ = userData("app-0-0123456789ab", jit, "ubuntu", "/x", config.RunnerImage{})
	raw, _ = base64.StdEncoding.DecodeString(encoded)
	if strings.Contains(string(raw), "docker") {
		t.Errorf("user-data without a mirror touches Docker:\n%s", raw)
	}

	for _, bad := range []string{"", "two\nlines", "quote'", "x " + jitDelimiter} {
		if _, err := userData("n", bad, "ubuntu", "/x", image); err == nil || (bad != "" && strings.Contains(err.Error(), bad)) {
			t.Errorf("JIT config %q: %v, want an error that does not show it", bad, err)
		}
	}
}

func TestStatus(t *testing.T) {
	for nova, want := range map[string]cloud.Status{
		"BUILD": cloud.Building, "ACTIVE": cloud.Running, "SHUTOFF": cloud.Stopped, "SHELVED": cloud.Stopped,
		"REBOOT": cloud.Running, "ERROR": cloud.Unresponsive, "": cloud.Unresponsive,
		// A compute service restarting, or an admin pausing: the job resumes.
		"PAUSED": cloud.Unresponsive, "SUSPENDED": cloud.Unresponsive, "UNKNOWN": cloud.Unresponsive,
	} {
		if got := status(nova); got != want {
			t.Errorf("status(%q) = %s, want %s", nova, got, want)
		}
	}
}

func TestNovaMessageHidesUserData(t *testing.T) {
	body := `{"badRequest": {"message": "Invalid input for field/attribute user_data. Value: ` +
		base64.StdEncoding.EncodeToString([]byte(strings.Repeat("jit config ", 10))) + `. too long", "code": 400}}`
	got := novaMessage([]byte(body))
	if strings.Contains(got, "aml0") || !strings.Contains(got, "Invalid input for field/attribute user_data") {
		t.Errorf("novaMessage = %s", got)
	}
	if id := "3f1c2f6e-8a4b-4c1e-9d2a-0b1c2d3e4f5a"; !strings.Contains(novaMessage([]byte("Image "+id+" could not be found.")), id) {
		t.Error("novaMessage hides a UUID")
	}
}

// The errors only the operator can fix carry the mark src/service reads;
// those time clears do not.
func TestOperatorErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{ErrImageNotFound, true},
		{ErrFlavorNotFound, true},
		{ErrNetworkNotFound, true},
		{ErrUnauthorized, true},
		{ErrCloudsYAMLSyntax, true},
		{ErrCloudsYAMLIncomplete, true},
		{ErrTLS, true},
		{classify(ErrImageNotFound, nil, "no image named %q", "x"), true},
		{ErrUnreachable, false},
		{ErrNoEndpoint, false},
		{ErrNotPrepared, false},
	} {
		if got := cloud.NeedsOperator(fmt.Errorf("cannot create runner: %w", tc.err)); got != tc.want {
			t.Errorf("NeedsOperator(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// New does not connect: a Keystone that refuses is each call's error, and
// each call tries again, so the cloud works once Keystone does.
func TestConnectsOnEachCallUntilConnected(t *testing.T) {
	var tries atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tries.Add(1)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error": {"code": 401, "title": "Unauthorized", "message": "no"}}`))
	}))
	t.Cleanup(srv.Close)
	c, err := New(connectConfig(keystoneYAML(srv.URL, ""), ""), nil)
	if err != nil {
		t.Fatalf("New with a refusing Keystone: %v, want a cloud that connects later", err)
	}
	if tries.Load() != 0 {
		t.Errorf("New asked Keystone %d times, want none", tries.Load())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 2 {
		if _, err := c.Instances(ctx); !errors.Is(err, ErrUnauthorized) || !cloud.NeedsOperator(err) {
			t.Errorf("Instances %d: %v, want ErrUnauthorized, for the operator", i, err)
		}
		if _, err := c.Prepare(ctx, nil); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("Prepare %d: %v, want ErrUnauthorized", i, err)
		}
	}
	if tries.Load() < 4 {
		t.Errorf("Keystone was asked %d times by 4 calls, want each to try again", tries.Load())
	}
}

// A fake Keystone: 401 for every token request.
func fakeKeystone(t *testing.T, tlsServer bool, delay time.Duration) *httptest.Server {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only once the body is read does the server notice a client that
		// hangs up, and end r.Context().
		io.Copy(io.Discard, r.Body)
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`))
	})
	var srv *httptest.Server
	if tlsServer {
		srv = httptest.NewTLSServer(handler)
	} else {
		srv = httptest.NewServer(handler)
	}
	t.Cleanup(srv.Close)
	return srv
}

func keystoneYAML(url, cacert string) string {
	y := strings.Replace(goodCloudsYAML, "http://127.0.0.1:5000/v3", url+"/v3", 1)
	if cacert != "" {
		y = strings.Replace(y, "    region_name: RegionTwo\n", "    cacert: |\n      "+strings.ReplaceAll(strings.TrimSpace(cacert), "\n", "\n      ")+"\n", 1)
	}
	return y
}

// TLS: an unknown CA is its own error; the CA given inline in clouds.yaml
// makes the same Keystone trusted (and then the credentials are wrong).
func TestConnectTLS(t *testing.T) {
	srv := fakeKeystone(t, true, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := newConnected(ctx, connectConfig(keystoneYAML(srv.URL, ""), ""), nil)
	if !errors.Is(err, ErrTLS) || strings.Contains(err.Error(), secret) {
		t.Errorf("unknown CA: %v, want ErrTLS", err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	_, err = newConnected(ctx, connectConfig(keystoneYAML(srv.URL, string(caPEM)), ""), nil)
	if !errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), secret) {
		t.Errorf("inline CA: %v, want ErrUnauthorized", err)
	}
}

// A Keystone that never answers is unreachable when the caller's time is
// up, not a hang.
func TestConnectTimeout(t *testing.T) {
	srv := fakeKeystone(t, false, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := newConnected(ctx, connectConfig(keystoneYAML(srv.URL, ""), ""), nil)
	if !errors.Is(err, ErrUnreachable) || time.Since(start) > 5*time.Second {
		t.Errorf("hanging Keystone: %v after %v, want ErrUnreachable within a second", err, time.Since(start))
	}
}

// hereDocument returns the lines of the one here-document of script that
// writes path ("cat >path <<'END'" to "END"), and false when there is not
// exactly one.
func hereDocument(script, path string) ([]string, bool) {
	var body []string
	found, end := 0, ""
	for _, line := range strings.Split(script, "\n") {
		if end != "" {
			if line == end {
				end = ""
			} else {
				body = append(body, line)
			}
			continue
		}
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cat >"+path+" <<'")
		if ok && strings.HasSuffix(rest, "'") {
			found++
			end = strings.TrimSuffix(rest, "'")
		}
	}
	return body, found == 1 && end == ""
}
