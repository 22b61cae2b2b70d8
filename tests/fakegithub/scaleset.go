package fakegithub

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The runner scale-set service: what github.com/actions/scaleset talks to.
// The bootstrap (runner-registration) is under the GitHub API; the Actions
// service and the message queue live under svcPrefix, one tenant per
// runner scope.

// Scale-set endpoint keys, for Counts and InjectFault. The service ones are
// the method and the path relative to the Actions service URL, without the
// api-version query or a trailing slash.
const (
	// AppInstallationToken is GitHub's installation access token, which
	// the scale-set client mints (as a GitHub App) before every bootstrap.
	AppInstallationToken   = "POST /app/installations/{installation_id}/access_tokens"
	RunnerRegistration     = "POST /actions/runner-registration"
	ScaleSetRunnerGroups   = "GET /_apis/runtime/runnergroups"
	ScaleSetList           = "GET /_apis/runtime/runnerscalesets"
	ScaleSetCreate         = "POST /_apis/runtime/runnerscalesets"
	ScaleSetGet            = "GET /_apis/runtime/runnerscalesets/{scale_set_id}"
	ScaleSetUpdate         = "PATCH /_apis/runtime/runnerscalesets/{scale_set_id}"
	ScaleSetDelete         = "DELETE /_apis/runtime/runnerscalesets/{scale_set_id}"
	ScaleSetSessionCreate  = "POST /_apis/runtime/runnerscalesets/{scale_set_id}/sessions"
	ScaleSetSessionRefresh = "PATCH /_apis/runtime/runnerscalesets/{scale_set_id}/sessions/{session}"
	ScaleSetSessionDelete  = "DELETE /_apis/runtime/runnerscalesets/{scale_set_id}/sessions/{session}"
	ScaleSetAcquireJobs    = "POST /_apis/runtime/runnerscalesets/{scale_set_id}/acquirejobs"
	ScaleSetJITConfig      = "POST /_apis/runtime/runnerscalesets/{scale_set_id}/generatejitconfig"
	ScaleSetAgentGet       = "GET /_apis/distributedtask/pools/0/agents/{agent_id}"
	ScaleSetAgentList      = "GET /_apis/distributedtask/pools/0/agents"
	ScaleSetAgentDelete    = "DELETE /_apis/distributedtask/pools/0/agents/{agent_id}"
	ScaleSetMessageGet     = "GET /_queue/{session}/message"
	ScaleSetMessageDelete  = "DELETE /_queue/{session}/message/{message_id}"
)

// Scale-set modes (Options.ScaleSetMode).
const (
	// ScaleSetModeGitHub assigns jobs server-side: JobAssigned, no acquire.
	ScaleSetModeGitHub = "github.com"
	// ScaleSetModeGHES offers jobs (JobAvailable); the listener acquires
	// them (acquirejobs) before they are assigned.
	ScaleSetModeGHES = "ghes"
)

// Defaults of the scale-set options.
const (
	defaultScaleSetLongPoll      = 2 * time.Second
	defaultScaleSetSessionExpiry = time.Minute
	defaultScaleSetAssignTimeout = 5 * time.Minute
	defaultScaleSetTokenLifetime = time.Hour
	// maxJobMessages is how many job messages one queue message carries.
	maxJobMessages = 50
	// maxReassignments is how often a job not picked up is assigned again.
	maxReassignments = 3
)

// svcPrefix is where the fake serves the Actions service of each tenant.
const svcPrefix = "/_svc/"

// ScaleSetEndpoints lists the scale-set endpoint keys, in a stable order.
// Endpoints lists the REST ones.
func ScaleSetEndpoints() []string {
	keys := []string{AppInstallationToken, RunnerRegistration}
	for _, e := range svcEndpoints {
		keys = append(keys, e.key)
	}
	return keys
}

var svcEndpoints = []*endpoint{
	newEndpoint(ScaleSetRunnerGroups, "", (*Server).svcRunnerGroups),
	newEndpoint(ScaleSetList, "", (*Server).svcListScaleSets),
	newEndpoint(ScaleSetCreate, "", (*Server).svcCreateScaleSet),
	newEndpoint(ScaleSetGet, "", (*Server).svcGetScaleSet),
	newEndpoint(ScaleSetUpdate, "", (*Server).svcUpdateScaleSet),
	newEndpoint(ScaleSetDelete, "", (*Server).svcDeleteScaleSet),
	newEndpoint(ScaleSetSessionCreate, "", (*Server).svcCreateSession),
	newEndpoint(ScaleSetSessionRefresh, "", (*Server).svcRefreshSession),
	newEndpoint(ScaleSetSessionDelete, "", (*Server).svcDeleteSession),
	newEndpoint(ScaleSetAcquireJobs, "", (*Server).svcAcquireJobs),
	newEndpoint(ScaleSetJITConfig, "", (*Server).svcGenerateJIT),
	newEndpoint(ScaleSetAgentList, "", (*Server).svcListAgents),
	newEndpoint(ScaleSetAgentGet, "", (*Server).svcGetAgent),
	newEndpoint(ScaleSetAgentDelete, "", (*Server).svcDeleteAgent),
	newEndpoint(ScaleSetMessageGet, "", (*Server).svcGetMessage),
	newEndpoint(ScaleSetMessageDelete, "", (*Server).svcDeleteMessage),
}

