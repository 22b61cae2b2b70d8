package fakegithub

import (
	"fmt"
	"net/http"
	"time"
)

// FaultKind is what goes wrong when a Fault fires.
type FaultKind int

const (
	// ServerError answers Fault.Status (default 500) with an error body.
	ServerError FaultKind = iota + 1
	// PrimaryRateLimit answers 403 (or Fault.Status 429) with
	// "x-ratelimit-remaining: 0", as when the hourly budget is spent.
	// Fault.RetryAfter, when set, is when the window resets, counted from
	// the injection: every answer gives that same x-ratelimit-reset, as
	// GitHub's fixed window does, and the fault disarms itself then (the
	// budget is back). Keep it short, as go-github refuses to send anything
	// before then.
	PrimaryRateLimit
	// SecondaryRateLimit answers 403 (or Fault.Status 429) with GitHub's
	// secondary rate limit message and documentation URL, a Retry-After
	// header when Fault.RetryAfter is set, and the budget untouched. With
	// Fault.RetryAfter, the limit lasts that long from the injection: each
	// answer's Retry-After is the time left, and the fault disarms itself
	// when it is over.
	SecondaryRateLimit
	// Forbidden answers 403 "Resource not accessible by personal access
	// token", as for a token lacking the permission.
	Forbidden
	// Latency delays the request by Fault.Delay, then serves it (or lets
	// another fault fire).
	Latency
	// DropConnection closes the connection without an answer.
	DropConnection
	// OmitBusyRunners applies to the list endpoints only (an empty
	// Endpoint means both): the request is served, but as if the runners
	// running a job did not exist, total_count and paging included. GitHub's
	// lists are eventually consistent, and offset paging over a list that
	// changes skips entries: a busy runner missing from a list is a real
	// answer, not an error. It can fire with another fault, like Latency.
	OmitBusyRunners
	// EmptyResponse answers 200 with an empty body, as the scale-set
	// broker does in an incident: the client fails to decode it (EOF).
	EmptyResponse
)

// lastFaultKind is the highest FaultKind.
const lastFaultKind = EmptyResponse

