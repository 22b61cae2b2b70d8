package github

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// downloadSite lists one linux/x64 and one linux/arm64 runner and serves
// their bytes; checksums can be made wrong or missing per test.
type downloadSite struct {
	*countingServer
	tarball      []byte
	listChecksum func(real string) string // what the listing claims
	downloads    atomic.Int64
	authOnFetch  atomic.Value // Authorization header of the last download
	tempToken    string
}

func newDownloadSite(t *testing.T) *downloadSite {
	t.Helper()
	d := &downloadSite{tarball: []byte("not really a tarball, but bytes with a checksum")}
	d.listChecksum = func(real string) string { return real }
	d.countingServer = newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		sum := sha256.Sum256(d.tarball)
		switch {
		case r.URL.Path == "/api/v3/repos/canonical/repo/actions/runners/downloads":
			var entries []string
			for _, arch := range []string{"x64", "arm64"} {
				name := fmt.Sprintf("actions-runner-linux-%s-2.336.0.tar.gz", arch)
				entries = append(entries, fmt.Sprintf(
					`{"os":"linux","architecture":%q,"download_url":"%s/download/%s","filename":%q,"sha256_checksum":%q,"temp_download_token":%q}`,
					arch, d.URL, name, name, d.listChecksum(hex.EncodeToString(sum[:])), d.tempToken))
			}
			entries = append(entries, `{"os":"osx","architecture":"x64","download_url":"x","filename":"osx.tar.gz","sha256_checksum":"00"}`)
			writeJSON(w, 200, "["+strings.Join(entries, ",")+"]")
		case strings.HasPrefix(r.URL.Path, "/download/"):
			d.downloads.Add(1)
			d.authOnFetch.Store(r.Header.Get("Authorization"))
			w.Write(d.tarball)
		default:
			writeJSON(w, 404, `{"message":"Not Found"}`)
		}
	})
	return d
}

func (d *downloadSite) client(t *testing.T, logs *syncBuffer) *Client {
	return mustNew(t, testConfig("canonical/repo", d.apiURL(), logs))
}

func TestDownloadRunnerApplication(t *testing.T) {
	site := newDownloadSite(t)
	logs := &syncBuffer{}
	c := site.client(t, logs)
	cache := t.TempDir()
	ctx := context.Background()

	app, err := c.DownloadRunnerApplication(ctx, cache, "arm64")
	if err != nil {
		t.Fatalf("DownloadRunnerApplication: %v", err)
	}
	if app.Version != "2.336.0" || app.Filename != "actions-runner-linux-arm64-2.336.0.tar.gz" || app.FromCache {
		t.Errorf("app = %+v", app)
	}
	if got, err := os.ReadFile(app.Path); err != nil || string(got) != string(site.tarball) {
		t.Errorf("cached file = %q, %v; want the tarball", got, err)
	}
	if filepath.Dir(app.Path) != cache {
		t.Errorf("app.Path = %s, want it in %s", app.Path, cache)
	}
	if auth, _ := site.authOnFetch.Load().(string); auth != "" {
		assertNoSecret(t, "download request", auth, testToken)
		t.Errorf("download sent Authorization %q, want none without a temp_download_token", auth)
	}

	// Reuse: verified again, not downloaded again.
	again, err := c.DownloadRunnerApplication(ctx, cache, "arm64")
	if err != nil || !again.FromCache || again.Path != app.Path {
		t.Fatalf("second call = %+v, %v; want the cached file", again, err)
	}
	if site.downloads.Load() != 1 {
		t.Errorf("downloads = %d, want 1", site.downloads.Load())
	}

	// A damaged cache entry is replaced.
	if err := os.WriteFile(app.Path, []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	repaired, err := c.DownloadRunnerApplication(ctx, cache, "arm64")
	if err != nil || repaired.FromCache {
		t.Fatalf("after damage = %+v, %v; want a fresh download", repaired, err)
	}
	if got, _ := os.ReadFile(app.Path); string(got) != string(site.tarball) {
		t.Errorf("repaired file = %q", got)
	}
	if site.downloads.Load() != 2 {
		t.Errorf("downloads = %d, want 2", site.downloads.Load())
	}
	assertNoTempFiles(t, cache)
}

func TestDownloadRunnerApplicationRefusesBadChecksums(t *testing.T) {
	tests := []struct {
		name      string
		claim     func(real string) string
		wantWords string
		wantFetch int64
	}{
		{"missing", func(string) string { return "" }, "no sha256_checksum", 0},
		{"malformed", func(string) string { return "abc" }, "malformed sha256_checksum", 0},
		{"wrong", func(real string) string { return strings.Repeat("0", len(real)) }, "has sha256", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site := newDownloadSite(t)
			site.listChecksum = tt.claim
			c := site.client(t, &syncBuffer{})
			cache := t.TempDir()
			_, err := c.DownloadRunnerApplication(context.Background(), cache, "x64")
			if !errors.Is(err, ErrChecksum) {
				t.Fatalf("error = %v, want ErrChecksum", err)
			}
			if msg := OperatorMessage(err); !strings.Contains(msg, tt.wantWords) || !strings.Contains(msg, "actions-runner-linux-x64-2.336.0.tar.gz") {
				t.Errorf("operator message = %q, want it to name the file and say %q", msg, tt.wantWords)
			}
			if site.downloads.Load() != tt.wantFetch {
				t.Errorf("downloads = %d, want %d", site.downloads.Load(), tt.wantFetch)
			}
			if entries, _ := os.ReadDir(cache); len(entries) != 0 {
				t.Errorf("cache holds %v after a refused download, want nothing", entries)
			}
		})
	}
}

func TestDownloadRunnerApplicationUsesTempDownloadToken(t *testing.T) {
	site := newDownloadSite(t)
	site.tempToken = "TEMPdownloadTOKEN"
	c := site.client(t, &syncBuffer{})
	if _, err := c.DownloadRunnerApplication(context.Background(), t.TempDir(), "x64"); err != nil {
		t.Fatal(err)
	}
	if auth, _ := site.authOnFetch.Load().(string); auth != "Bearer TEMPdownloadTOKEN" {
		t.Errorf("download Authorization = %q, want the temp_download_token", auth)
	}
}

func TestDownloadRunnerApplicationUnknownArchitecture(t *testing.T) {
	site := newDownloadSite(t)
	c := site.client(t, &syncBuffer{})
	_, err := c.DownloadRunnerApplication(context.Background(), t.TempDir(), "arm")
	if !errors.Is(err, ErrNoRunnerApplication) || !strings.Contains(err.Error(), "linux/arm") {
		t.Fatalf("error = %v, want ErrNoRunnerApplication naming linux/arm", err)
	}
}

func TestDownloadRunnerApplicationHostArchitecture(t *testing.T) {
	want, err := HostArchitecture()
	if err != nil {
		t.Skipf("host architecture unsupported: %v", err)
	}
	site := newDownloadSite(t)
	app, err := site.client(t, &syncBuffer{}).DownloadRunnerApplication(context.Background(), t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(app.Filename, "-linux-"+want+"-") {
		t.Errorf("downloaded %s, want the host's %s", app.Filename, want)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".download-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
