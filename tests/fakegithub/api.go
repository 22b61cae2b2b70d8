package fakegithub

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// apiRunner is the "runner" schema of the API description.
type apiRunner struct {
	ID            int64   `json:"id"`
	RunnerGroupID int64   `json:"runner_group_id"`
	Name          string  `json:"name"`
	OS            string  `json:"os"`
	Status        string  `json:"status"`
	Busy          bool    `json:"busy"`
	Ephemeral     bool    `json:"ephemeral"`
	Labels        []Label `json:"labels"`
	Version       *string `json:"version"` // null until the runner first connects
}

func toAPIRunner(r Runner) apiRunner {
	out := apiRunner{
		ID:            r.ID,
		RunnerGroupID: r.GroupID,
		Name:          r.Name,
		OS:            r.OS,
		Status:        r.Status,
		Busy:          r.Busy,
		Ephemeral:     r.Ephemeral,
		Labels:        r.Labels,
	}
	if out.Labels == nil {
		out.Labels = []Label{}
	}
	if r.Version != "" {
		out.Version = &r.Version
	}
	return out
}

func (s *Server) listRunners(w http.ResponseWriter, r *http.Request, c *call) {
	name, filtered := r.URL.Query()["name"]
	s.mu.Lock()
	all := s.runnersIn(c.scope)
	s.mu.Unlock()
	matching := make([]apiRunner, 0, len(all))
	for _, runner := range all {
		if (filtered && !strings.EqualFold(runner.Name, name[0])) || (c.omitBusy && runner.Busy) {
			continue
		}
		matching = append(matching, toAPIRunner(runner))
	}
	start, end := paginate(w, r, len(matching))
	s.writeJSON(w, c, http.StatusOK, map[string]any{
		"total_count": len(matching),
		"runners":     matching[start:end],
	})
}

// lookupRunner finds a runner of the call's scope by the path's runner_id.
func (s *Server) lookupRunner(c *call) (*runnerState, bool) {
	id, err := strconv.ParseInt(c.vars["runner_id"], 10, 64)
	if err != nil {
		return nil, false
	}
	runner, ok := s.runners[id]
	if !ok || runner.Scope != c.scope {
		return nil, false
	}
	return runner, true
}

func (s *Server) getRunner(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	runner, ok := s.lookupRunner(c)
	var snapshot Runner
	if ok {
		snapshot = runner.snapshot()
	}
	s.mu.Unlock()
	if !ok {
		s.writeError(w, http.StatusNotFound, c.budget, "Not Found", c.endpoint.docURL)
		return
	}
	s.writeJSON(w, c, http.StatusOK, toAPIRunner(snapshot))
}

func (s *Server) deleteRunner(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	runner, ok := s.lookupRunner(c)
	busy := ok && runner.Busy
	id, _ := strconv.ParseInt(c.vars["runner_id"], 10, 64)
	d := Deletion{At: time.Now(), RunnerID: id, Scope: c.scope, Token: c.token.Value, Busy: busy}
	switch {
	case !ok:
		d.Status = http.StatusNotFound
	case busy:
		d.Name, d.Status = runner.Name, http.StatusUnprocessableEntity
	default:
		d.Name, d.Status = runner.Name, http.StatusNoContent
		s.removeRunner(runner)
	}
	s.deletions = append(s.deletions, d)
	name := d.Name
	s.mu.Unlock()
	switch {
	case !ok:
		s.writeError(w, http.StatusNotFound, c.budget, "Not Found", c.endpoint.docURL)
	case busy:
		// GitHub's text, unbalanced quote included.
		message := fmt.Sprintf("Bad request - Runner %q is still running a job\"", name)
		s.writeErrorBody(w, http.StatusUnprocessableEntity, c.budget, validationError{
			Message:          message,
			DocumentationURL: c.endpoint.docURL,
			Status:           "422",
		})
	default:
		s.writeJSON(w, c, http.StatusNoContent, nil)
	}
}

// Deletion is one DELETE of a runner that the API answered itself (not a
// fault, nor a refused token): who asked, about which runner, and the
// answer.
type Deletion struct {
	At       time.Time
	RunnerID int64
	// Name is the runner's, or "" when the scope had no runner of that id.
	Name  string
	Scope string
	// Token is the Value of the token that asked: tests give each client
	// its own to tell who deleted what.
	Token string
	// Busy: the runner was running a job, so GitHub refused (422).
	Busy bool
	// Status is the answer: 204, 404 or 422.
	Status int
}

// Deletions returns every DELETE of a runner the API answered, oldest
// first.
func (s *Server) Deletions() []Deletion {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.deletions)
}

