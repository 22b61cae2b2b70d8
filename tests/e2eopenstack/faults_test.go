package e2eopenstack

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// faultProxy stands between the manager and OpenStack: one reverse proxy per
// service (keyed by its catalogue type), each of which can be told to answer
// every request with an error instead, and counts what it serves. The
// Keystone proxy is what clouds.yaml's auth_url names; every endpoint URL
// in the service catalogue it hands out (and every other URL of a proxied
// service in any JSON body or Location header) is rewritten to the proxy of
// that service, so no call goes to OpenStack directly.
type faultProxy struct {
	t  *testing.T
	mu sync.Mutex
	// byOrigin maps an upstream origin ("http://127.0.0.1:8774") to its
	// proxy; byType maps a catalogue type ("compute") to the same.
	byOrigin map[string]*proxiedService
	byType   map[string]*proxiedService
}

type proxiedService struct {
	kind     string
	upstream *url.URL
	server   *httptest.Server
	fault    atomic.Int32 // the status every request gets, or 0 to pass it on
	requests atomic.Int64 // every request seen
	faulted  atomic.Int64 // requests answered with the fault
}

// origins are what the proxies rewrite: the bed's endpoints are all on
// loopback, by IP.
var origins = regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+`)

// newFaultProxy starts the Keystone proxy for authURL and returns it with
// authURL on the proxy.
func newFaultProxy(t *testing.T, authURL string) (*faultProxy, string) {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, byOrigin: map[string]*proxiedService{}, byType: map[string]*proxiedService{}}
	identity := p.ensure("identity", u.Scheme+"://"+u.Host)
	return p, identity.server.URL + u.Path
}

// ensure returns the proxy of the upstream origin, starting it if needed.
func (p *faultProxy) ensure(kind, origin string) *proxiedService {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.byOrigin[origin]; ok {
		return s
	}
	upstream, err := url.Parse(origin)
	if err != nil {
		p.t.Errorf("catalogue endpoint %q: %v", origin, err)
		return nil
	}
	s := &proxiedService{kind: kind, upstream: upstream}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			// The transport then asks for gzip itself and hands the body
			// over decompressed, which is what the rewrite needs.
			r.Out.Header.Del("Accept-Encoding")
		},
		ModifyResponse: p.rewrite,
	}
	s.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if code := int(s.fault.Load()); code != 0 {
			s.faulted.Add(1)
			body := openstackFault(kind, code)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(code)
			w.Write(body)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	p.t.Cleanup(s.server.Close)
	p.byOrigin[origin] = s
	if _, ok := p.byType[kind]; !ok {
		p.byType[kind] = s
	}
	return s
}

// openstackFault is the body a service of that kind answers an error with.
func openstackFault(kind string, code int) []byte {
	message := fmt.Sprintf("injected fault: %s answers %d %s", kind, code, http.StatusText(code))
	var body any
	switch kind {
	case "compute":
		name := "computeFault"
		if code == http.StatusServiceUnavailable {
			name = "serviceUnavailable"
		}
		body = map[string]any{name: map[string]any{"code": code, "message": message}}
	case "network":
		body = map[string]any{"NeutronError": map[string]any{"type": "HTTPInternalServerError", "message": message, "detail": ""}}
	default:
		body = map[string]any{"error": map[string]any{"code": code, "title": http.StatusText(code), "message": message}}
	}
	out, _ := json.Marshal(body)
	return out
}

// rewrite learns the services of any catalogue in the response and points
// every known upstream URL of it at its proxy.
func (p *faultProxy) rewrite(resp *http.Response) error {
	if loc := resp.Header.Get("Location"); loc != "" {
		resp.Header.Set("Location", p.replace(loc))
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	path := resp.Request.URL.Path
	if strings.HasSuffix(path, "/auth/tokens") || strings.HasSuffix(path, "/auth/catalog") {
		p.learn(body)
	}
	out := p.replace(string(body))
	resp.Body = io.NopCloser(strings.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
	resp.Header.Del("Content-Encoding")
	return nil
}

// learn starts a proxy for every endpoint of a token's catalogue (POST or
// GET /v3/auth/tokens) or of GET /v3/auth/catalog.
func (p *faultProxy) learn(body []byte) {
	type catalogue []struct {
		Type      string `json:"type"`
		Endpoints []struct {
			URL string `json:"url"`
		} `json:"endpoints"`
	}
	var doc struct {
		Token struct {
			Catalog catalogue `json:"catalog"`
		} `json:"token"`
		Catalog catalogue `json:"catalog"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return
	}
	for _, service := range append(doc.Token.Catalog, doc.Catalog...) {
		for _, e := range service.Endpoints {
			if origin := origins.FindString(e.URL); origin != "" && strings.HasPrefix(e.URL, origin) {
				p.ensure(service.Type, origin)
			}
		}
	}
}

