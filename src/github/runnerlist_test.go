package github

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"

	gh "github.com/google/go-github/v62/github"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// goGitHubPage is what ListRunners made of a page before runnerPage: go-github's
// own decoding (Client.Do into ListRunners' *Runners), then runnerFromAPI.
func goGitHubPage(body io.Reader, prefix string) (runners []Runner, err error) {
	page := &gh.Runners{}
	if err := json.NewDecoder(body).Decode(&page); err != nil && err != io.EOF {
		return nil, err
	}
	// Beyond go-github: what is no page of runners is an error, not an
	// empty list (or a nil dereference).
	if page == nil || page.Runners == nil || slices.Contains(page.Runners, nil) {
		return nil, errNotAPage
	}
	for _, r := range page.Runners {
		if strings.HasPrefix(r.GetName(), prefix) {
			runners = append(runners, runnerFromAPI(r))
		}
	}
	return runners, nil
}

// sameAsGoGitHub checks that runnerPage reads body as go-github did:
// the same runners, the same error, the same panic.
func sameAsGoGitHub(t *testing.T, body []byte, prefix string) {
	t.Helper()
	type result struct {
		runners  []Runner
		err      string
		panicked bool
	}
	run := func(read func() ([]Runner, error)) (r result) {
		defer func() { r.panicked = recover() != nil }()
		runners, err := read()
		r.runners = runners
		if err != nil {
			r.err = err.Error()
		}
		return r
	}
	want := run(func() ([]Runner, error) { return goGitHubPage(bytes.NewReader(body), prefix) })
	got := run(func() ([]Runner, error) { return newRunnerPage(prefix).read(bytes.NewReader(body), nil) })
	if len(want.runners) == 0 && len(got.runners) == 0 {
		want.runners, got.runners = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("page %q, prefix %q:\n got %+v\nwant %+v", body, prefix, got, want)
	}
}

// A page as GitHub and the fake send it.
const githubPage = `{"total_count":3,"runners":[` +
	`{"id":23,"name":"unit-0-a","os":"linux","status":"online","busy":true,"ephemeral":true,"runner_group_id":1,"labels":[{"id":1,"name":"self-hosted","type":"read-only"},{"id":2,"name":"Linux","type":"read-only"}],"version":null},` +
	`{"id":24,"name":"other-b","os":"linux","status":"offline","busy":false,"labels":[]},` +
	"{\"id\":25,\"name\":\"unit-0-ü\",\"os\":\"linux\",\"status\":\"offline\",\"busy\":false,\"labels\":[{\"id\":3,\"name\":\"large\",\"type\":\"custom\"}],\"x\":{\"a\":[1,-2.5e+3,\"\\u00e9\\n\",true,false,null,{}]}}" +
	"]}\n"