func (k FaultKind) String() string {
	switch k {
	case ServerError:
		return "server-error"
	case PrimaryRateLimit:
		return "primary-rate-limit"
	case SecondaryRateLimit:
		return "secondary-rate-limit"
	case Forbidden:
		return "forbidden"
	case Latency:
		return "latency"
	case DropConnection:
		return "drop-connection"
	case OmitBusyRunners:
		return "omit-busy-runners"
	case EmptyResponse:
		return "empty-response"
	}
	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// Fault is a programmed failure of the API. Faults fire after
// authentication, so a request without a valid token still gets 401.
type Fault struct {
	// Endpoint the fault applies to, e.g. ListOrgRunners; empty means
	// every API endpoint.
	Endpoint string
	Kind     FaultKind
	// Status overrides the status code: 500, 502, 503… for ServerError,
	// 403 or 429 for the rate limits.
	Status int
	// RetryAfter: see PrimaryRateLimit and SecondaryRateLimit.
	RetryAfter time.Duration
	// Delay is the added latency of a Latency fault.
	Delay time.Duration
	// Times is how many matching requests the fault fires for (a burst);
	// zero means until ClearFaults.
	Times int
}

type activeFault struct {
	Fault
	left int // requests left for a burst; unused when Times is 0
	// lifts is when a rate limit with a RetryAfter is over; zero for
	// every other fault.
	lifts time.Time
}

// liftsAt is when a rate-limit fault injected now is over, or zero when it
// lasts until it is cleared.
func liftsAt(f Fault, now time.Time) time.Time {
	if (f.Kind == PrimaryRateLimit || f.Kind == SecondaryRateLimit) && f.RetryAfter > 0 {
		return now.Add(f.RetryAfter)
	}
	return time.Time{}
}

// InjectFault arms a fault. Several faults may be armed; for each request
// every matching Latency and OmitBusyRunners fault applies, then the oldest
// matching other fault fires.
func (s *Server) InjectFault(f Fault) error {
	if f.Endpoint != "" && !isEndpoint(f.Endpoint) {
		return fmt.Errorf("cannot inject fault: unknown endpoint %q", f.Endpoint)
	}
	if f.Kind < ServerError || f.Kind > lastFaultKind {
		return fmt.Errorf("cannot inject fault: unknown kind %v", f.Kind)
	}
	if f.Kind == OmitBusyRunners && f.Endpoint != "" && !isListRunners(f.Endpoint) {
		return fmt.Errorf("cannot inject fault: %v applies to the runner lists only, not %q", f.Kind, f.Endpoint)
	}
	if f.Times < 0 {
		return fmt.Errorf("cannot inject fault: negative Times %d", f.Times)
	}
	if status := f.Status; status != 0 {
		isRateLimit := f.Kind == PrimaryRateLimit || f.Kind == SecondaryRateLimit
		switch {
		case f.Kind == ServerError && (status < 500 || status > 599):
			return fmt.Errorf("cannot inject fault: server error status %d is not 5xx", status)
		case isRateLimit && status != http.StatusForbidden && status != http.StatusTooManyRequests:
			return fmt.Errorf("cannot inject fault: rate limit status %d is neither 403 nor 429", status)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &activeFault{Fault: f, left: f.Times, lifts: liftsAt(f, time.Now())})
	return nil
}

// ClearFaults disarms every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// takeFaults returns the latency to add, whether to leave busy runners out
// of a list, and the fault to fire, if any, for one request to endpoint,
// and counts the request against their bursts.
func (s *Server) takeFaults(endpoint string) (delay time.Duration, omitBusy bool, fire *activeFault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	kept := s.faults[:0]
	for _, f := range s.faults {
		if !f.lifts.IsZero() && !now.Before(f.lifts) {
			continue // the limit is over
		}
		matches := f.Endpoint == "" || f.Endpoint == endpoint
		if f.Kind == OmitBusyRunners {
			matches = matches && isListRunners(endpoint)
		}
		consumed := false
		switch {
		case !matches:
		case f.Kind == Latency:
			delay += f.Delay
			consumed = true
		case f.Kind == OmitBusyRunners:
			omitBusy = true
			consumed = true
		case fire == nil:
			fault := *f
			fire = &fault
			consumed = true
		}
		if consumed && f.Times > 0 {
			f.left--
			if f.left == 0 {
				continue
			}
		}
		kept = append(kept, f)
	}
	clear(s.faults[len(kept):])
	s.faults = kept
	return delay, omitBusy, fire
}

func isListRunners(endpoint string) bool {
	return endpoint == ListRepoRunners || endpoint == ListOrgRunners
}

// applyFaults runs the faults armed for the request and reports whether one
// of them answered it.
func (s *Server) applyFaults(w http.ResponseWriter, r *http.Request, c *call) bool {
	delay, omitBusy, fault := s.takeFaults(c.endpoint.key)
	c.omitBusy = omitBusy
	if !s.sleep(r.Context(), delay) {
		dropConnection(w)
		return true
	}
	if fault == nil {
		return false
	}
	switch fault.Kind {
	case ServerError:
		status := fault.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		s.writeError(w, status, c.budget, serverErrorMessage(status), docsBase)
	case PrimaryRateLimit:
		s.writePrimaryRateLimit(w, statusOr(fault.Status, http.StatusForbidden), c.budget, fault.lifts)
	case SecondaryRateLimit:
		s.writeSecondaryRateLimit(w, statusOr(fault.Status, http.StatusForbidden), c.budget, time.Until(fault.lifts))
	case Forbidden:
		s.writeError(w, http.StatusForbidden, c.budget, "Resource not accessible by personal access token", c.endpoint.docURL)
	case DropConnection:
		dropConnection(w)
	case EmptyResponse:
		w.WriteHeader(http.StatusOK)
	}
	return true
}

func serverErrorMessage(status int) string {
	if status == http.StatusInternalServerError {
		return "Server Error"
	}
	return http.StatusText(status)
}

func statusOr(status, fallback int) int {
	if status == 0 {
		return fallback
	}
	return status
}

// dropConnection closes the client's connection without a response, as a
// failing proxy or a reset does.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// HTTP/2 or a recorder: the closest thing is aborting the handler.
		panic(http.ErrAbortHandler)
	}
	conn.Close()
}