// jitRequest is the generate-jitconfig body; pointers tell "missing" and
// null from zero values, as GitHub's validation does.
type jitRequest struct {
	Name          *string   `json:"name"`
	RunnerGroupID *int64    `json:"runner_group_id"`
	Labels        *[]string `json:"labels"`
	WorkFolder    *string   `json:"work_folder"`
}

func (s *Server) generateJITConfig(w http.ResponseWriter, r *http.Request, c *call) {
	var req jitRequest
	raw := make(map[string]json.RawMessage)
	decoder := json.NewDecoder(r.Body)
	if err := decoder.Decode(&raw); err != nil {
		s.writeError(w, http.StatusBadRequest, c.budget, "Problems parsing JSON", c.endpoint.docURL)
		return
	}
	if problem := req.decode(raw); problem != "" {
		s.writeValidationError(w, c, "Invalid request.\n\n"+problem)
		return
	}
	workFolder := "_work"
	if req.WorkFolder != nil && *req.WorkFolder != "" {
		workFolder = *req.WorkFolder
	}

	s.mu.Lock()
	var (
		status  int
		created Runner
		secret  string
	)
	switch {
	case !s.groupExists(c.scope, *req.RunnerGroupID):
		status = http.StatusNotFound
	case s.nameTaken(c.scope, *req.Name):
		status = http.StatusConflict
	default:
		runner := s.createRunner(c.scope, RunnerSpec{
			Name:      *req.Name,
			Labels:    *req.Labels,
			Ephemeral: true,
			GroupID:   *req.RunnerGroupID,
		})
		created, secret = runner.snapshot(), runner.secret
	}
	s.mu.Unlock()

	switch status {
	case http.StatusNotFound:
		s.writeError(w, status, c.budget, "Not Found", c.endpoint.docURL)
		return
	case http.StatusConflict:
		// GitHub masks the name in this message.
		s.writeError(w, status, c.budget, "Already exists - A runner with the name *** already exists.", c.endpoint.docURL)
		return
	}
	blob := encodeJITConfig(s.runnerURL(r), created, secret, workFolder)
	s.writeJSON(w, c, http.StatusCreated, map[string]any{
		"runner":             toAPIRunner(created),
		"encoded_jit_config": blob,
	})
}

// decode fills req from the raw body and returns what GitHub's schema
// validation would object to, worded like GitHub, or "".
func (req *jitRequest) decode(raw map[string]json.RawMessage) string {
	fields := []struct {
		name string
		into any
		kind string
	}{
		{"name", &req.Name, "a string"},
		{"runner_group_id", &req.RunnerGroupID, "an integer"},
		{"labels", &req.Labels, "an array"},
		{"work_folder", &req.WorkFolder, "a string"},
	}
	for _, f := range fields {
		value, ok := raw[f.name]
		if !ok {
			continue
		}
		if err := json.Unmarshal(value, f.into); err != nil {
			return fmt.Sprintf("For 'properties/%s', %s is not %s.", f.name, value, f.kind)
		}
	}
	for _, required := range []string{"name", "runner_group_id", "labels"} {
		if _, ok := raw[required]; !ok {
			return fmt.Sprintf("%q wasn't supplied.", required)
		}
	}
	switch {
	case req.Name == nil:
		return "For 'properties/name', nil is not a string."
	case req.RunnerGroupID == nil:
		return "For 'properties/runner_group_id', nil is not an integer."
	case req.Labels == nil:
		return "For 'properties/labels', nil is not an array."
	case len(*req.Labels) < 1:
		return "For 'properties/labels', [] should have at least 1 item(s)."
	case len(*req.Labels) > 100:
		return fmt.Sprintf("For 'properties/labels', array of %d items should have at most 100 item(s).", len(*req.Labels))
	case strings.TrimSpace(*req.Name) == "":
		return "For 'properties/name', \"\" is too short."
	}
	return ""
}

func (s *Server) writeValidationError(w http.ResponseWriter, c *call, message string) {
	s.writeErrorBody(w, http.StatusUnprocessableEntity, c.budget, validationError{
		Message:          message,
		DocumentationURL: c.endpoint.docURL,
		Status:           "422",
	})
}

// createToken answers registration-token and remove-token.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request, c *call) {
	token := newRegistrationToken()
	expires := time.Now().Add(time.Hour)
	if strings.HasSuffix(c.endpoint.key, "/registration-token") {
		s.mu.Lock()
		s.registrationTokens[token] = registration{scope: c.scope, expires: expires}
		s.mu.Unlock()
	}
	s.writeJSON(w, c, http.StatusCreated, map[string]string{
		"token":      token,
		"expires_at": expires.Format("2006-01-02T15:04:05.000Z07:00"),
	})
}