var (
	registrationEndpoint = newEndpoint(RunnerRegistration, docsBase, (*Server).runnerRegistration)
	appTokenEndpoint     = newEndpoint(AppInstallationToken, docsBase+"/apps/apps#create-an-installation-access-token-for-an-app", (*Server).appInstallationToken)
)

func isScaleSetEndpoint(key string) bool {
	return slices.Contains(ScaleSetEndpoints(), key)
}

// scaleSetState is the scale-set service's part of state, guarded by
// Server.mu.
type scaleSetState struct {
	mode          string
	ghesMajor     int // 0: github.com-like
	ghesMinor     int
	longPoll      time.Duration
	sessionExpiry time.Duration
	assignTimeout time.Duration
	tokenLifetime time.Duration
	jwtKey        []byte

	adminTokens map[string]adminToken
	tenants     map[string]string // tenant → scope
	sets        map[int64]*scaleSet
	nextSetID   int64
	nextMsgID   int64
	// pending are the jobs waiting for a scale set or a runner, oldest
	// first; dispatching guards dispatchJobs against itself (notify).
	pending     []int64
	dispatching bool
}

type adminToken struct {
	scope   string
	tenant  string
	expires time.Time
}

type scaleSet struct {
	id            int64
	name          string
	scope         string
	groupID       int64
	groupName     string
	labels        []string
	disableUpdate bool
	createdOn     time.Time
	serviceURL    string // of the tenant, as the client that created it saw it
	// maxCapacity is the X-ScaleSetMaxCapacity of the last poll.
	maxCapacity int
	session     *scaleSetSession
	queue       []*queueMessage // delivered or not, not yet deleted; oldest first
	events      []jobMessage    // job messages not yet in a queue message
	messages    int             // queue messages made so far
}

type scaleSetSession struct {
	id       string
	owner    string
	token    string
	expires  time.Time // the token's exp
	queueURL string
	lastPoll time.Time
	polling  int // long polls in progress
}

type queueMessage struct {
	id     int64
	events []jobMessage
}

func (s *Server) initScaleSets(opts Options) error {
	st := scaleSetState{
		mode:          opts.ScaleSetMode,
		longPoll:      durationOr(opts.ScaleSetLongPoll, defaultScaleSetLongPoll),
		sessionExpiry: durationOr(opts.ScaleSetSessionExpiry, defaultScaleSetSessionExpiry),
		assignTimeout: durationOr(opts.ScaleSetAssignTimeout, defaultScaleSetAssignTimeout),
		tokenLifetime: durationOr(opts.ScaleSetTokenLifetime, defaultScaleSetTokenLifetime),
		jwtKey:        []byte(newSecret()),
		adminTokens:   make(map[string]adminToken),
		tenants:       make(map[string]string),
		sets:          make(map[int64]*scaleSet),
		nextSetID:     1,
		nextMsgID:     1,
	}
	switch st.mode {
	case "":
		st.mode = ScaleSetModeGitHub
	case ScaleSetModeGitHub, ScaleSetModeGHES:
	default:
		return fmt.Errorf("unknown scale-set mode %q", opts.ScaleSetMode)
	}
	if opts.GHESVersion != "" {
		major, minor, err := parseGHESVersion(opts.GHESVersion)
		if err != nil {
			return err
		}
		st.ghesMajor, st.ghesMinor = major, minor
	}
	s.scaleSets = st
	return nil
}

func durationOr(d, fallback time.Duration) time.Duration {
	if d == 0 {
		return fallback
	}
	return d
}

func parseGHESVersion(v string) (major, minor int, err error) {
	a, b, _ := strings.Cut(v, ".")
	b, _, _ = strings.Cut(b, ".")
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("invalid GHES version %q, want e.g. 3.17", v)
	}
	return major, minor, nil
}

// ghesBefore says whether the fake plays a GHES older than major.minor.
func (st *scaleSetState) ghesBefore(major, minor int) bool {
	return st.ghesMajor != 0 && (st.ghesMajor < major || (st.ghesMajor == major && st.ghesMinor < minor))
}