func (p *faultProxy) replace(s string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return origins.ReplaceAllStringFunc(s, func(origin string) string {
		if svc, ok := p.byOrigin[origin]; ok {
			return svc.server.URL
		}
		return origin
	})
}

// service is the proxy of a catalogue type; the test fails if the manager
// never got that service from the proxied catalogue.
func (p *faultProxy) service(kind string) *proxiedService {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.byType[kind]
	if !ok {
		p.t.Fatalf("no %s endpoint went through the proxied catalogue", kind)
	}
	return s
}

// proxiedCloudsYAML is clouds.yaml with cloudName's auth_url on the proxy.
func proxiedCloudsYAML(t *testing.T, cloudsYAML []byte, cloudName string) (*faultProxy, string) {
	t.Helper()
	var doc struct {
		Clouds map[string]map[string]any `yaml:"clouds"`
	}
	if err := yaml.Unmarshal(cloudsYAML, &doc); err != nil {
		t.Fatal(err)
	}
	cloud := doc.Clouds[cloudName]
	auth, _ := cloud["auth"].(map[string]any)
	authURL, _ := auth["auth_url"].(string)
	if authURL == "" {
		t.Fatalf("clouds.yaml has no auth_url for %s", cloudName)
	}
	p, proxied := newFaultProxy(t, authURL)
	auth["auth_url"] = proxied
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return p, oneCloud(t, out, cloudName)
}

