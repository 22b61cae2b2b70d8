package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
)

// PublicAPIURL is github.com's REST API root.
const PublicAPIURL = "https://api.github.com/"

const enterpriseAPIPath = "/api/v3/"

// ParseAPIURL turns a GitHub URL into its REST API root. This is the one
// place the rule lives; the charm and the GitHub client both apply it:
//
//   - empty, https://github.com or https://api.github.com → https://api.github.com/
//   - https://SUB.ghe.com or https://api.SUB.ghe.com (GitHub Enterprise
//     Cloud with data residency) → https://api.SUB.ghe.com/
//   - https://HOST or https://HOST/api/v3, with or without a trailing slash
//     (GitHub Enterprise Server) → https://HOST/api/v3/
//   - anything else (another path, a query, user:password@) is refused.
//
// http:// is accepted only for loopback hosts (tests, local proxies): the
// token must not cross a network in clear.
func ParseAPIURL(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return url.Parse(PublicAPIURL)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		if strings.Contains(raw, "@") { // not quoted: it may hold a password
			return nil, errors.New("is not a URL like https://HOST or https://HOST/api/v3")
		}
		return nil, fmt.Errorf("%q is not a URL like https://HOST or https://HOST/api/v3", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		// Not quoted: user info may hold a password.
		return nil, errors.New("must not contain credentials, a query or a fragment")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%q must use https (http only on a loopback host)", raw)
		}
	default:
		return nil, fmt.Errorf("%q must use https (http only on a loopback host)", raw)
	}
	host := strings.ToLower(u.Hostname())
	path := strings.TrimRight(u.Path, "/")
	switch {
	case host == "github.com" || host == "api.github.com":
		if path != "" {
			return nil, fmt.Errorf("%q has a path, which github.com takes none of", raw)
		}
		return url.Parse(PublicAPIURL)
	case strings.HasSuffix(host, ".ghe.com"):
		if path != "" {
			return nil, fmt.Errorf("%q has a path, which ghe.com takes none of", raw)
		}
		if !strings.HasPrefix(host, "api.") {
			u.Host = "api." + u.Host
		}
		u.Path = "/"
		return u, nil
	case path == "" || path == strings.TrimSuffix(enterpriseAPIPath, "/"):
		u.Path = enterpriseAPIPath
		return u, nil
	}
	return nil, fmt.Errorf("%q is not a URL like https://HOST or https://HOST/api/v3", raw)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
