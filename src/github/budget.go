package github

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Budget is the primary rate limit as of GitHub's latest answer, from its
// x-ratelimit-* headers.
type Budget struct {
	Limit     int
	Remaining int
	Used      int
	Reset     time.Time
	// Resource is the limit's bucket, "core" for the runner endpoints.
	Resource string
	// ObservedAt is when the response carrying these values arrived.
	ObservedAt time.Time
}

// RateBudget returns the latest rate-limit values seen on any API response,
// errors included. ok is false until a response carried them (GitHub
// Enterprise Server with rate limiting disabled never sends them).
func (c *Client) RateBudget() (b Budget, ok bool) {
	return c.budget.latest()
}

// budgetRecorder is an http.RoundTripper that notes x-ratelimit-* from every
// response. go-github's Response.Rate has no Used or Resource, and is not
// available for calls that failed before decoding.
type budgetRecorder struct {
	next http.RoundTripper

	mu   sync.Mutex
	last Budget
	seen bool
}

func (r *budgetRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if resp != nil {
		r.record(resp.Header)
	}
	return resp, err
}

func (r *budgetRecorder) record(h http.Header) {
	remaining, err := strconv.Atoi(h.Get("X-Ratelimit-Remaining"))
	if err != nil {
		return
	}
	b := Budget{
		Remaining:  remaining,
		Limit:      atoiOrZero(h.Get("X-Ratelimit-Limit")),
		Used:       atoiOrZero(h.Get("X-Ratelimit-Used")),
		Reset:      parseEpoch(h.Get("X-Ratelimit-Reset")),
		Resource:   h.Get("X-Ratelimit-Resource"),
		ObservedAt: time.Now(),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last, r.seen = b, true
}

func (r *budgetRecorder) latest() (Budget, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last, r.seen
}

func atoiOrZero(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
