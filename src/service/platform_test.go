package service

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/config"

	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// After a path change, the platform asks about a runner in the path it was
// registered in, through the real client against the fake GitHub: GitHub's
// answer there decides, and a 404 counts as gone only where the
// credentials can read that path at all: the path's own remembered ones,
// else today's.
func TestRemoveAsksInTheRunnersOwnScope(t *testing.T) {
	const oldRepo, newRepo, token = "canonical/old-runners", "canonical/runners", "ghp_scopetest"
	const oldToken = "ghp_oldpathtest" // reaches the organisation
	tests := []struct {
		name      string
		scope     string // the token's reach
		remember  string // the old path's remembered token, if any
		busy      bool
		otherAPI  bool
		wantErr   error // nil: removed
		wantGone  bool
		wantNoNil bool // some error other than busy
	}{
		{name: "idle in the old path: removed there", scope: "canonical", wantGone: true},
		{name: "busy in the old path: kept", scope: "canonical", busy: true, wantErr: manager.ErrBusy},
		{name: "old path out of the token's reach: not proof of gone", scope: newRepo, wantNoNil: true},
		{name: "registered at another API: never asked", scope: "canonical", otherAPI: true, wantNoNil: true},
		{name: "old path out of today's reach: its own token", scope: newRepo, remember: oldToken, wantGone: true},
		{name: "its own token revoked since: today's", scope: "canonical", remember: "ghp_revoked", wantGone: true},
		{name: "neither reaches it: not proof of gone", scope: newRepo, remember: "ghp_revoked", wantNoNil: true},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			fake := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{{Value: token, Scope: test.scope}, {Value: oldToken, Scope: "canonical"}}})
			r, err := fake.AddRunner(oldRepo, fakegithub.RunnerSpec{Name: managertest.Identity.NewName(), Online: true, Ephemeral: true})
			if err != nil {
				t.Fatal(err)
			}
			if test.busy {
				if _, err := fake.AssignJob(r.ID, fakegithub.JobSpec{}); err != nil {
					t.Fatal(err)
				}
			}
			cfg := github.Config{Path: newRepo, BaseURL: fake.URL(), Token: token, Logger: discardLog()}
			client, err := github.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := newPlatform(client, managertest.Identity, runner.NewScope(fake.URL(), newRepo), nil)
			p.current = cfg
			old := runner.NewScope(fake.URL(), oldRepo)
			if test.otherAPI {
				old = runner.NewScope("https://ghe.example.com/api/v3", oldRepo)
			}
			if test.remember != "" {
				c := cfg
				c.Token = test.remember
				if err := p.remembered.remember(old, c); err != nil {
					t.Fatal(err)
				}
			}
			err = p.Remove(t.Context(), old, r.ID)
			switch {
			case test.wantErr != nil && !errors.Is(err, test.wantErr):
				t.Errorf("err = %v, want %v", err, test.wantErr)
			case test.wantNoNil && (err == nil || errors.Is(err, manager.ErrBusy)):
				t.Errorf("err = %v, want an error that keeps the instance", err)
			case test.wantErr == nil && !test.wantNoNil && err != nil:
				t.Errorf("err = %v", err)
			}
			_, present := fake.Runner(r.ID)
			if present == test.wantGone {
				t.Errorf("runner present at GitHub: %v, want %v", present, !test.wantGone)
			}
		})
	}
}

// scopeBed is one unit's service started, and restarted, with different
// GitHub settings against one cloud and one state directory, as the charm
// restarts it after a change of path, API URL or credentials.
type scopeBed struct {
	t     *testing.T
	dir   string
	cloud *managertest.Cloud
	logs  *lockedBuffer
	now   time.Time // a minute later every cycle
}

func newScopeBed(t *testing.T) *scopeBed {
	b := &scopeBed{t: t, dir: t.TempDir(), cloud: managertest.NewCloud(), logs: &lockedBuffer{}, now: time.Now()}
	b.cloud.Now = func() time.Time { return b.now }
	return b
}