// serveScaleSets answers the scale-set bootstrap and service requests and
// reports whether the request was one.
func (s *Server) serveScaleSets(w http.ResponseWriter, r *http.Request) bool {
	path := r.URL.Path
	if strings.TrimPrefix(path, apiPrefix) == "/actions/runner-registration" && r.Method == http.MethodPost {
		s.serveSvc(w, r, registrationEndpoint, nil, "")
		return true
	}
	if e, vars := routeIn([]*endpoint{appTokenEndpoint}, r.Method, strings.TrimPrefix(path, apiPrefix)); e != nil {
		s.serveSvc(w, r, e, vars, "")
		return true
	}
	rest, ok := strings.CutPrefix(path, svcPrefix)
	if !ok {
		return false
	}
	tenant, rest, _ := strings.Cut(rest, "/")
	e, vars := routeIn(svcEndpoints, r.Method, "/"+strings.TrimSuffix(rest, "/"))
	if e == nil {
		s.logger.Debug("request", "method", r.Method, "path", path, "status", http.StatusNotFound)
		writeSvcError(w, http.StatusNotFound, "ResourceNotFoundException", "Not Found")
		return true
	}
	s.serveSvc(w, r, e, vars, tenant)
	return true
}

// routeIn is route over another endpoint list.
func routeIn(list []*endpoint, method, path string) (*endpoint, map[string]string) {
	segments := strings.Split(strings.TrimPrefix(path, "/"), "/")
	for _, e := range list {
		if e.method() != method || len(e.segments) != len(segments) {
			continue
		}
		if vars, ok := matchSegments(e.segments, segments); ok {
			return e, vars
		}
	}
	return nil, nil
}

func (s *Server) serveSvc(w http.ResponseWriter, r *http.Request, e *endpoint, vars map[string]string, tenant string) {
	c := &call{endpoint: e, vars: vars}
	s.mu.Lock()
	s.counts[e.key]++
	c.budget = s.budgetFor("")
	s.expireSessions(time.Now())
	if tenant != "" {
		c.scope = s.scaleSets.tenants[tenant]
		c.vars = make(map[string]string, len(vars)+1)
		for k, v := range vars {
			c.vars[k] = v
		}
		c.vars["tenant"] = tenant
	}
	s.mu.Unlock()
	s.logger.Debug("request", "endpoint", e.key, "path", r.URL.Path)
	if tenant != "" && !isQueueEndpoint(e.key) && !s.adminAuthorized(r, tenant) {
		writeSvcError(w, http.StatusUnauthorized, "VssUnauthorizedException", "TF400813: The user is not authorized to access this resource.")
		return
	}
	if s.applyFaults(w, r, c) {
		return
	}
	e.handle(s, w, r, c)
}

// isQueueEndpoint: authenticated by the session's queue token, not the
// admin token.
func isQueueEndpoint(key string) bool {
	return key == ScaleSetMessageGet || key == ScaleSetMessageDelete || key == ScaleSetAcquireJobs
}

func bearer(r *http.Request) string {
	scheme, value, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(value)
}

func (s *Server) adminAuthorized(r *http.Request, tenant string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.scaleSets.adminTokens[bearer(r)]
	return ok && t.tenant == tenant && time.Now().Before(t.expires)
}

// svcError is the Actions service's error body.
type svcError struct {
	TypeName string `json:"typeName"`
	Message  string `json:"message"`
}

const svcExceptionNamespace = "GitHub.Actions.Runtime.WebApi."

func writeSvcError(w http.ResponseWriter, status int, typeName, message string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("ActivityId", newUUID())
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(svcError{
		TypeName: svcExceptionNamespace + typeName + ", GitHub.Actions.Runtime.WebApi",
		Message:  message,
	})
}

func writeSvcJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("ActivityId", newUUID())
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func newUUID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("cannot read random bytes: %v", err))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newJWT makes an HS256 JWT with an exp claim: the client reads exp (and
// the algorithm's name) without verifying it. The caller holds s.mu.
func (s *Server) newJWT(subject string, expires time.Time) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	claims, _ := json.Marshal(map[string]any{
		"sub": subject,
		"iat": time.Now().Unix(),
		"nbf": time.Now().Add(-time.Minute).Unix(),
		"exp": expires.Unix(),
		"jti": newSecret(),
	})
	payload := header + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, s.scaleSets.jwtKey)
	mac.Write([]byte(payload))
	return payload + "." + enc.EncodeToString(mac.Sum(nil))
}

