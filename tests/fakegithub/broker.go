package fakegithub

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// fakePrefix holds everything that is not GitHub's REST API: the broker the
// fake runner application talks to, the runner downloads and the controls
// for tests in other processes.
const fakePrefix = "/_fake/"

// maxLongPoll caps a broker long poll, as GitHub's 50 s message polls.
const maxLongPoll = 50 * time.Second

func (s *Server) newFakeMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+fakePrefix+"releases/download/{version}/{filename}", s.serveRelease)
	mux.HandleFunc("GET "+fakePrefix+"objects/{filename}", s.serveObject)
	mux.HandleFunc("POST "+brokerPath+"/session", s.brokerSession)
	mux.HandleFunc("GET "+brokerPath+"/message", s.brokerMessage)
	mux.HandleFunc("POST "+brokerPath+"/jobs/{id}/complete", s.brokerCompleteJob)
	mux.HandleFunc("POST "+brokerPath+"/jobs/{id}/renew", s.brokerRenewJob)
	mux.HandleFunc("POST "+brokerPath+"/register", s.brokerRegister)
	mux.HandleFunc("POST "+brokerPath+"/remove", s.brokerRemove)
	s.addControlRoutes(mux)
	return mux
}

func (s *Server) serveFake(w http.ResponseWriter, r *http.Request) {
	s.logger.Debug("fake request", "method", r.Method, "path", r.URL.Path)
	s.fakeMux.ServeHTTP(w, r)
}

func writeText(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	io.WriteString(w, text)
}

// brokerRunner authenticates a runner process by the secret of its JIT
// config. It returns the runner, or nil if GitHub removed it; ok is false
// (and the answer sent) when the secret is unknown. The caller holds s.mu.
func (s *Server) brokerRunner(w http.ResponseWriter, r *http.Request) (runner *runnerState, ok bool) {
	scheme, secret, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	id, known := s.bySecret[secret]
	if !strings.EqualFold(scheme, "bearer") || !known {
		writeText(w, http.StatusUnauthorized, "unknown runner credentials\n")
		return nil, false
	}
	runner = s.runners[id]
	if runner != nil {
		runner.lastContact = time.Now()
	}
	return runner, true
}

// brokerSession is a runner process starting: it reports what it is, and
// GitHub shows it online after the status lag.
func (s *Server) brokerSession(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeText(w, http.StatusBadRequest, "cannot parse form\n")
		return
	}
	s.mu.Lock()
	runner, ok := s.brokerRunner(w, r)
	if ok && runner != nil {
		s.connect(runner, r.PostForm.Get("arch"), r.PostForm.Get("version"))
	}
	s.mu.Unlock()
	switch {
	case !ok:
	case runner == nil:
		writeText(w, http.StatusOK, "gone\n")
	default:
		writeText(w, http.StatusOK, "ok\n")
	}
}

// brokerMessage is a runner's long poll for work. The answer is plain text
// a shell can read: "none", "gone", or "job" followed by key=value lines
// (id, name, sleep in seconds, event name, event payload and command in
// base64).
func (s *Server) brokerMessage(w http.ResponseWriter, r *http.Request) {
	wait := maxLongPoll
	if seconds, err := strconv.ParseFloat(r.URL.Query().Get("wait"), 64); err == nil {
		wait = min(maxLongPoll, max(0, time.Duration(seconds*float64(time.Second))))
	}
	timeout := time.After(wait)
	for {
		s.mu.Lock()
		runner, ok := s.brokerRunner(w, r)
		if !ok {
			s.mu.Unlock()
			return
		}
		if runner == nil {
			s.mu.Unlock()
			writeText(w, http.StatusOK, "gone\n")
			return
		}
		s.claimScaleSetJob(runner)
		if job := s.jobs[runner.JobID]; runner.JobID != 0 && job.State == JobQueued {
			job.State, job.renewed = JobInProgress, time.Now()
			if job.StartedAt.IsZero() {
				job.StartedAt = job.renewed.UTC()
			}
			s.notify()
			spec, renew := job.Spec, s.renewInterval()
			s.mu.Unlock()
			event, payload := spec.Event, []byte(spec.EventPayload)
			if event == "" {
				event = "push"
			}
			if len(payload) == 0 {
				payload = []byte("{}")
			}
			writeText(w, http.StatusOK, fmt.Sprintf("job\nid=%d\nname=%s\nsleep=%.3f\nrenew=%d\nevent=%s\npayload=%s\ncommand=%s\n",
				job.ID, spec.Name, spec.Sleep.Seconds(), int(renew.Seconds()), event, base64.StdEncoding.EncodeToString(payload),
				base64.StdEncoding.EncodeToString([]byte(spec.Command))))
			return
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			writeText(w, http.StatusOK, "none\n")
			return
		case <-r.Context().Done():
			return
		case <-s.closed:
			return
		}
	}
}

