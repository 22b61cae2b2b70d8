package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/runner"
)

// scopesFile is the name, in the state directory, of what the service
// remembers of the scopes it has run in (0600: it holds credentials).
const scopesFile = "scopes.json"

// scopes is what the service remembers across restarts of every scope
// (API URL and path) it has run in: its credentials, for as long as an
// instance or a tombstone of the scope remains, so that a runner
// registered before a change of path, API URL or credentials is removed
// with its own scope's credentials; and the tombstones (manager.Tombstone).
// With no file (tests, benchmarks) it remembers in memory only.
type scopes struct {
	path string // "": in memory only

	mu    sync.Mutex
	state scopesState
}

// scopesState is the file's content.
type scopesState struct {
	Scopes     []rememberedScope     `json:"scopes"`
	Tombstones []rememberedTombstone `json:"tombstones,omitempty"`
}

// rememberedScope is one scope's credentials: a token, or an App.
type rememberedScope struct {
	APIURL string         `json:"api-url"`
	Path   string         `json:"path"`
	Token  string         `json:"token,omitempty"`
	App    *rememberedApp `json:"app,omitempty"`
}

type rememberedApp struct {
	ID             int64  `json:"id"`
	ClientID       string `json:"client-id,omitempty"`
	InstallationID int64  `json:"installation-id"`
	PrivateKey     string `json:"private-key"`
}

type rememberedTombstone struct {
	APIURL   string    `json:"api-url"`
	Path     string    `json:"path"`
	RunnerID int64     `json:"runner-id"`
	Name     string    `json:"name"`
	Since    time.Time `json:"since"`
}

func (r rememberedScope) scope() runner.Scope { return runner.NewScope(r.APIURL, r.Path) }

func (r rememberedTombstone) tombstone() manager.Tombstone {
	return manager.Tombstone{Scope: runner.NewScope(r.APIURL, r.Path), RunnerID: r.RunnerID, Name: r.Name, Since: r.Since}
}

// openScopes reads what was remembered at path, if anything. A file others
// may read is made private first; one that cannot be parsed is replaced at
// the next change (what it held is then forgotten: instances and records
// of other scopes are handled as when nothing was remembered).
func openScopes(path string, log *slog.Logger) (*scopes, error) {
	s := &scopes{path: path}
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	case info.Mode().Perm()&0o077 != 0:
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("cannot make %s private: %w", path, err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, &s.state); err != nil {
		// The error could quote the file, which holds secrets.
		log.Warn("cannot parse the remembered scopes; starting without them", "file", path)
		s.state = scopesState{}
	}
	return s, nil
}

// remember keeps c's credentials as scope's, replacing any remembered.
func (s *scopes) remember(scope runner.Scope, c github.Config) error {
	r := rememberedScope{APIURL: scope.APIURL, Path: scope.Path, Token: c.Token}
	if c.App != nil {
		r.App = &rememberedApp{ID: c.App.AppID, ClientID: c.App.ClientID, InstallationID: c.App.InstallationID, PrivateKey: string(c.App.PrivateKeyPEM)}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.state.Scopes, func(r rememberedScope) bool { return r.scope() == scope })
	switch {
	case i < 0:
		s.state.Scopes = append(s.state.Scopes, r)
	case equalCredentials(s.state.Scopes[i], r):
		return nil
	default:
		s.state.Scopes[i] = r
	}
	return s.save()
}

func equalCredentials(a, b rememberedScope) bool {
	if (a.App == nil) != (b.App == nil) || (a.App != nil && *a.App != *b.App) {
		return false
	}
	return a.APIURL == b.APIURL && a.Path == b.Path && a.Token == b.Token
}

// credentials returns base with scope's remembered credentials, if any.
func (s *scopes) credentials(scope runner.Scope, base github.Config) (github.Config, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.state.Scopes, func(r rememberedScope) bool { return r.scope() == scope })
	if i < 0 {
		return github.Config{}, false
	}
	r := s.state.Scopes[i]
	c := base
	c.BaseURL, c.Path, c.Token, c.App, c.RunnerGroup = r.APIURL, r.Path, r.Token, nil, ""
	if r.App != nil {
		c.App = &github.AppCredentials{AppID: r.App.ID, ClientID: r.App.ClientID, InstallationID: r.App.InstallationID, PrivateKeyPEM: []byte(r.App.PrivateKey)}
	}
	return c, true
}

// retain forgets the credentials of every scope not in use.
func (s *scopes) retain(inUse []runner.Scope) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.state.Scopes)
	s.state.Scopes = slices.DeleteFunc(s.state.Scopes, func(r rememberedScope) bool { return !slices.Contains(inUse, r.scope()) })
	if len(s.state.Scopes) == n {
		return nil
	}
	return s.save()
}

// tombstones lists the tombstones, oldest first.
func (s *scopes) tombstones() []manager.Tombstone {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]manager.Tombstone, len(s.state.Tombstones))
	for i, t := range s.state.Tombstones {
		out[i] = t.tombstone()
	}
	return out
}

// bury keeps a tombstone, replacing one of the same scope and runner id.
func (s *scopes) bury(t manager.Tombstone) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := rememberedTombstone{APIURL: t.Scope.APIURL, Path: t.Scope.Path, RunnerID: t.RunnerID, Name: t.Name, Since: t.Since.UTC()}
	if i := s.tombstoneIndex(t.Scope, t.RunnerID); i >= 0 {
		s.state.Tombstones[i] = r
	} else {
		s.state.Tombstones = append(s.state.Tombstones, r)
	}
	return s.save()
}

// forget drops scope's tombstone of runner id, if there is one.
func (s *scopes) forget(scope runner.Scope, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.tombstoneIndex(scope, id)
	if i < 0 {
		return nil
	}
	s.state.Tombstones = slices.Delete(s.state.Tombstones, i, i+1)
	return s.save()
}

func (s *scopes) tombstoneIndex(scope runner.Scope, id int64) int {
	return slices.IndexFunc(s.state.Tombstones, func(t rememberedTombstone) bool {
		return t.RunnerID == id && runner.NewScope(t.APIURL, t.Path) == scope
	})
}

// save writes the state, atomically, readable by its owner only. The
// caller holds mu.
func (s *scopes) save() error {
	if s.path == "" {
		return nil
	}
	data, err := json.Marshal(s.state)
	if err != nil {
		return fmt.Errorf("cannot encode the remembered scopes: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, "."+scopesFile+".*") // mode 0600
	if err != nil {
		return fmt.Errorf("cannot save the remembered scopes in %s: %w", dir, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, there is nothing to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("cannot save the remembered scopes to %s: %w", s.path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename survives a power cut
		d.Close()
	}
	return nil
}