// runnerRegistration trades a registration token for the Actions service
// URL and an admin token, as GitHub does for the scale-set client (and for
// config.sh).
func (s *Server) runnerRegistration(w http.ResponseWriter, r *http.Request, c *call) {
	var body struct {
		URL string `json:"url"`
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	decodeErr := json.NewDecoder(r.Body).Decode(&body)
	target, urlErr := url.Parse(body.URL)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.scaleSets.ghesBefore(3, 9) {
		s.writeErrorLocked(w, http.StatusNotFound, "Not Found")
		return
	}
	reg, known := s.registrationTokens[strings.TrimSpace(token)]
	if !strings.EqualFold(scheme, "RemoteAuth") || !known || time.Now().After(reg.expires) {
		s.writeErrorLocked(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	if decodeErr != nil || urlErr != nil || strings.Trim(target.Path, "/") != reg.scope {
		s.writeErrorLocked(w, http.StatusNotFound, "Not Found")
		return
	}
	tenant := s.tenantOf(reg.scope)
	expires := time.Now().Add(s.scaleSets.tokenLifetime)
	admin := s.newJWT(tenant, expires)
	s.scaleSets.adminTokens[admin] = adminToken{scope: reg.scope, tenant: tenant, expires: expires}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]string{
		"url":   requestOrigin(r) + svcPrefix + tenant + "/",
		"token": admin,
	})
}

// writeErrorLocked is writeError without the rate-limit headers, for a
// caller that may hold s.mu.
func (s *Server) writeErrorLocked(w http.ResponseWriter, status int, message string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-GitHub-Request-Id", fmt.Sprintf("FA4E:SVC:%X", time.Now().UnixNano()))
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(apiError{Message: message, DocumentationURL: docsBase, Status: strconv.Itoa(status)})
}

// tenantOf names the Actions service tenant of a runner scope. The caller
// holds s.mu.
func (s *Server) tenantOf(scope string) string {
	for tenant, sc := range s.scaleSets.tenants {
		if sc == scope {
			return tenant
		}
	}
	tenant := fmt.Sprintf("t%d", len(s.scaleSets.tenants)+1)
	s.scaleSets.tenants[tenant] = scope
	return tenant
}

// Wire shapes of the service, as github.com/actions/scaleset decodes them.
type (
	wireLabel struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	wireRunnerSetting struct {
		DisableUpdate bool `json:"disableUpdate,omitempty"`
	}
	wireScaleSet struct {
		ID                 int64               `json:"id,omitempty"`
		Name               string              `json:"name,omitempty"`
		RunnerGroupID      int64               `json:"runnerGroupId,omitempty"`
		RunnerGroupName    string              `json:"runnerGroupName,omitempty"`
		Labels             []wireLabel         `json:"labels,omitempty"`
		RunnerSetting      *wireRunnerSetting  `json:"RunnerSetting,omitempty"`
		CreatedOn          time.Time           `json:"createdOn"`
		RunnerJitConfigURL string              `json:"runnerJitConfigUrl,omitempty"`
		Statistics         *ScaleSetStatistics `json:"statistics,omitempty"`
	}
	wireSession struct {
		SessionID               string              `json:"sessionId"`
		OwnerName               string              `json:"ownerName"`
		RunnerScaleSet          *wireScaleSet       `json:"runnerScaleSet"`
		MessageQueueURL         string              `json:"messageQueueUrl"`
		MessageQueueAccessToken string              `json:"messageQueueAccessToken"`
		Statistics              *ScaleSetStatistics `json:"statistics"`
	}
	wireAgent struct {
		ID               int64       `json:"id"`
		Name             string      `json:"name"`
		RunnerScaleSetID int64       `json:"runnerScaleSetId"`
		Status           string      `json:"status"`
		Busy             bool        `json:"busy"`
		Ephemeral        bool        `json:"ephemeral"`
		Labels           []wireLabel `json:"labels"`
	}
)

// ScaleSetStatistics are a scale set's counters, as the message queue
// sends them.
type ScaleSetStatistics struct {
	TotalAvailableJobs     int `json:"totalAvailableJobs"`
	TotalAcquiredJobs      int `json:"totalAcquiredJobs"`
	TotalAssignedJobs      int `json:"totalAssignedJobs"`
	TotalRunningJobs       int `json:"totalRunningJobs"`
	TotalRegisteredRunners int `json:"totalRegisteredRunners"`
	TotalBusyRunners       int `json:"totalBusyRunners"`
	TotalIdleRunners       int `json:"totalIdleRunners"`
}

// ScaleSet is a snapshot of a runner scale set as the fake knows it.
type ScaleSet struct {
	ID              int64              `json:"id"`
	Name            string             `json:"name"`
	Scope           string             `json:"scope"`
	Labels          []string           `json:"labels"`
	RunnerGroupID   int64              `json:"runner_group_id"`
	RunnerGroupName string             `json:"runner_group_name"`
	Statistics      ScaleSetStatistics `json:"statistics"`
	// SessionOwner is the ownerName of its message session, "" if none.
	SessionOwner string `json:"session_owner"`
	// MaxCapacity is the X-ScaleSetMaxCapacity of its last poll.
	MaxCapacity int `json:"max_capacity"`
	// Messages is how many queue messages it has made; Unacknowledged how
	// many of them are not deleted yet.
	Messages       int `json:"messages"`
	Unacknowledged int `json:"unacknowledged"`
}

func (s *Server) toWireScaleSet(set *scaleSet) *wireScaleSet {
	labels := make([]wireLabel, 0, len(set.labels))
	for _, l := range set.labels {
		labels = append(labels, wireLabel{Type: "System", Name: l})
	}
	stats := s.statistics(set)
	return &wireScaleSet{
		ID:                 set.id,
		Name:               set.name,
		RunnerGroupID:      set.groupID,
		RunnerGroupName:    set.groupName,
		Labels:             labels,
		RunnerSetting:      &wireRunnerSetting{DisableUpdate: set.disableUpdate},
		CreatedOn:          set.createdOn,
		RunnerJitConfigURL: fmt.Sprintf("%s_apis/runtime/runnerscalesets/%d/generatejitconfig", set.serviceURL, set.id),
		Statistics:         &stats,
	}
}

func (s *Server) snapshotScaleSet(set *scaleSet) ScaleSet {
	out := ScaleSet{
		ID:              set.id,
		Name:            set.name,
		Scope:           set.scope,
		Labels:          slices.Clone(set.labels),
		RunnerGroupID:   set.groupID,
		RunnerGroupName: set.groupName,
		Statistics:      s.statistics(set),
		MaxCapacity:     set.maxCapacity,
		Messages:        set.messages,
		Unacknowledged:  len(set.queue),
	}
	if set.session != nil {
		out.SessionOwner = set.session.owner
	}
	return out
}

// serviceURL is the tenant's Actions service URL as this request reached it.
func serviceURL(r *http.Request, c *call) string {
	return requestOrigin(r) + svcPrefix + c.vars["tenant"] + "/"
}

// groupsOf lists the runner groups of a scope: Default, and an
// organisation's own. The caller holds s.mu.
func (s *Server) groupsOf(scope string) []runnerGroup {
	return append([]runnerGroup{{ID: defaultGroupID, Name: "Default"}}, s.groups[scope]...)
}

func (s *Server) svcRunnerGroups(w http.ResponseWriter, r *http.Request, c *call) {
	name := r.URL.Query().Get("groupName")
	type wireGroup struct {
		ID        int64  `json:"id"`
		Name      string `json:"name"`
		Size      int    `json:"size"`
		IsDefault bool   `json:"isDefaultGroup"`
	}
	s.mu.Lock()
	value := []wireGroup{}
	for _, g := range s.groupsOf(c.scope) {
		if name != "" && !strings.EqualFold(g.Name, name) {
			continue
		}
		size := 0
		for _, runner := range s.runners {
			if runner.Scope == c.scope && runner.GroupID == g.ID {
				size++
			}
		}
		value = append(value, wireGroup{ID: g.ID, Name: g.Name, Size: size, IsDefault: g.ID == defaultGroupID})
	}
	s.mu.Unlock()
	writeSvcJSON(w, http.StatusOK, map[string]any{"count": len(value), "value": value})
}

func (s *Server) svcListScaleSets(w http.ResponseWriter, r *http.Request, c *call) {
	query := r.URL.Query()
	name := query.Get("name")
	group, _ := strconv.ParseInt(query.Get("runnerGroupId"), 10, 64)
	s.mu.Lock()
	value := []*wireScaleSet{}
	for _, set := range s.sortedSets(c.scope) {
		if (name != "" && !strings.EqualFold(set.name, name)) || (group != 0 && set.groupID != group) {
			continue
		}
		value = append(value, s.toWireScaleSet(set))
	}
	s.mu.Unlock()
	writeSvcJSON(w, http.StatusOK, map[string]any{"count": len(value), "value": value})
}

// sortedSets lists the scale sets of scope ("" for all) by id. The caller
// holds s.mu.
func (s *Server) sortedSets(scope string) []*scaleSet {
	var sets []*scaleSet
	for _, set := range s.scaleSets.sets {
		if scope == "" || set.scope == scope {
			sets = append(sets, set)
		}
	}
	slices.SortFunc(sets, func(a, b *scaleSet) int { return int(a.id - b.id) })
	return sets
}

// lookupSet finds the path's scale set in the call's scope. The caller
// holds s.mu.
func (s *Server) lookupSet(c *call) *scaleSet {
	id, _ := strconv.ParseInt(c.vars["scale_set_id"], 10, 64)
	set := s.scaleSets.sets[id]
	if set == nil || set.scope != c.scope {
		return nil
	}
	return set
}

func writeSetNotFound(w http.ResponseWriter, c *call) {
	writeSvcError(w, http.StatusNotFound, "RunnerScaleSetNotFoundException",
		fmt.Sprintf("The runner scale set with id %s does not exist.", c.vars["scale_set_id"]))
}

func (s *Server) svcGetScaleSet(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	set := s.lookupSet(c)
	var out *wireScaleSet
	if set != nil {
		out = s.toWireScaleSet(set)
	}
	s.mu.Unlock()
	if set == nil {
		writeSetNotFound(w, c)
		return
	}
	writeSvcJSON(w, http.StatusOK, out)
}

// decodeScaleSet reads a scale set body; the client sends a zero
// createdOn, and no id or group when they are 0.
func decodeScaleSet(r *http.Request) (wireScaleSet, error) {
	var in wireScaleSet
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		return in, fmt.Errorf("cannot decode runner scale set: %w", err)
	}
	return in, nil
}

