package service

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/metrics"
	"github.com/canonical/github-runner-charm/src/service/api"
)

// FuzzHandler sends the service's HTTP API arbitrary requests: any method,
// path and query (the flush parameters are the payloads it takes from
// outside; seeds in testdata/fuzz/FuzzHandler), against in-memory fakes
// holding one idle and one busy runner. No panic, never a 5xx but the 503
// of a failed cycle, every error answer says something, and the busy
// runner survives everything but an accepted flush with busy=true.
func FuzzHandler(f *testing.F) {
	f.Fuzz(func(t *testing.T, method, path, query string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req := &http.Request{
			Method: method, URL: &url.URL{Path: path, RawQuery: query}, RequestURI: path,
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Host: "manager",
			Body: http.NoBody,
		}
		srv, platform := fuzzServer()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)

		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %q ?%q answered %d", method, path, query, rec.Code)
		}
		if rec.Code >= 400 {
			body := strings.TrimSpace(rec.Body.String())
			var e api.ErrorBody
			if body == "" || strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") && (json.Unmarshal([]byte(body), &e) != nil || e.Error == "") {
				t.Fatalf("%s %q ?%q answered %d with %q: an error must say what is wrong", method, path, query, rec.Code, body)
			}
		}
		flushedBusy := method == http.MethodPost && path == api.PathFlush && rec.Code == http.StatusOK && req.URL.Query().Get("busy") == "true"
		if busyGone := !platform.Set(fuzzBusy, true, true); busyGone && !flushedBusy {
			t.Fatalf("%s %q ?%q (answered %d) removed the busy runner", method, path, query, rec.Code)
		}
	})
}

var (
	fuzzIdle = costPrefix + "-000000aa"
	fuzzBusy = costPrefix + "-000000bb"
)

func fuzzServer() (*Server, *managertest.Platform) {
	instances, platform := managertest.NewCloud(), managertest.NewPlatform()
	now := time.Now()
	for _, r := range []struct {
		name string
		busy bool
	}{{fuzzIdle, false}, {fuzzBusy, true}} {
		id := platform.Add(r.name, true, r.busy)
		instances.Put(cloud.Instance{Name: r.name, RunnerID: id, CreatedAt: now, Status: cloud.Running})
	}
	engine := manager.New(instances, platform, costSettings(2), discardLog())
	return &Server{Engine: engine, Expected: 2, Interval: time.Hour, Metrics: metrics.New("github-runner", nil), Log: discardLog()}, platform
}
