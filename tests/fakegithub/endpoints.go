package fakegithub

import (
	"net/http"
	"strings"
)

// Endpoint keys name the GitHub REST operations the fake serves. They are
// the keys of [Server.Counts] and the values of [Fault.Endpoint]: the method,
// a space, and the path template exactly as rest-runners.json spells it.
const (
	ListRepoRunners          = "GET /repos/{owner}/{repo}/actions/runners"
	GetRepoRunner            = "GET /repos/{owner}/{repo}/actions/runners/{runner_id}"
	DeleteRepoRunner         = "DELETE /repos/{owner}/{repo}/actions/runners/{runner_id}"
	RepoJITConfig            = "POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig"
	RepoRegistrationToken    = "POST /repos/{owner}/{repo}/actions/runners/registration-token"
	RepoRemoveToken          = "POST /repos/{owner}/{repo}/actions/runners/remove-token"
	ListRepoRunnerDownloads  = "GET /repos/{owner}/{repo}/actions/runners/downloads"
	ListOrgRunners           = "GET /orgs/{org}/actions/runners"
	GetOrgRunner             = "GET /orgs/{org}/actions/runners/{runner_id}"
	DeleteOrgRunner          = "DELETE /orgs/{org}/actions/runners/{runner_id}"
	OrgJITConfig             = "POST /orgs/{org}/actions/runners/generate-jitconfig"
	OrgRegistrationToken     = "POST /orgs/{org}/actions/runners/registration-token"
	OrgRemoveToken           = "POST /orgs/{org}/actions/runners/remove-token"
	ListOrgRunnerDownloads   = "GET /orgs/{org}/actions/runners/downloads"
	ListOrgRunnerGroups      = "GET /orgs/{org}/actions/runner-groups"
	GetRateLimit             = "GET /rate_limit"
	docsBase                 = "https://docs.github.com/rest"
	selfHostedRunnersDocs    = docsBase + "/actions/self-hosted-runners"
	selfHostedRunnerGrpsDocs = docsBase + "/actions/self-hosted-runner-groups"
)

// Endpoints lists every endpoint key the fake serves, in a stable order.
func Endpoints() []string {
	keys := make([]string, len(endpoints))
	for i, e := range endpoints {
		keys[i] = e.key
	}
	return keys
}

type handlerFunc func(s *Server, w http.ResponseWriter, r *http.Request, c *call)

// endpoint is one operation of the API description.
type endpoint struct {
	key      string
	segments []string // path template split on "/"; "{name}" matches one segment
	docURL   string   // externalDocs.url of the operation, as GitHub puts it in error bodies
	handle   handlerFunc
}

func (e *endpoint) method() string {
	method, _, _ := strings.Cut(e.key, " ")
	return method
}

// endpoints is ordered so that literal segments win over variables
// ("runners/downloads" before "runners/{runner_id}").
var endpoints = []*endpoint{
	newEndpoint(ListRepoRunners, selfHostedRunnersDocs+"#list-self-hosted-runners-for-a-repository", (*Server).listRunners),
	newEndpoint(RepoJITConfig, selfHostedRunnersDocs+"#create-configuration-for-a-just-in-time-runner-for-a-repository", (*Server).generateJITConfig),
	newEndpoint(RepoRegistrationToken, selfHostedRunnersDocs+"#create-a-registration-token-for-a-repository", (*Server).createToken),
	newEndpoint(RepoRemoveToken, selfHostedRunnersDocs+"#create-a-remove-token-for-a-repository", (*Server).createToken),
	newEndpoint(ListRepoRunnerDownloads, selfHostedRunnersDocs+"#list-runner-applications-for-a-repository", (*Server).listDownloads),
	newEndpoint(GetRepoRunner, selfHostedRunnersDocs+"#get-a-self-hosted-runner-for-a-repository", (*Server).getRunner),
	newEndpoint(DeleteRepoRunner, selfHostedRunnersDocs+"#delete-a-self-hosted-runner-from-a-repository", (*Server).deleteRunner),
	newEndpoint(ListOrgRunners, selfHostedRunnersDocs+"#list-self-hosted-runners-for-an-organization", (*Server).listRunners),
	newEndpoint(OrgJITConfig, selfHostedRunnersDocs+"#create-configuration-for-a-just-in-time-runner-for-an-organization", (*Server).generateJITConfig),
	newEndpoint(OrgRegistrationToken, selfHostedRunnersDocs+"#create-a-registration-token-for-an-organization", (*Server).createToken),
	newEndpoint(OrgRemoveToken, selfHostedRunnersDocs+"#create-a-remove-token-for-an-organization", (*Server).createToken),
	newEndpoint(ListOrgRunnerDownloads, selfHostedRunnersDocs+"#list-runner-applications-for-an-organization", (*Server).listDownloads),
	newEndpoint(GetOrgRunner, selfHostedRunnersDocs+"#get-a-self-hosted-runner-for-an-organization", (*Server).getRunner),
	newEndpoint(DeleteOrgRunner, selfHostedRunnersDocs+"#delete-a-self-hosted-runner-from-an-organization", (*Server).deleteRunner),
	newEndpoint(ListOrgRunnerGroups, selfHostedRunnerGrpsDocs+"#list-self-hosted-runner-groups-for-an-organization", (*Server).listRunnerGroups),
	newEndpoint(GetRateLimit, docsBase+"/rate-limit/rate-limit#get-rate-limit-status-for-the-authenticated-user", (*Server).getRateLimit),
}

func newEndpoint(key, docURL string, handle handlerFunc) *endpoint {
	_, path, _ := strings.Cut(key, " ")
	return &endpoint{
		key:      key,
		segments: strings.Split(strings.TrimPrefix(path, "/"), "/"),
		docURL:   docURL,
		handle:   handle,
	}
}

func isEndpoint(key string) bool {
	if isScaleSetEndpoint(key) {
		return true
	}
	for _, e := range endpoints {
		if e.key == key {
			return true
		}
	}
	return false
}

// route finds the endpoint for a method and a path (without the /api/v3
// prefix). It returns the endpoint and the path variables, or nil when
// nothing matches; GitHub answers an unknown method on a known path with 404
// too, so the method is part of the match.
func route(method, path string) (*endpoint, map[string]string) {
	segments := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, e := range endpoints {
		if e.method() != method || len(e.segments) != len(segments) {
			continue
		}
		if vars, ok := matchSegments(e.segments, segments); ok {
			return e, vars
		}
	}
	return nil, nil
}

func matchSegments(template, segments []string) (map[string]string, bool) {
	vars := make(map[string]string)
	for i, want := range template {
		got := segments[i]
		if !strings.HasPrefix(want, "{") {
			if want != got {
				return nil, false
			}
			continue
		}
		name := strings.Trim(want, "{}")
		if got == "" || (strings.HasSuffix(name, "_id") && !isDigits(got)) {
			return nil, false
		}
		vars[name] = got
	}
	return vars, true
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}