// labelNames turns wire labels into names, as the service keeps them:
// without duplicates, and on a GHES before 3.18 the name alone (extra
// labels silently dropped). The caller holds s.mu.
func (s *Server) labelNames(name string, labels []wireLabel) []string {
	if s.scaleSets.ghesBefore(3, 18) {
		return []string{name}
	}
	var names []string
	for _, l := range labels {
		if l.Name != "" && !slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, l.Name) }) {
			names = append(names, l.Name)
		}
	}
	if len(names) == 0 {
		names = []string{name}
	}
	return names
}

// groupName finds a runner group of scope by id. The caller holds s.mu.
func (s *Server) groupName(scope string, id int64) (string, bool) {
	for _, g := range s.groupsOf(scope) {
		if g.ID == id {
			return g.Name, true
		}
	}
	return "", false
}

// setNameTaken: scale set names are unique within a runner group. The
// caller holds s.mu.
func (s *Server) setNameTaken(scope string, group int64, name string, except int64) bool {
	for _, set := range s.scaleSets.sets {
		if set.id != except && set.scope == scope && set.groupID == group && strings.EqualFold(set.name, name) {
			return true
		}
	}
	return false
}

func (s *Server) svcCreateScaleSet(w http.ResponseWriter, r *http.Request, c *call) {
	in, err := decodeScaleSet(r)
	if err != nil {
		writeSvcError(w, http.StatusBadRequest, "ArgumentException", err.Error())
		return
	}
	if strings.TrimSpace(in.Name) == "" {
		writeSvcError(w, http.StatusBadRequest, "ArgumentException", "The runner scale set name is required.")
		return
	}
	group := in.RunnerGroupID
	if group == 0 {
		group = defaultGroupID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	groupName, ok := s.groupName(c.scope, group)
	switch {
	case !ok:
		writeSvcError(w, http.StatusNotFound, "RunnerGroupNotFoundException", fmt.Sprintf("Runner group %d does not exist.", group))
		return
	case s.setNameTaken(c.scope, group, in.Name, 0):
		writeSvcError(w, http.StatusConflict, "RunnerScaleSetExistsException",
			fmt.Sprintf("A runner scale set named %s already exists in runner group %s.", in.Name, groupName))
		return
	}
	set := &scaleSet{
		id:         s.scaleSets.nextSetID,
		name:       in.Name,
		scope:      c.scope,
		groupID:    group,
		groupName:  groupName,
		labels:     s.labelNames(in.Name, in.Labels),
		createdOn:  time.Now().UTC().Truncate(time.Millisecond),
		serviceURL: serviceURL(r, c),
	}
	if in.RunnerSetting != nil {
		set.disableUpdate = in.RunnerSetting.DisableUpdate
	}
	s.scaleSets.nextSetID++
	s.scaleSets.sets[set.id] = set
	s.notify()
	writeSvcJSON(w, http.StatusOK, s.toWireScaleSet(set))
}

// svcUpdateScaleSet merges the non-zero fields of the body.
func (s *Server) svcUpdateScaleSet(w http.ResponseWriter, r *http.Request, c *call) {
	in, err := decodeScaleSet(r)
	if err != nil {
		writeSvcError(w, http.StatusBadRequest, "ArgumentException", err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.lookupSet(c)
	if set == nil {
		writeSetNotFound(w, c)
		return
	}
	name, group, groupName := set.name, set.groupID, set.groupName
	if in.Name != "" {
		name = in.Name
	}
	if in.RunnerGroupID != 0 && in.RunnerGroupID != group {
		var ok bool
		if groupName, ok = s.groupName(c.scope, in.RunnerGroupID); !ok {
			writeSvcError(w, http.StatusNotFound, "RunnerGroupNotFoundException", fmt.Sprintf("Runner group %d does not exist.", in.RunnerGroupID))
			return
		}
		group = in.RunnerGroupID
	}
	if s.setNameTaken(c.scope, group, name, set.id) {
		writeSvcError(w, http.StatusConflict, "RunnerScaleSetExistsException",
			fmt.Sprintf("A runner scale set named %s already exists in runner group %s.", name, groupName))
		return
	}
	set.name, set.groupID, set.groupName = name, group, groupName
	if len(in.Labels) > 0 {
		set.labels = s.labelNames(name, in.Labels)
	}
	if in.RunnerSetting != nil {
		set.disableUpdate = in.RunnerSetting.DisableUpdate
	}
	s.notify()
	writeSvcJSON(w, http.StatusOK, s.toWireScaleSet(set))
}

func (s *Server) svcDeleteScaleSet(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.lookupSet(c)
	if set == nil {
		writeSetNotFound(w, c)
		return
	}
	s.deleteScaleSet(set)
	writeSvcJSON(w, http.StatusNoContent, nil)
}

// deleteScaleSet forgets a scale set, its session and its queue; its jobs
// not yet running wait for another set or runner. The caller holds s.mu.
func (s *Server) deleteScaleSet(set *scaleSet) {
	delete(s.scaleSets.sets, set.id)
	for _, job := range s.jobs {
		if job.setID == set.id && job.State == JobQueued && job.RunnerID == 0 {
			s.unassign(job)
		}
	}
	s.notify()
}

// DeleteScaleSet deletes a scale set as GitHub does with an inactive one:
// its session ends, and creating a session answers 404
// RunnerScaleSetNotFoundException.
func (s *Server) DeleteScaleSet(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, ok := s.scaleSets.sets[id]
	if !ok {
		return fmt.Errorf("cannot delete scale set %d: %w", id, ErrNotFound)
	}
	s.deleteScaleSet(set)
	return nil
}

// ScaleSets returns the scale sets of scope ("" for all), by id.
func (s *Server) ScaleSets(scope string) []ScaleSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireSessions(time.Now())
	sets := s.sortedSets(scope)
	out := make([]ScaleSet, 0, len(sets))
	for _, set := range sets {
		out = append(out, s.snapshotScaleSet(set))
	}
	return out
}

// ScaleSetMessages returns how many queue messages a scale set has made.
func (s *Server) ScaleSetMessages(id int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set, ok := s.scaleSets.sets[id]; ok {
		return set.messages
	}
	return 0
}

// ExpireSessions ends every message session, as the service does with a
// session nobody polled for a while: polls answer 401, the refresh 404.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, set := range s.scaleSets.sets {
		set.session = nil
	}
	s.notify()
}