var runnerPages = []string{
	githubPage,
	`{"runners":[]}`, `{}`, ``, " \n", `null`, `[]`, `{"runners":null}`, `{"runners":[null]}`,
	`{"runners":[{"id":1,"name":"unit-0-a"}]}`, // no labels: an empty slice, not nil
	`{"runners":[{"id":1,"name":"unit-0-a","labels":null}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a","labels":[null]}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a","labels":[{"id":1}]}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a","labels":[{"id":1,"Name":"x"}]}]}`,
	`{"runners":[{"ID":1,"name":"unit-0-a"}]}`, `{"runners":[{"id":1,"NAME":"unit-0-a"}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a","ſtatus":"online"}]}`, // folds to status
	`{"runners":[{"id":1,"name":"unit-0-a","name":"unit-0-b"}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a"}],"runners":[{"name":"unit-0-b"}]}`,
	`{"Runners":[{"id":1,"name":"unit-0-a"}]}`, `{"total_count":"3","runners":[]}`,
	`{"runners":[{"id":1.0,"name":"unit-0-a"}]}`, `{"runners":[{"id":1e2,"name":"unit-0-a"}]}`,
	`{"runners":[{"id":01,"name":"unit-0-a"}]}`, `{"runners":[{"id":-0,"name":"unit-0-a"}]}`,
	`{"runners":[{"id":9223372036854775807,"name":"unit-0-a"}]}`,
	`{"runners":[{"id":9223372036854775808,"name":"unit-0-a"}]}`,
	`{"runners":[{"id":-9223372036854775808,"name":"unit-0-a"}]}`,
	`{"runners":[{"id":"1","name":"unit-0-a"}]}`, `{"runners":[{"id":null,"name":"unit-0-a"}]}`,
	`{"runners":[{"id":1,"name":"unit-0-\u0061"}]}`, `{"runners":[{"id":1,"name":"unit-0-a\"b"}]}`,
	"{\"runners\":[{\"id\":1,\"name\":\"unit-0-\xff\"}]}", "{\"runners\":[{\"id\":1,\"name\":\"unit-0-\ta\"}]}",
	`{"runners":[{"id":1,"name":"unit-0-a","os":7}]}`, `{"runners":[{"id":1,"name":"unit-0-a","busy":"true"}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a","busy":truex}]}`, `{"runners":[{"id":1,"name":"unit-0-a","status":"away"}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a"},]}`, `{"runners":[{"id":1,"name":"unit-0-a"}]`, `{"runners":[{"id":1,"name":"unit-0-a"}]} trailing`,
	`{"runners":[{"id":1,"name":"unit-0-a","x":"\q"}]}`, `{"runners":[{"id":1,"name":"unit-0-a","x":[1,]}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a","x":-}]}`, `{"runners":[{"id":1,"name":"unit-0-a","x":1.}]}`,
	`{"runners":[{"id":1,"name":"unit-0-a","x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}]}`,
	"\xef\xbb\xbf{\"runners\":[]}",
}

func TestRunnerPageDecodesAsGoGitHub(t *testing.T) {
	for _, page := range runnerPages {
		for _, prefix := range []string{"", "unit-0-", "none"} {
			sameAsGoGitHub(t, []byte(page), prefix)
		}
	}
}

// GitHub's pages take the fast path: else the cost is go-github's again.
func TestRunnerPageFastPath(t *testing.T) {
	p := newRunnerPage("unit-0-")
	if !p.parse([]byte(githubPage)) {
		t.Fatalf("a page as GitHub sends it went to go-github's decoding")
	}
	want := []Runner{
		{ID: 23, Name: "unit-0-a", Status: RunnerOnline, Busy: true, Labels: []string{"self-hosted", "Linux"}},
		{ID: 25, Name: "unit-0-ü", Status: RunnerOffline, Labels: []string{"large"}},
	}
	if !reflect.DeepEqual(p.found, want) {
		t.Fatalf("runners = %+v, want %+v", p.found, want)
	}
}