// newRegistrationToken returns a token shaped like GitHub's: 29 upper-case
// letters and digits.
func newRegistrationToken() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	b := make([]byte, 29)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("cannot read random bytes: %v", err))
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func (s *Server) listDownloads(w http.ResponseWriter, r *http.Request, c *call) {
	s.mu.Lock()
	apps := s.downloads.applications(s.runnerURL(r))
	s.mu.Unlock()
	s.writeJSON(w, c, http.StatusOK, apps)
}

type apiRunnerGroup struct {
	ID                       int64    `json:"id"`
	Name                     string   `json:"name"`
	Visibility               string   `json:"visibility"`
	Default                  bool     `json:"default"`
	RunnersURL               string   `json:"runners_url"`
	Inherited                bool     `json:"inherited"`
	AllowsPublicRepositories bool     `json:"allows_public_repositories"`
	RestrictedToWorkflows    bool     `json:"restricted_to_workflows"`
	SelectedWorkflows        []string `json:"selected_workflows"`
	WorkflowRestrictionsRO   bool     `json:"workflow_restrictions_read_only"`
}

func (s *Server) listRunnerGroups(w http.ResponseWriter, r *http.Request, c *call) {
	org := c.vars["org"]
	s.mu.Lock()
	groups := append([]runnerGroup{{ID: defaultGroupID, Name: "Default"}}, s.groups[org]...)
	s.mu.Unlock()
	out := make([]apiRunnerGroup, 0, len(groups))
	for _, g := range groups {
		out = append(out, apiRunnerGroup{
			ID:                       g.ID,
			Name:                     g.Name,
			Visibility:               "all",
			Default:                  g.ID == defaultGroupID,
			RunnersURL:               fmt.Sprintf("%s/orgs/%s/actions/runner-groups/%d/runners", apiBaseURL(r), org, g.ID),
			AllowsPublicRepositories: true,
			SelectedWorkflows:        []string{},
		})
	}
	start, end := paginate(w, r, len(out))
	s.writeJSON(w, c, http.StatusOK, map[string]any{
		"total_count":   len(out),
		"runner_groups": out[start:end],
	})
}

type apiRate struct {
	Limit     int   `json:"limit"`
	Remaining int   `json:"remaining"`
	Reset     int64 `json:"reset"`
	Used      int   `json:"used"`
}

func (s *Server) getRateLimit(w http.ResponseWriter, r *http.Request, c *call) {
	rate := s.snapshot(c.budget)
	core := apiRate{Limit: rate.limit, Remaining: rate.remaining, Reset: rate.reset.Unix(), Used: rate.limit - rate.remaining}
	fresh := func(limit int, window time.Duration) apiRate {
		return apiRate{Limit: limit, Remaining: limit, Reset: time.Now().Add(window).Unix()}
	}
	s.writeJSON(w, c, http.StatusOK, map[string]any{
		"resources": map[string]apiRate{
			"core":                        core,
			"search":                      fresh(30, time.Minute),
			"graphql":                     fresh(5000, time.Hour),
			"actions_runner_registration": fresh(10000, time.Hour),
		},
		"rate": core,
	})
}

// apiBaseURL is the API root the client used: scheme, host and the
// /api/v3 prefix when present.
func apiBaseURL(r *http.Request) string {
	base := requestOrigin(r)
	if strings.HasPrefix(r.URL.Path, apiPrefix+"/") {
		base += apiPrefix
	}
	return base
}

func requestOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// runnerURL is the base URL runners and downloads use: the advertised URL,
// else the origin of the request.
func (s *Server) runnerURL(r *http.Request) string {
	if s.advertiseURL != "" {
		return s.advertiseURL
	}
	return requestOrigin(r)
}

// paginate reads per_page (default 30, at most 100) and page (from 1),
// sets GitHub's Link header and returns the slice bounds of the page.
func paginate(w http.ResponseWriter, r *http.Request, total int) (start, end int) {
	query := r.URL.Query()
	perPage := positiveInt(query.Get("per_page"), 30)
	perPage = min(perPage, 100)
	page := positiveInt(query.Get("page"), 1)
	lastPage := max(1, (total+perPage-1)/perPage)

	start = min((page-1)*perPage, total)
	end = min(start+perPage, total)

	link := func(p int, rel string) string {
		query.Set("page", strconv.Itoa(p))
		u := url.URL{Path: r.URL.Path, RawQuery: query.Encode()}
		return fmt.Sprintf("<%s%s>; rel=%q", requestOrigin(r), u.String(), rel)
	}
	var links []string
	if page > 1 {
		links = append(links, link(min(page-1, lastPage), "prev"))
	}
	if page < lastPage {
		links = append(links, link(page+1, "next"), link(lastPage, "last"))
	}
	if page > 1 {
		links = append(links, link(1, "first"))
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	return start, end
}

func positiveInt(s string, fallback int) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return fallback
	}
	return n
}