// ExpireQueueTokens ends every session's message-queue token, as when it
// reaches its exp: the next poll answers 401, and the client refreshes
// the session (PATCH) for a new one.
func (s *Server) ExpireQueueTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, set := range s.scaleSets.sets {
		if set.session != nil {
			set.session.token, set.session.expires = s.newJWT(set.session.id, time.Now()), time.Now()
		}
	}
	s.notify()
}

// expireSessions ends the sessions nobody polled for the session expiry.
// The caller holds s.mu.
func (s *Server) expireSessions(now time.Time) {
	if s.scaleSets.sessionExpiry <= 0 {
		return
	}
	for _, set := range s.scaleSets.sets {
		if sess := set.session; sess != nil && sess.polling == 0 && now.Sub(sess.lastPoll) > s.scaleSets.sessionExpiry {
			set.session = nil
		}
	}
}

func (s *Server) sessionOf(set *scaleSet) wireSession {
	stats := s.statistics(set)
	return wireSession{
		SessionID:               set.session.id,
		OwnerName:               set.session.owner,
		RunnerScaleSet:          s.toWireScaleSet(set),
		MessageQueueURL:         set.session.queueURL,
		MessageQueueAccessToken: set.session.token,
		Statistics:              &stats,
	}
}

func (s *Server) svcCreateSession(w http.ResponseWriter, r *http.Request, c *call) {
	var in struct {
		OwnerName string `json:"ownerName"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeSvcError(w, http.StatusBadRequest, "ArgumentException", "cannot decode session")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.lookupSet(c)
	switch {
	case set == nil:
		writeSetNotFound(w, c)
		return
	case set.session != nil:
		writeSvcError(w, http.StatusConflict, "RunnerScaleSetSessionConflictException",
			fmt.Sprintf("The actions runner scaleset %s already has an active session for owner %s.", set.name, set.session.owner))
		return
	}
	id := newUUID()
	set.session = &scaleSetSession{
		id:       id,
		owner:    in.OwnerName,
		queueURL: serviceURL(r, c) + "_queue/" + id + "/message",
		lastPoll: time.Now(),
	}
	s.renewQueueToken(set.session)
	s.notify()
	writeSvcJSON(w, http.StatusOK, s.sessionOf(set))
}

// renewQueueToken gives a session a new message-queue token. The caller
// holds s.mu.
func (s *Server) renewQueueToken(sess *scaleSetSession) {
	sess.expires = time.Now().Add(s.scaleSets.tokenLifetime)
	sess.token = s.newJWT(sess.id, sess.expires)
}

// sessionFor finds the path's session of the path's scale set. The caller
// holds s.mu.
func (s *Server) sessionFor(c *call) (*scaleSet, bool) {
	set := s.lookupSet(c)
	if set == nil || set.session == nil || !strings.EqualFold(set.session.id, c.vars["session"]) {
		return set, false
	}
	return set, true
}

func (s *Server) svcRefreshSession(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, ok := s.sessionFor(c)
	if !ok {
		writeSvcError(w, http.StatusNotFound, "RunnerAdminException",
			fmt.Sprintf("The session identifier %s is not valid.", c.vars["session"]))
		return
	}
	s.renewQueueToken(set.session)
	set.session.lastPoll = time.Now()
	writeSvcJSON(w, http.StatusOK, s.sessionOf(set))
}

func (s *Server) svcDeleteSession(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	set, ok := s.sessionFor(c)
	if !ok {
		writeSvcError(w, http.StatusBadRequest, "RunnerScaleSetSessionExpiredException",
			fmt.Sprintf("The session identifier %s is not valid.", c.vars["session"]))
		return
	}
	set.session = nil
	s.notify()
	writeSvcJSON(w, http.StatusNoContent, nil)
}

func (s *Server) svcGenerateJIT(w http.ResponseWriter, r *http.Request, c *call) {
	var in struct {
		Name       string `json:"name"`
		WorkFolder string `json:"workFolder"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || strings.TrimSpace(in.Name) == "" {
		writeSvcError(w, http.StatusBadRequest, "ArgumentException", "A runner name is required.")
		return
	}
	workFolder := in.WorkFolder
	if workFolder == "" {
		workFolder = "_work"
	}
	s.mu.Lock()
	set := s.lookupSet(c)
	var (
		created Runner
		secret  string
		taken   bool
	)
	if set != nil {
		taken = s.nameTaken(set.scope, in.Name)
	}
	if set != nil && !taken {
		runner := s.createRunner(set.scope, RunnerSpec{Name: in.Name, Ephemeral: true, GroupID: set.groupID})
		runner.scaleSetID = set.id
		runner.Labels = nil
		for _, l := range set.labels {
			runner.Labels = append(runner.Labels, Label{ID: s.labelID(l), Name: l, Type: "custom"})
		}
		created, secret = runner.snapshot(), runner.secret
	}
	s.mu.Unlock()
	switch {
	case set == nil:
		writeSetNotFound(w, c)
		return
	case taken:
		writeSvcError(w, http.StatusConflict, "AgentExistsException",
			fmt.Sprintf("A runner with name %s already exists in the pool.", in.Name))
		return
	}
	writeSvcJSON(w, http.StatusOK, map[string]any{
		"runner":           wireAgent{ID: created.ID, Name: created.Name, RunnerScaleSetID: set.id, Status: created.Status, Ephemeral: true, Labels: wireLabels(created.Labels)},
		"encodedJITConfig": encodeJITConfig(s.runnerURL(r), created, secret, workFolder),
	})
}

func wireLabels(labels []Label) []wireLabel {
	out := make([]wireLabel, 0, len(labels))
	for _, l := range labels {
		out = append(out, wireLabel{Type: "System", Name: l.Name})
	}
	return out
}

func toWireAgent(r *runnerState) wireAgent {
	return wireAgent{
		ID:               r.ID,
		Name:             r.Name,
		RunnerScaleSetID: r.scaleSetID,
		Status:           r.Status,
		Busy:             r.Busy,
		Ephemeral:        r.Ephemeral,
		Labels:           wireLabels(r.Labels),
	}
}

// lookupAgent finds the path's agent in the call's scope. The caller
// holds s.mu.
func (s *Server) lookupAgent(c *call) *runnerState {
	id, _ := strconv.ParseInt(c.vars["agent_id"], 10, 64)
	r := s.runners[id]
	if r == nil || r.Scope != c.scope {
		return nil
	}
	return r
}

func (s *Server) svcGetAgent(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	agent := s.lookupAgent(c)
	var out wireAgent
	if agent != nil {
		out = toWireAgent(agent)
	}
	s.mu.Unlock()
	if agent == nil {
		writeSvcError(w, http.StatusNotFound, "AgentNotFoundException",
			fmt.Sprintf("No agent found in pool Default with identifier %s.", c.vars["agent_id"]))
		return
	}
	writeSvcJSON(w, http.StatusOK, out)
}

func (s *Server) svcListAgents(w http.ResponseWriter, r *http.Request, c *call) {
	name, filtered := r.URL.Query()["agentName"]
	s.mu.Lock()
	value := []wireAgent{}
	for _, runner := range s.runnersIn(c.scope) {
		if filtered && !strings.EqualFold(runner.Name, name[0]) {
			continue
		}
		value = append(value, toWireAgent(s.runners[runner.ID]))
	}
	s.mu.Unlock()
	writeSvcJSON(w, http.StatusOK, map[string]any{"count": len(value), "value": value})
}

// svcDeleteAgent removes a runner: 204 also for a missing one, 400
// JobStillRunningException while it has a job.
func (s *Server) svcDeleteAgent(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	agent := s.lookupAgent(c)
	busy := agent != nil && (agent.Busy || agent.JobID != 0)
	if agent != nil && !busy {
		s.removeRunner(agent)
	}
	s.mu.Unlock()
	if busy {
		writeSvcError(w, http.StatusBadRequest, "JobStillRunningException",
			fmt.Sprintf("Agent %s is still running a job and cannot be removed.", c.vars["agent_id"]))
		return
	}
	writeSvcJSON(w, http.StatusNoContent, nil)
}
