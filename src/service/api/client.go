package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// ErrNotRunning means nothing answers on the manager's socket.
var ErrNotRunning = errors.New("the runner manager service is not running")

// Client talks to the manager over its unix socket.
type Client struct {
	http *http.Client
}

// NewClient returns a client of the manager listening on socket. timeout
// bounds each request, including a reconcile the request waits for.
func NewClient(socket string, timeout time.Duration) *Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		},
	}
	return &Client{http: &http.Client{Transport: transport, Timeout: timeout}}
}

// Runners returns the manager's view of this unit's runners.
func (c *Client) Runners(ctx context.Context) (RunnersReport, error) {
	var report RunnersReport
	return report, c.do(ctx, http.MethodGet, PathRunners, &report)
}

// Reconcile runs one cycle now (or waits for the running one) and returns its delta.
func (c *Client) Reconcile(ctx context.Context) (ReconcileResult, error) {
	var result ReconcileResult
	return result, c.do(ctx, http.MethodPost, PathReconcile, &result)
}

// Flush removes idle runners, and busy ones too when busy is true.
func (c *Client) Flush(ctx context.Context, busy bool) (FlushResult, error) {
	var result FlushResult
	path := PathFlush + "?busy=" + strconv.FormatBool(busy)
	return result, c.do(ctx, http.MethodPost, path, &result)
}

// Drain removes idle runners (busy ones too when busy is true) and creates
// none: for settings about to change, or a unit going away.
func (c *Client) Drain(ctx context.Context, busy bool) (FlushResult, error) {
	var result FlushResult
	path := PathFlush + "?busy=" + strconv.FormatBool(busy) + "&replace=false"
	return result, c.do(ctx, http.MethodPost, path, &result)
}

// Teardown removes what the cloud holds for the unit besides its runners;
// the manager refuses while any instance of the unit is left.
func (c *Client) Teardown(ctx context.Context) error {
	var result TeardownResult
	return c.do(ctx, http.MethodPost, PathTeardown, &result)
}

// Health tells whether the manager answers.
func (c *Client) Health(ctx context.Context) error {
	var body map[string]string
	return c.do(ctx, http.MethodGet, PathHealth, &body)
}

// UpdateDependencies checks for a newer runner application.
func (c *Client) UpdateDependencies(ctx context.Context) (UpdateResult, error) {
	var result UpdateResult
	return result, c.do(ctx, http.MethodPost, PathUpdateDependencies, &result)
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	// The host is ignored: the transport always dials the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://manager"+path, nil)
	if err != nil {
		return fmt.Errorf("cannot ask the runner manager: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if isNotListening(err) {
			return ErrNotRunning
		}
		return fmt.Errorf("cannot reach the runner manager: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("cannot read the runner manager's answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("the runner manager answered %s", resp.Status)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("cannot decode the runner manager's answer: %w", err)
	}
	return nil
}

func isNotListening(err error) bool {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		err = urlErr.Err
	}
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}
