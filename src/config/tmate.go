package config

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TmateServer is one tmate-ssh-server of the debug-ssh relation: where a
// job's canonical/action-tmate opens its debug session, and the host key
// fingerprints the tmate client checks it by. None of it is secret.
type TmateServer struct {
	Host               string `yaml:"host"` // an IP address or a host name
	Port               int    `yaml:"port"`
	RSAFingerprint     string `yaml:"rsa-fingerprint"`     // "SHA256:<base64>"
	ED25519Fingerprint string `yaml:"ed25519-fingerprint"` // "SHA256:<base64>"
}

// The variables canonical/action-tmate reads its server from.
const (
	TmateHostVariable               = "TMATE_SERVER_HOST"
	TmatePortVariable               = "TMATE_SERVER_PORT"
	TmateRSAFingerprintVariable     = "TMATE_SERVER_RSA_FINGERPRINT"
	TmateED25519FingerprintVariable = "TMATE_SERVER_ED25519_FINGERPRINT"
)

// Environment is the server as canonical/action-tmate reads it from a
// job's environment.
func (s TmateServer) Environment() map[string]string {
	return map[string]string{
		TmateHostVariable:               s.Host,
		TmatePortVariable:               strconv.Itoa(s.Port),
		TmateRSAFingerprintVariable:     s.RSAFingerprint,
		TmateED25519FingerprintVariable: s.ED25519Fingerprint,
	}
}

// Address is host:port.
func (s TmateServer) Address() string { return netJoin(s.Host, s.Port) }

func netJoin(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// ParseTmateServer reads the data a tmate-ssh-server unit publishes on the
// debug-ssh relation (keys host, port, rsa_fingerprint,
// ed25519_fingerprint), by the rules of TmateServer.Problem. Its error
// names the relation key.
func ParseTmateServer(data map[string]string) (TmateServer, error) {
	s := TmateServer{
		Host:               strings.TrimSpace(data["host"]),
		RSAFingerprint:     strings.TrimSpace(data["rsa_fingerprint"]),
		ED25519Fingerprint: strings.TrimSpace(data["ed25519_fingerprint"]),
	}
	port := strings.TrimSpace(data["port"])
	var problems []string
	if port == "" {
		problems = append(problems, "port is missing")
	} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		problems = append(problems, fmt.Sprintf("port %q is not a TCP port (1-65535)", clip(port)))
	} else {
		s.Port = n
	}
	for _, p := range s.problems() {
		if p.key == "port" {
			continue // said above, from the text
		}
		problems = append(problems, p.relationKey+" "+p.text)
	}
	if len(problems) > 0 {
		return TmateServer{}, errors.New(strings.Join(problems, "; "))
	}
	return s, nil
}

// clip keeps a quoted value of another charm's data short in a log line.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

type tmateProblem struct{ key, relationKey, text string }

// problems is every rule a server breaks, keyed by its config key and its
// relation key.
func (s TmateServer) problems() []tmateProblem {
	var out []tmateProblem
	add := func(key, relationKey, text string) { out = append(out, tmateProblem{key, relationKey, text}) }
	switch {
	case s.Host == "":
		add("host", "host", "is missing")
	case !isHost(s.Host):
		add("host", "host", fmt.Sprintf("%q is neither an IP address nor a host name", clip(s.Host)))
	}
	if s.Port < 1 || s.Port > 65535 {
		add("port", "port", fmt.Sprintf("must be a TCP port (1-65535), not %d", s.Port))
	}
	for _, fp := range []struct{ key, relationKey, value string }{
		{"rsa-fingerprint", "rsa_fingerprint", s.RSAFingerprint},
		{"ed25519-fingerprint", "ed25519_fingerprint", s.ED25519Fingerprint},
	} {
		switch {
		case fp.value == "":
			add(fp.key, fp.relationKey, "is missing")
		case !isFingerprint(fp.value):
			add(fp.key, fp.relationKey, fmt.Sprintf("%q is not a SHA256 host key fingerprint (SHA256:<base64>, as ssh-keygen -l prints)", clip(fp.value)))
		}
	}
	return out
}

