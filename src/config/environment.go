package config

import (
	"fmt"
	"strings"
)

// EnvironmentFile is what every runner's /etc/environment-style file holds,
// whatever the cloud: the proxies in both spellings tools read (no_proxy
// only with a proxy, where it means something), the Docker Hub mirror and
// the job-started hook with its setting (preJobEnvironment).
// Values are single-quoted for a POSIX shell. It holds no secrets.
func (r RunnerImage) EnvironmentFile() string {
	var b strings.Builder
	b.WriteString("# Written by the github-runner charm for the runner and its jobs.\n")
	add := func(key, value string) {
		if value != "" {
			fmt.Fprintf(&b, "%s=%s\n", key, ShellQuote(value))
		}
	}
	add("http_proxy", r.HTTPProxy)
	add("HTTP_PROXY", r.HTTPProxy)
	add("https_proxy", r.HTTPSProxy)
	add("HTTPS_PROXY", r.HTTPSProxy)
	if r.HTTPProxy != "" || r.HTTPSProxy != "" {
		add("no_proxy", r.NoProxy)
		add("NO_PROXY", r.NoProxy)
	}
	add("DOCKERHUB_MIRROR", r.DockerhubMirror)
	add("CONTAINER_REGISTRY_URL", r.DockerhubMirror)
	r.preJobEnvironment(add)
	return b.String()
}

// ShellQuote quotes s for a POSIX shell's single quotes.
func ShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
