package github

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
)

// maxPeek bounds how much of an error body secondaryLimitTransport reads.
const maxPeek = 64 << 10

// secondaryLimitTransport adds "Retry-After: 60" to a 403 secondary-limit
// answer that has none. go-github v62 otherwise takes x-ratelimit-reset
// (the end of the primary window, up to an hour away) as the wait, and
// refuses every call locally until then; GitHub documents "wait at least
// one minute" for this case.
type secondaryLimitTransport struct {
	next http.RoundTripper
}

func (t secondaryLimitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusForbidden ||
		resp.Header.Get("Retry-After") != "" || resp.Header.Get("X-Ratelimit-Remaining") == "0" {
		return resp, err
	}
	head, readErr := io.ReadAll(io.LimitReader(resp.Body, maxPeek))
	// Hand the whole body on: what we read, then the rest.
	resp.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(head), resp.Body), Closer: resp.Body}
	if readErr == nil && mentionsSecondaryLimit(head) {
		resp.Header.Set("Retry-After", strconv.Itoa(int(defaultSecondaryWait.Seconds())))
	}
	return resp, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

func mentionsSecondaryLimit(body []byte) bool {
	lower := bytes.ToLower(body)
	return bytes.Contains(lower, []byte("secondary-rate-limits")) ||
		bytes.Contains(lower, []byte("abuse-rate-limits")) ||
		bytes.Contains(lower, []byte("secondary rate limit"))
}
