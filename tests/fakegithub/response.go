package fakegithub

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// Messages and documentation URLs GitHub sends with rate-limit errors.
// go-github v62 tells a secondary limit by the documentation URL suffix
// "secondary-rate-limits", and a primary one by 403 with remaining 0.
const (
	primaryRateLimitMessage   = "API rate limit exceeded for user ID 1."
	primaryRateLimitDocs      = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
	secondaryRateLimitMessage = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
	secondaryRateLimitDocs    = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
	unauthenticatedRateLimit  = 60
	rateLimitWindow           = time.Hour
)

// budget is one token's primary rate limit window.
type budget struct {
	limit     int
	remaining int
	reset     time.Time
}

// budgetFor returns the budget of a token, "" for unauthenticated requests.
// The caller holds s.mu.
func (s *Server) budgetFor(token string) *budget {
	b, ok := s.budgets[token]
	if !ok {
		limit := s.rateLimit
		if token == "" {
			limit = unauthenticatedRateLimit
		}
		b = &budget{limit: limit, remaining: limit}
		s.budgets[token] = b
	}
	if now := time.Now(); !b.reset.After(now) {
		b.remaining = b.limit
		b.reset = now.Add(rateLimitWindow)
	}
	return b
}

// spend takes one request from the budget, or reports that it is exhausted.
func (s *Server) spend(b *budget) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.remaining == 0 {
		return false
	}
	b.remaining--
	return true
}

// SetRateLimitRemaining sets how many requests token has left in the
// current window, so that tests can reach a real exhaustion: at zero the API
// answers 403 with "x-ratelimit-remaining: 0" until the window resets.
func (s *Server) SetRateLimitRemaining(token string, remaining int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.budgetFor(token)
	b.remaining = max(0, min(remaining, b.limit))
}

// RateLimitRemaining returns what token has left in the current window.
func (s *Server) RateLimitRemaining(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.budgetFor(token).remaining
}

// rateHeaders is a snapshot of a budget for the response headers.
type rateHeaders struct {
	limit, remaining int
	reset            time.Time
}

func (s *Server) snapshot(b *budget) rateHeaders {
	s.mu.Lock()
	defer s.mu.Unlock()
	return rateHeaders{limit: b.limit, remaining: b.remaining, reset: b.reset}
}

// setCommonHeaders sets what GitHub sends with every API response,
// errors included.
func (s *Server) setCommonHeaders(w http.ResponseWriter, rate rateHeaders) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-GitHub-Api-Version-Selected", "2022-11-28")
	h.Set("X-GitHub-Media-Type", "github.v3; format=json")
	h.Set("X-GitHub-Request-Id", s.newRequestID())
	h.Set("X-RateLimit-Limit", strconv.Itoa(rate.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(rate.remaining))
	h.Set("X-RateLimit-Used", strconv.Itoa(rate.limit-rate.remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(rate.reset.Unix(), 10))
	h.Set("X-RateLimit-Resource", "core")
}

func (s *Server) newRequestID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requestID++
	return fmt.Sprintf("FA4E:%04X:%06X:%07X:%08X", s.requestID%0xffff, s.requestID*7, s.requestID*13, s.requestID)
}

// writeJSON sends a successful API response.
func (s *Server) writeJSON(w http.ResponseWriter, c *call, status int, body any) {
	s.setCommonHeaders(w, s.snapshot(c.budget))
	if status == http.StatusNoContent {
		w.Header().Del("Content-Type")
		w.WriteHeader(status)
		return
	}
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(body); err != nil {
		s.logger.Debug("cannot write response", "error", err)
	}
}

// apiError is GitHub's basic-error body.
type apiError struct {
	Message          string `json:"message"`
	DocumentationURL string `json:"documentation_url"`
	Status           string `json:"status"`
}

// validationError is GitHub's validation-error-simple body, sent with 422.
type validationError struct {
	Message          string   `json:"message"`
	DocumentationURL string   `json:"documentation_url"`
	Errors           []string `json:"errors,omitempty"`
	Status           string   `json:"status"`
}

// writeError sends GitHub's error body. b may be nil for requests that never
// reached an endpoint.
func (s *Server) writeError(w http.ResponseWriter, status int, b *budget, message, docURL string) {
	s.writeErrorBody(w, status, b, apiError{Message: message, DocumentationURL: docURL, Status: strconv.Itoa(status)})
}

func (s *Server) writeErrorBody(w http.ResponseWriter, status int, b *budget, body any) {
	if b == nil {
		s.mu.Lock()
		b = s.budgetFor("")
		s.mu.Unlock()
	}
	s.setCommonHeaders(w, s.snapshot(b))
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(body); err != nil {
		s.logger.Debug("cannot write response", "error", err)
	}
}

// writePrimaryRateLimit answers as GitHub does when the hourly budget is
// spent: remaining 0 and the reset time in the headers. reset, when not
// zero, overrides the window's reset time.
func (s *Server) writePrimaryRateLimit(w http.ResponseWriter, status int, b *budget, reset time.Time) {
	rate := s.snapshot(b)
	rate.remaining = 0
	if !reset.IsZero() {
		rate.reset = reset
	}
	s.setCommonHeaders(w, rate)
	w.WriteHeader(status)
	body := apiError{Message: primaryRateLimitMessage, DocumentationURL: primaryRateLimitDocs, Status: strconv.Itoa(status)}
	if err := json.NewEncoder(w).Encode(body); err != nil {
		s.logger.Debug("cannot write response", "error", err)
	}
}

// writeSecondaryRateLimit answers as GitHub does when a client goes too
// fast: the primary budget is untouched, and Retry-After is only sometimes
// present (retryAfter 0 leaves it out).
func (s *Server) writeSecondaryRateLimit(w http.ResponseWriter, status int, b *budget, retryAfter time.Duration) {
	s.setCommonHeaders(w, s.snapshot(b))
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	}
	w.WriteHeader(status)
	body := apiError{Message: secondaryRateLimitMessage, DocumentationURL: secondaryRateLimitDocs, Status: strconv.Itoa(status)}
	if err := json.NewEncoder(w).Encode(body); err != nil {
		s.logger.Debug("cannot write response", "error", err)
	}
}
