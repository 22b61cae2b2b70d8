package service

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/src/scaleset"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// Classic runners ask GitHub for every label themselves (a JIT
// configuration adds none, unlike config.sh), and the scale set carries the
// same list after its name: self-hosted, linux, the platform's, the
// option's, once each.
func TestRunnersAndScaleSetRegisterTheSameLabels(t *testing.T) {
	fake := fakegithub.NewTest(t, fakegithub.Options{})
	target, _ := url.Parse(fake.URL())
	var mu sync.Mutex
	var asked [][]string // the labels of each generate-jitconfig request
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/generate-jitconfig") {
			body, _ := io.ReadAll(r.Body)
			var req struct{ Labels []string }
			json.Unmarshal(body, &req)
			mu.Lock()
			asked = append(asked, req.Labels)
			mu.Unlock()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)

	f := &config.File{Unit: "github-runner/0", Model: managertest.Model, MaxRunners: 4,
		GitHub: config.GitHub{Path: "org", APIURL: front.URL, Token: fakegithub.DefaultToken,
			PlatformLabels: []string{"x64", "github-runner", "noble"}, Labels: []string{"gpu", "Linux"}}}
	want := []string{"self-hosted", "linux", "x64", "github-runner", "noble", "gpu"}
	log := slog.New(slog.DiscardHandler)
	client, err := github.New(GitHubConfig(f, log))
	if err != nil {
		t.Fatal(err)
	}
	p := newPlatform(client, managertest.Identity, runner.NewScope(front.URL, "org"), f.GitHub.RunnerLabels())
	if _, err := p.Register(t.Context(), managertest.Identity.NewName()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if len(asked) != 1 || !slices.Equal(asked[0], want) {
		t.Errorf("registration asked for labels %v, want %v", asked, want)
	}
	mu.Unlock()

	f.GitHub.ScaleSet = "linux-set"
	set, err := scaleset.New(ScaleSetConfig(f, managertest.Identity, log))
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Labels(); !slices.Equal(got, append([]string{"linux-set"}, want...)) {
		t.Errorf("scale set labels %v, want the option then %v", got, want)
	}
}