// GitHub's own example of the list (its API description, which the fake
// is checked against) takes the fast path, compact or indented, and reads
// as go-github reads it.
func TestRunnerPageGitHubExample(t *testing.T) {
	data, err := os.ReadFile("../../tests/fakegithub/testdata/rest-runners.json")
	if err != nil {
		t.Fatal(err)
	}
	var description struct {
		Components struct {
			Examples map[string]struct {
				Value json.RawMessage `json:"value"`
			} `json:"examples"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &description); err != nil {
		t.Fatal(err)
	}
	example := description.Components.Examples["runner-paginated"].Value
	if len(example) == 0 {
		t.Fatal("no runner-paginated example in the API description")
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, example, "", "\t"); err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, example); err != nil {
		t.Fatal(err)
	}
	for _, page := range [][]byte{compact.Bytes(), indented.Bytes()} {
		if !newRunnerPage("").parse(page) {
			t.Errorf("GitHub's example went to go-github's decoding:\n%s", page)
		}
		sameAsGoGitHub(t, page, "")
		sameAsGoGitHub(t, page, "mac")
	}
}

// A body that fails part way fails as go-github's decoding of it did, and
// one whose value was whole before the failure decodes.
func TestRunnerPageReadError(t *testing.T) {
	broken := errors.New("connection reset")
	for _, tt := range []struct {
		body    string
		wantErr bool
	}{
		{githubPage[:200], true},
		{githubPage, false},
	} {
		body := func() io.Reader { return io.MultiReader(strings.NewReader(tt.body), iotest.ErrReader(broken)) }
		want, wantErr := goGitHubPage(body(), "unit-0-")
		got, err := newRunnerPage("unit-0-").read(body(), nil)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || (err != nil) != tt.wantErr || !reflect.DeepEqual(got, want) {
			t.Errorf("body of %d bytes: got %v, %v; want %v, %v", len(tt.body), got, err, want, wantErr)
		}
	}
}

// Every page is read to its end, so the pages of one list share one
// connection (go-github's decoding stopped at the end of the value and
// closed the body before the end of a chunked answer, which cost a new
// connection, and over TLS a handshake, per page).
// A 200 answer that is no page of runners (a proxy's empty body, null)
// fails the list, so a cycle never takes it for "no runners", and never
// panics the manager.
func TestListRunnersRefusesWhatIsNoPage(t *testing.T) {
	for _, body := range []string{`null`, ``, `{}`, `{"total_count":1}`, `{"runners":null}`, `{"runners":[null]}`} {
		t.Run(body, func(t *testing.T) {
			srv := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, http.StatusOK, body)
			})
			c := mustNew(t, testConfig("canonical", srv.apiURL(), &syncBuffer{}))
			for _, prefix := range []string{"", "unit-0-"} {
				runners, err := c.ListRunners(context.Background(), prefix)
				if err == nil {
					t.Errorf("prefix %q: %d runners and no error", prefix, len(runners))
				}
			}
		})
	}
}

func TestListRunnersReusesTheConnection(t *testing.T) {
	fake, err := fakegithub.New(fakegithub.Options{Tokens: []fakegithub.Token{{Value: testToken}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(fake)
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	if _, err := fake.AddRunners("canonical/repo", 250, fakegithub.RunnerSpec{Name: "unit-0"}); err != nil {
		t.Fatal(err)
	}
	c := mustNew(t, testConfig("canonical/repo", srv.URL, &syncBuffer{}))
	for range 2 {
		runners, err := c.ListRunners(context.Background(), "unit-0-")
		if err != nil || len(runners) != 250 {
			t.Fatalf("ListRunners: %d runners, %v", len(runners), err)
		}
	}
	if got := fake.Count(fakegithub.ListRepoRunners); got != 6 {
		t.Errorf("list requests = %d, want 6", got)
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("6 pages took %d connections, want 1", got)
	}
}

func FuzzRunnerPage(f *testing.F) {
	for _, page := range runnerPages {
		f.Add([]byte(page), "unit-0-")
	}
	f.Fuzz(func(t *testing.T, page []byte, prefix string) {
		sameAsGoGitHub(t, page, prefix)
	})
}

func BenchmarkRunnerPage(b *testing.B) {
	var page bytes.Buffer
	page.WriteString(`{"total_count":10000,"runners":[`)
	for i := range pageSize {
		if i > 0 {
			page.WriteByte(',')
		}
		fmt.Fprintf(&page, `{"id":%d,"runner_group_id":1,"name":"unit-0-%08x","os":"linux","status":"online","busy":false,"ephemeral":true,`+
			`"labels":[{"id":1,"name":"self-hosted","type":"read-only"},{"id":2,"name":"Linux","type":"read-only"},{"id":3,"name":"X64","type":"read-only"}],"version":null}`, i+1, i)
	}
	page.WriteString("]}\n")
	b.Run("go-github", func(b *testing.B) {
		b.SetBytes(int64(page.Len()))
		for b.Loop() {
			if _, err := goGitHubPage(bytes.NewReader(page.Bytes()), "unit-0-"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("runnerPage", func(b *testing.B) {
		b.SetBytes(int64(page.Len()))
		p := newRunnerPage("unit-0-")
		var out []Runner
		for b.Loop() {
			var err error
			if out, err = p.read(bytes.NewReader(page.Bytes()), out[:0]); err != nil || len(out) != pageSize {
				b.Fatal(err, len(out))
			}
		}
	})
}