// start starts the service's platform and engine as Run does, for
// fake's API, path and token.
func (b *scopeBed) start(fake *fakegithub.Server, path, token string, target int) (*manager.Engine, *platform) {
	b.t.Helper()
	log := slog.New(slog.NewTextHandler(b.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := GitHubConfig(&config.File{GitHub: config.GitHub{Path: path, APIURL: fake.URL(), Token: token}}, log)
	client, err := github.New(cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	scope := runner.NewScope(fake.URL(), path)
	p := newPlatform(client, managertest.Identity, scope, nil)
	if p.remembered, err = openScopes(filepath.Join(b.dir, scopesFile), log); err != nil {
		b.t.Fatal(err)
	}
	p.current = cfg
	if err := p.remembered.remember(scope, cfg); err != nil {
		b.t.Fatal(err)
	}
	e := manager.New(b.cloud, p, manager.Settings{Identity: managertest.Identity, Scope: scope, Target: target}, log)
	return e.WithClock(func() time.Time { return b.now }), p
}

func (b *scopeBed) run(e *manager.Engine, mode manager.Mode) manager.Outcome {
	b.t.Helper()
	b.now = b.now.Add(time.Minute)
	out, err := e.Run(b.t.Context(), mode)
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// file is the state directory's scopes file, which must be private.
func (b *scopeBed) file() string {
	b.t.Helper()
	path := filepath.Join(b.dir, scopesFile)
	info, err := os.Stat(path)
	if err != nil {
		b.t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		b.t.Errorf("%s has mode %v, want 0600", path, info.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		b.t.Fatal(err)
	}
	return string(data)
}

// assertNeverLogged: no secret in anything the service logged.
func (b *scopeBed) assertNeverLogged(secrets ...string) {
	b.t.Helper()
	for _, s := range secrets {
		if strings.Contains(b.logs.String(), s) {
			b.t.Errorf("a token was logged")
		}
	}
}

// deletions are the DELETEs fake answered: "token status" each.
func deletions(fake *fakegithub.Server, id int64) []string {
	var out []string
	for _, d := range fake.Deletions() {
		if d.RunnerID == id {
			out = append(out, fmt.Sprintf("%s %d", d.Token, d.Status))
		}
	}
	return out
}

// runnerOf is the id of the instance's runner, and sets its state at fake.
func runnerOf(t *testing.T, c *managertest.Cloud, fake *fakegithub.Server, name string, busy bool) int64 {
	t.Helper()
	inst, ok := c.Get(name)
	if !ok {
		t.Fatalf("no instance %s", name)
	}
	if err := fake.SetRunnerStatus(inst.RunnerID, true); err != nil {
		t.Fatal(err)
	}
	if err := fake.SetRunnerBusy(inst.RunnerID, busy); err != nil {
		t.Fatal(err)
	}
	return inst.RunnerID
}

// §4 (issue 11): after github-api-url and the token change, the old API's
// idle runner is removed at once and its busy one once its job is over,
// both with the old API's own token, remembered across restarts; the new
// API never sees the old token, nor the old the new; and once nothing is
// left there, the old token is forgotten.
func TestOldAPIRunnersGoWithTheirOwnCredentials(t *testing.T) {
	const oldToken, newToken = "ghp_OLD_API_TOKEN_0123456789", "ghp_NEW_API_TOKEN_0123456789"
	const repo = "canonical/runners"
	oldGH := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{{Value: oldToken, Scope: "canonical"}}})
	newGH := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{{Value: newToken, Scope: "canonical"}}})
	b := newScopeBed(t)
	old, _ := b.start(oldGH, repo, oldToken, 2)
	b.run(old, manager.Reconcile)
	names := b.cloud.Names()
	if len(names) != 2 {
		t.Fatalf("instances %v, want 2", names)
	}
	busyID, idleID := runnerOf(t, b.cloud, oldGH, names[0], true), runnerOf(t, b.cloud, oldGH, names[1], false)
	busy, idle := names[0], names[1]

	engine, _ := b.start(newGH, repo, newToken, 1) // config-changed: a new API and token
	b.run(engine, manager.Reconcile)
	if _, ok := b.cloud.Get(idle); ok {
		t.Error("the old API's idle runner's instance is still there")
	}
	if _, ok := oldGH.Runner(idleID); ok {
		t.Error("the old API's idle runner's record is still there")
	}
	if _, ok := b.cloud.Get(busy); !ok {
		t.Fatal("the old API's busy runner was killed")
	}
	if _, ok := oldGH.Runner(busyID); !ok {
		t.Fatal("GitHub removed a busy runner")
	}

	engine, _ = b.start(newGH, repo, newToken, 1) // a restart in between
	b.run(engine, manager.Reconcile)
	if _, ok := b.cloud.Get(busy); !ok {
		t.Fatal("the old API's busy runner was killed after a restart")
	}
	if err := oldGH.SetRunnerBusy(busyID, false); err != nil { // its job is over
		t.Fatal(err)
	}
	b.run(engine, manager.Reconcile)
	if _, ok := b.cloud.Get(busy); ok {
		t.Error("the finished runner's instance is still there")
	}
	if _, ok := oldGH.Runner(busyID); ok {
		t.Error("the finished runner's record at the old API leaked")
	}
	if got := deletions(oldGH, idleID); !slices.Equal(got, []string{oldToken + " 204"}) {
		t.Errorf("DELETEs of the idle runner at the old API: %v", got)
	}
	if got := deletions(oldGH, busyID); len(got) < 2 || got[0] != oldToken+" 422" || got[len(got)-1] != oldToken+" 204" {
		t.Errorf("DELETEs of the busy runner at the old API: %v", got)
	}
	for _, d := range newGH.Deletions() {
		if d.Token != newToken {
			t.Errorf("the new API was sent another token: %+v", d)
		}
	}
	if strings.Contains(b.file(), oldToken) {
		b.run(engine, manager.Reconcile) // the first snapshot with nothing left at the old API
	}
	if content := b.file(); strings.Contains(content, oldToken) || !strings.Contains(content, newToken) {
		t.Error("the old API's token is still remembered with nothing left there, or today's is not")
	}
	b.assertNeverLogged(oldToken, newToken)
}

// §4: a busy runner in the path the unit has left, killed by flush-busy,
// leaves a record busy until GitHub fails its job; a restarted service
// removes it then, with the old path's token (today's cannot read that
// path), and forgets its tombstone.
func TestFlushBusyInAnOldPathSurvivesARestart(t *testing.T) {
	const oldToken, newToken = "ghp_OLD_PATH_TOKEN_0123456789", "ghp_NEW_PATH_TOKEN_0123456789"
	const oldRepo, newRepo = "canonical/old-runners", "canonical/runners"
	gh := fakegithub.NewTest(t, fakegithub.Options{Tokens: []fakegithub.Token{{Value: oldToken, Scope: "canonical"}, {Value: newToken, Scope: newRepo}}})
	b := newScopeBed(t)
	old, _ := b.start(gh, oldRepo, oldToken, 1)
	b.run(old, manager.Reconcile)
	busy := b.cloud.Names()[0]
	id := runnerOf(t, b.cloud, gh, busy, true)

	engine, _ := b.start(gh, newRepo, newToken, 1)
	b.run(engine, manager.FlushAll)
	if _, ok := b.cloud.Get(busy); ok {
		t.Fatal("flush-busy kept the old path's busy runner")
	}
	if !strings.Contains(b.file(), busy) {
		t.Fatal("no tombstone for the killed runner's record")
	}
	engine, _ = b.start(gh, newRepo, newToken, 1) // restarted
	b.run(engine, manager.Reconcile)
	if _, ok := gh.Runner(id); !ok {
		t.Fatal("GitHub removed a busy runner")
	}
	if err := gh.SetRunnerBusy(id, false); err != nil { // GitHub fails the lost job
		t.Fatal(err)
	}
	b.run(engine, manager.Reconcile)
	if _, ok := gh.Runner(id); ok {
		t.Error("the killed runner's record in the old path leaked")
	}
	if got := deletions(gh, id); len(got) == 0 || got[len(got)-1] != oldToken+" 204" {
		t.Errorf("DELETEs of the killed runner: %v", got)
	}
	b.run(engine, manager.Reconcile)
	if content := b.file(); strings.Contains(content, busy) || strings.Contains(content, oldToken) {
		t.Error("the tombstone, or the old path's token, outlived the record")
	}
	b.assertNeverLogged(oldToken, newToken)
}

// The scopes file is private even if something loosened its mode, and one
// that cannot be read as JSON is started over, not a crash loop.
func TestScopesFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    int // scopes remembered after opening
	}{
		{"private", `{"scopes":[{"api-url":"https://api.github.com","path":"canonical","token":"ghp_x"}]}`, 0o600, 1},
		{"world-readable", `{"scopes":[{"api-url":"https://api.github.com","path":"canonical","token":"ghp_x"}]}`, 0o644, 1},
		{"corrupt", `{"scopes":[`, 0o600, 0},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), scopesFile)
			if err := os.WriteFile(path, []byte(test.content), test.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, test.mode)
			logs := &lockedBuffer{}
			s, err := openScopes(path, slog.New(slog.NewTextHandler(logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
				t.Errorf("mode %v (%v), want 0600", info.Mode().Perm(), err)
			}
			if len(s.state.Scopes) != test.want {
				t.Errorf("%d scopes remembered, want %d", len(s.state.Scopes), test.want)
			}
			if strings.Contains(logs.String(), "ghp_x") || strings.Contains(logs.String(), "scopes\":[") {
				t.Error("the file's content was logged")
			}
		})
	}
}

// lockedBuffer is a log sink for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