// brokerCompleteJob is a runner reporting the end of its job; the body is
// the job's output.
func (s *Server) brokerCompleteJob(w http.ResponseWriter, r *http.Request) {
	jobID, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeText(w, http.StatusNotFound, "unknown job\n")
		return
	}
	exitCode, err := strconv.Atoi(r.URL.Query().Get("exit_code"))
	if err != nil {
		writeText(w, http.StatusBadRequest, "cannot parse exit_code\n")
		return
	}
	output, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeText(w, http.StatusBadRequest, "cannot read job output\n")
		return
	}
	s.mu.Lock()
	runner, ok := s.brokerRunner(w, r)
	job := s.jobs[jobID]
	owned := ok && job != nil && runner != nil && job.RunnerID == runner.ID
	s.mu.Unlock()
	switch {
	case !ok:
		return
	case !owned:
		writeText(w, http.StatusNotFound, "unknown job\n")
		return
	}
	if err := s.completeJob(jobID, exitCode, string(output)); err != nil {
		writeText(w, http.StatusConflict, "job already completed\n")
		return
	}
	writeText(w, http.StatusOK, "ok\n")
}

// brokerRenewJob is a runner renewing the job it runs, as GitHub's runner
// renews its job's lock: a job not renewed for Options.JobLostTimeout is
// lost. A lost or finished job answers 409, an unknown one 404.
func (s *Server) brokerRenewJob(w http.ResponseWriter, r *http.Request) {
	jobID, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		writeText(w, http.StatusNotFound, "unknown job\n")
		return
	}
	s.mu.Lock()
	runner, ok := s.brokerRunner(w, r)
	job := s.jobs[jobID]
	owned := ok && job != nil && runner != nil && job.RunnerID == runner.ID
	running := owned && job.State != JobCompleted
	if running {
		job.renewed = time.Now()
	}
	s.mu.Unlock()
	switch {
	case !ok:
	case !owned:
		writeText(w, http.StatusNotFound, "unknown job\n")
	case !running:
		writeText(w, http.StatusConflict, "job already completed\n")
	default:
		writeText(w, http.StatusOK, "ok\n")
	}
}

// brokerRegister is config.sh registering a runner with a registration
// token; the answer is an encoded JIT config holding the runner's files.
func (s *Server) brokerRegister(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		writeText(w, http.StatusBadRequest, "cannot parse form\n")
		return
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	target, err := url.Parse(r.PostForm.Get("url"))
	if err != nil {
		writeText(w, http.StatusBadRequest, "invalid url\n")
		return
	}
	scope := strings.Trim(target.Path, "/")
	name := r.PostForm.Get("name")
	var labels []string
	for _, label := range strings.Split(r.PostForm.Get("labels"), ",") {
		if label = strings.TrimSpace(label); label != "" {
			labels = append(labels, label)
		}
	}

	s.mu.Lock()
	reg, known := s.registrationTokens[token]
	var (
		status  int
		created Runner
		secret  string
	)
	switch {
	case scheme != "RemoteAuth" || !known || time.Now().After(reg.expires) || reg.scope != scope:
		status = http.StatusNotFound
	case name == "":
		status = http.StatusBadRequest
	case s.nameTaken(scope, name):
		status = http.StatusConflict
	default:
		runner := s.createRunner(scope, RunnerSpec{Name: name, Labels: labels, Ephemeral: r.PostForm.Get("ephemeral") == "true"})
		created, secret = runner.snapshot(), runner.secret
	}
	s.mu.Unlock()
	switch status {
	case http.StatusNotFound:
		writeText(w, status, "Not Found\n")
	case http.StatusBadRequest:
		writeText(w, status, "missing runner name\n")
	case http.StatusConflict:
		writeText(w, status, "A runner exists with the same name\n")
	default:
		workFolder := r.PostForm.Get("work")
		if workFolder == "" {
			workFolder = "_work"
		}
		writeText(w, http.StatusOK, encodeJITConfig(s.runnerURL(r), created, secret, workFolder))
	}
}

// brokerRemove is "config.sh remove": the runner deregisters itself.
func (s *Server) brokerRemove(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	runner, ok := s.brokerRunner(w, r)
	busy := ok && runner != nil && runner.Busy
	if ok && runner != nil && !busy {
		s.removeRunner(runner)
	}
	s.mu.Unlock()
	switch {
	case !ok:
	case busy:
		writeText(w, http.StatusUnprocessableEntity, "runner is still running a job\n")
	default:
		writeText(w, http.StatusOK, "ok\n")
	}
}