// hostLabel is one label of a host name (RFC 1123): letters, digits and
// hyphens inside, at most 63 characters.
var hostLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)

// isHost tells whether s is an IP address (no zone) or a host name.
func isHost(s string) bool {
	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Zone() == ""
	}
	if len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if !hostLabel.MatchString(l) {
			return false
		}
	}
	// A name all of digits and dots is a malformed address, not a name.
	return strings.ContainsFunc(labels[len(labels)-1], func(r rune) bool { return r < '0' || r > '9' })
}

// isFingerprint tells whether s is OpenSSH's SHA256 fingerprint of a key:
// "SHA256:" and the digest in base64, without padding as OpenSSH prints it
// (with padding accepted too).
func isFingerprint(s string) bool {
	digest, ok := strings.CutPrefix(s, "SHA256:")
	if !ok {
		return false
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimSuffix(digest, "="))
	return err == nil && len(b) == 32
}

// tmateProblems is every problem with the runners' tmate servers, by
// field ("runner.tmate-servers[0].port").
func tmateProblems(servers []TmateServer) []Problem {
	var problems []Problem
	seen := map[string]bool{}
	for i, s := range servers {
		field := fmt.Sprintf("runner.tmate-servers[%d]", i)
		for _, p := range s.problems() {
			problems = append(problems, Problem{field + "." + p.key, p.text})
		}
		if seen[s.Address()] {
			problems = append(problems, Problem{field, fmt.Sprintf("%q is listed twice", s.Address())})
		}
		seen[s.Address()] = true
	}
	return problems
}

// SortTmateServers sorts servers by address and drops repeats of one
// address, so that the same relation data always makes the same config.
func SortTmateServers(servers []TmateServer) []TmateServer {
	out := slices.Clone(servers)
	slices.SortStableFunc(out, func(a, b TmateServer) int { return strings.Compare(a.Address(), b.Address()) })
	return slices.CompactFunc(out, func(a, b TmateServer) bool { return a.Address() == b.Address() })
}

// EnvironmentFileWith is EnvironmentFile with one runner's own variables
// (its tmate server) after the runners' common ones, sorted by name.
func (r RunnerImage) EnvironmentFileWith(extra map[string]string) string {
	var b strings.Builder
	b.WriteString(r.EnvironmentFile())
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, ShellQuote(extra[k]))
	}
	return b.String()
}

// TmateEnvironments are the runners' tmate servers as job variables, one
// map a server: the choices the engine gives each new runner one of.
func (r RunnerImage) TmateEnvironments() []map[string]string {
	var out []map[string]string
	for _, s := range r.TmateServers {
		out = append(out, s.Environment())
	}
	return out
}

// tmateResolveTimeout bounds the look-up of a tmate server's host name.
const tmateResolveTimeout = 10 * time.Second

// ResolveTmateServers are the servers' addresses with their ports, what
// the clouds' firewalls let runners reach: host names resolved with
// resolver, each look-up bounded. A name that does not resolve is left
// out, and said in err (its runners' sessions fail only if the denylist
// covers where it points).
func ResolveTmateServers(ctx context.Context, servers []TmateServer, resolver *net.Resolver) (addrs []netip.AddrPort, err error) {
	var errs []error
	for _, s := range servers {
		if addr, err := netip.ParseAddr(s.Host); err == nil {
			addrs = append(addrs, netip.AddrPortFrom(addr.Unmap(), uint16(s.Port)))
			continue
		}
		lookupCtx, cancel := context.WithTimeout(ctx, tmateResolveTimeout)
		found, err := resolver.LookupNetIP(lookupCtx, "ip", s.Host)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("cannot resolve tmate server %s: %w", s.Address(), err))
			continue
		}
		for _, addr := range found {
			addrs = append(addrs, netip.AddrPortFrom(addr.Unmap(), uint16(s.Port)))
		}
	}
	return addrs, errors.Join(errs...)
}
