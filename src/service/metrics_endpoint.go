package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/canonical/github-runner-charm/src/service/api"
)

// metricsRetry is how long the endpoint waits before it tries a taken
// port again (a variable so that a test can shorten it).
var metricsRetry = 30 * time.Second

// metricsEndpoint serves the registry's GET /metrics on 127.0.0.1:port for
// the COS agent, beside the socket's. A port it cannot listen on (another
// process took it) is the problem it reports, and tried again every
// metricsRetry: the manager goes on with its runners, and does not exit
// into a restart loop for its metrics.
type metricsEndpoint struct {
	port     int
	unit     string
	registry *prometheus.Registry
	log      *slog.Logger

	mu      sync.Mutex
	problem string
}

// Addr is where the endpoint listens.
func (m *metricsEndpoint) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port)) }

// Problem is why the endpoint does not serve, in words; "" while it does.
func (m *metricsEndpoint) Problem() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.problem
}

func (m *metricsEndpoint) handler() http.Handler {
	mux := http.NewServeMux()
	metrics := promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
	mux.HandleFunc("GET "+api.PathMetrics, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.UnitHeader, m.unit)
		metrics.ServeHTTP(w, r)
	})
	return mux
}

// run serves until ctx ends; it returns once the listener is closed.
func (m *metricsEndpoint) run(ctx context.Context) {
	for ctx.Err() == nil {
		listener, err := (&net.ListenConfig{}).Listen(ctx, "tcp", m.Addr())
		if err != nil {
			m.setProblem(fmt.Sprintf("cannot serve the metrics on %s: %s", m.Addr(), listenProblem(err)))
			select {
			case <-ctx.Done():
			case <-time.After(metricsRetry):
			}
			continue
		}
		m.setProblem("")
		m.log.Info("serving the metrics", "address", m.Addr())
		server := &http.Server{Handler: m.handler(), ReadHeaderTimeout: 10 * time.Second}
		stop := context.AfterFunc(ctx, func() {
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			server.Shutdown(shutdownCtx)
		})
		err = server.Serve(listener)
		stop()
		if errors.Is(err, http.ErrServerClosed) {
			continue // ctx ended
		}
		m.setProblem(fmt.Sprintf("cannot serve the metrics on %s: %v", m.Addr(), err))
		select {
		case <-ctx.Done():
		case <-time.After(metricsRetry):
		}
	}
}

func (m *metricsEndpoint) setProblem(p string) {
	m.mu.Lock()
	changed := m.problem != p
	m.problem = p
	m.mu.Unlock()
	if changed && p != "" {
		m.log.Error(p)
	}
}

// listenProblem says why a listen failed, and what to do about a port
// another process holds.
func listenProblem(err error) string {
	if strings.Contains(err.Error(), "address already in use") {
		return "another process holds the port; the charm chooses another at its next update-status"
	}
	return err.Error()
}

// withProblem adds a problem to a report's, beside the cycles' (a
// problem that is no operator's to fix blocks nothing).
func withProblem(report *api.RunnersReport, p string) {
	switch {
	case p == "" || strings.Contains(report.Problem, p):
	case report.Problem == "":
		report.Problem = p
	default:
		report.Problem += "; " + p
	}
}