func TestOpenStackAPIErrorsMidOperation(t *testing.T) {
	start := time.Now()
	var proxy *faultProxy
	bed := deployOnOpenStack(t, "osflt", func(cloudsYAML []byte, cloudName string) string {
		var proxied string
		proxy, proxied = proxiedCloudsYAML(t, cloudsYAML, cloudName)
		return proxied
	})
	u, fake, compute, prefix := bed.unit, bed.github, bed.compute, bed.prefix

	t.Log("two runner servers come up through the proxies")
	waitFor(t, 2*time.Minute, "2 ACTIVE runner servers", func() bool {
		u.Action("reconcile-runners", nil)
		return len(activeServers(t, compute, prefix)) == 2 && len(runnersOf(fake, prefix)) == 2
	})
	for _, kind := range []string{"identity", "compute", "image", "network"} {
		if n := proxy.service(kind).requests.Load(); n == 0 {
			t.Errorf("the manager sent no request to %s through its proxy", kind)
		}
	}
	pid := u.ManagerPID()
	if pid == 0 {
		t.Fatal("cannot find the manager process")
	}

	// runnersCoverServers checks that no GitHub runner went while its
	// server is still there: GitHub's runners include every server's name.
	runnersCoverServers := func(when string) {
		t.Helper()
		runners := runnersOf(fake, prefix)
		for name := range allServers(t, compute, prefix) {
			if !slices.Contains(runners, name) {
				t.Errorf("%s: server %s exists but its GitHub runner is gone (runners %v)", when, name, runners)
			}
		}
	}
	var sentences []string
	underFault := func(kind string, code int) {
		t.Helper()
		svc := proxy.service(kind)
		svc.fault.Store(int32(code))
		defer svc.fault.Store(0)
		before := svc.faulted.Load()
		for _, action := range []string{"reconcile-runners", "flush-runners"} {
			r := u.Action(action, nil)
			t.Logf("%s with %s answering %d: %s %q %v", action, kind, code, r.Status, r.Message, r.Results)
			runnersCoverServers(fmt.Sprintf("after %s with %s answering %d", action, kind, code))
			servers, runners := allServers(t, compute, prefix), runnersOf(fake, prefix)
			t.Logf("after %s: servers %v, GitHub runners %v", action, servers, runners)
			if kind == "compute" && (len(servers) != 2 || len(runners) != 2) {
				// Without Nova's list the manager cannot know what to
				// remove, so it must remove nothing.
				t.Errorf("%s without Nova changed the runners: servers %v, GitHub runners %v", action, servers, runners)
			}
		}
		if r := u.Hook("update-status"); r.Code != 0 {
			t.Errorf("update-status with %s answering %d: exit %d: %s", kind, code, r.Code, r.Stderr)
		}
		s := u.Status()
		t.Logf("status with %s answering %d: %s: %q", kind, code, s.Status, s.Message)
		sentences = append(sentences, fmt.Sprintf("%s %d → %s: %s", kind, code, s.Status, s.Message))
		if s.Status != "maintenance" || !strings.Contains(s.Message, "OpenStack") {
			t.Errorf("status with %s answering %d = %+v, want maintenance naming OpenStack", kind, code, s)
		}
		if now := u.ManagerPID(); now != pid {
			t.Errorf("the manager's PID went from %d to %d with %s answering %d", pid, now, kind, code)
		}
		if svc.faulted.Load() == before {
			t.Errorf("the manager sent no request to %s while it answered %d", kind, code)
		}
		runnersCoverServers(fmt.Sprintf("with %s answering %d", kind, code))
	}

	t.Log("Nova answers 503")
	underFault("compute", http.StatusServiceUnavailable)
	t.Log("Neutron answers 500")
	underFault("network", http.StatusInternalServerError)
	t.Log("Glance answers 500")
	underFault("image", http.StatusInternalServerError)

	t.Log("the faults clear: two reconcile cycles converge on 2 servers matching 2 runners")
	converged := func() bool {
		servers, runners := allServers(t, compute, prefix), runnersOf(fake, prefix)
		if len(servers) != 2 || len(runners) != 2 {
			t.Logf("servers %v, runners %v", servers, runners)
			return false
		}
		for _, name := range runners {
			if servers[name] != "ACTIVE" {
				t.Logf("servers %v, runners %v", servers, runners)
				return false
			}
		}
		return true
	}
	ok := false
	for cycle := 1; cycle <= 2 && !ok; cycle++ {
		r := u.Action("reconcile-runners", nil)
		t.Logf("reconcile-runners %d after the faults: %s %q %v", cycle, r.Status, r.Message, r.Results)
		ok = converged()
	}
	if !ok {
		t.Error("no convergence on 2 ACTIVE servers matching 2 GitHub runners within two reconcile cycles")
	}
	// The runners the flushes made boot meanwhile: once GitHub has them
	// online, the status says so, the faults forgotten.
	waitFor(t, 3*time.Minute, "the 2 runners online", func() bool { return len(onlineOf(fake, prefix)) == 2 })
	u.Action("reconcile-runners", nil)
	u.Hook("update-status")
	s := u.Status()
	t.Logf("status after the faults: %s: %q", s.Status, s.Message)
	if s.Status != "active" || !strings.Contains(s.Message, "2 runners: 2 idle, 0 busy") {
		t.Errorf("status after the faults = %+v", s)
	}
	if now := u.ManagerPID(); now != pid {
		t.Errorf("the manager's PID went from %d to %d", pid, now)
	}

	t.Log("stop and remove leave no server of the unit")
	if r := u.Hook("stop"); r.Code != 0 {
		t.Fatalf("stop: %s", r.Stderr)
	}
	if r := u.Hook("remove"); r.Code != 0 {
		t.Fatalf("remove: %s", r.Stderr)
	}
	if left := allServers(t, compute, prefix); len(left) != 0 {
		t.Errorf("servers left after remove: %v", left)
	}
	if left := runnersOf(fake, prefix); len(left) != 0 {
		t.Errorf("GitHub runners left after remove: %v", left)
	}
	for _, kind := range []string{"identity", "compute", "image", "network"} {
		svc := proxy.service(kind)
		t.Logf("%s proxy: %d requests, %d answered with a fault", kind, svc.requests.Load(), svc.faulted.Load())
	}
	for _, s := range sentences {
		t.Logf("status sentence: %s", s)
	}
	t.Logf("run time %v", time.Since(start).Round(time.Second))
}
