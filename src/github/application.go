package github

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	gh "github.com/google/go-github/v62/github"
)

// RunnerApplication is a verified actions/runner tarball on local disk.
type RunnerApplication struct {
	// Version is taken from the file name, e.g. "2.336.0" (empty if the
	// name does not carry one).
	Version  string
	Filename string
	// Path is the cached tarball, whose SHA-256 matched GitHub's.
	Path   string
	SHA256 string
	// FromCache is true when the cached file was reused, not downloaded.
	FromCache bool
	// URL, DownloadToken and Arch are where GitHub lists it, for an image
	// build that downloads it again elsewhere (OpenStack's builder).
	// DownloadToken is GitHub's temporary token for URL ("" for none): a
	// secret.
	URL           string
	DownloadToken string
	Arch          string
}

// HostArchitecture maps runtime.GOARCH to GitHub's runner architecture name.
func HostArchitecture() (string, error) {
	return runnerArchitecture(runtime.GOARCH)
}

func runnerArchitecture(goarch string) (string, error) {
	switch goarch {
	case "amd64":
		return "x64", nil
	case "arm64":
		return "arm64", nil
	}
	return "", fmt.Errorf("cannot run GitHub runners on architecture %q: only amd64 (x64) and arm64 are supported", goarch)
}

var runnerVersionPattern = regexp.MustCompile(`-(\d+\.\d+\.\d+)\.tar\.gz$`)

// DownloadRunnerApplication makes sure the latest linux runner application
// for arch ("x64" or "arm64"; empty means this host's) is in cacheDir,
// verified against GitHub's sha256_checksum, and returns it. A cached file
// of that name is re-verified and reused; otherwise it is streamed to a
// temporary file, verified, and renamed into place. A missing or wrong
// checksum is refused (ErrChecksum).
func (c *Client) DownloadRunnerApplication(ctx context.Context, cacheDir, arch string) (RunnerApplication, error) {
	const op = "download runner application"
	if arch == "" {
		var err error
		if arch, err = HostArchitecture(); err != nil {
			return RunnerApplication{}, err
		}
	}
	dl, err := c.findRunnerApplication(ctx, arch)
	if err != nil {
		return RunnerApplication{}, err
	}
	filename := dl.GetFilename()
	if filename == "" || filename != filepath.Base(filename) || filename == "." || filename == ".." {
		return RunnerApplication{}, c.errorf(op, ErrRejected, "GitHub lists an unusable file name %q", filename)
	}
	want := strings.ToLower(dl.GetSHA256Checksum())
	if want == "" {
		return RunnerApplication{}, c.errorf(op, ErrChecksum, "GitHub lists no sha256_checksum for %s: refusing an unverifiable download", filename)
	}
	if _, err := hex.DecodeString(want); err != nil || len(want) != sha256.Size*2 {
		return RunnerApplication{}, c.errorf(op, ErrChecksum, "GitHub lists a malformed sha256_checksum for %s", filename)
	}
	app := RunnerApplication{Filename: filename, SHA256: want, Path: filepath.Join(cacheDir, filename),
		URL: dl.GetDownloadURL(), DownloadToken: dl.GetTempDownloadToken(), Arch: arch}
	if m := runnerVersionPattern.FindStringSubmatch(filename); m != nil {
		app.Version = m[1]
	}
	log := c.logger.With(slog.String("file", filename), slog.String("version", app.Version))

	if got, err := fileSHA256(app.Path); err == nil {
		if got == want {
			app.FromCache = true
			log.Debug("Reusing cached runner application")
			return app, nil
		}
		log.Warn("Cached runner application has the wrong checksum: downloading it again", slog.String("sha256", got))
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return RunnerApplication{}, fmt.Errorf("cannot create runner application cache: %w", err)
	}
	if err := c.downloadVerified(ctx, dl, app.Path, want); err != nil {
		return RunnerApplication{}, err
	}
	log.Info("Downloaded and verified runner application")
	return app, nil
}

func (c *Client) findRunnerApplication(ctx context.Context, arch string) (*gh.RunnerApplicationDownload, error) {
	var downloads []*gh.RunnerApplicationDownload
	err := c.call(ctx, "list runner applications", func(ctx context.Context) (*gh.Response, error) {
		var resp *gh.Response
		var err error
		if c.scope.IsOrg() {
			downloads, resp, err = c.api.Actions.ListOrganizationRunnerApplicationDownloads(ctx, c.scope.Owner)
		} else {
			downloads, resp, err = c.api.Actions.ListRunnerApplicationDownloads(ctx, c.scope.Owner, c.scope.Repo)
		}
		return resp, err
	})
	if err != nil {
		return nil, err
	}
	for _, d := range downloads {
		if d.GetOS() == "linux" && d.GetArchitecture() == arch {
			return d, nil
		}
	}
	return nil, c.errorf("list runner applications", ErrNoRunnerApplication, "GitHub lists no runner for linux/%s", arch)
}

// downloadVerified streams the tarball into a temporary file beside dest,
// retrying 5xx and dropped connections, and renames it into place only if
// its SHA-256 is want.
func (c *Client) downloadVerified(ctx context.Context, dl *gh.RunnerApplicationDownload, dest, want string) error {
	const op = "download runner application"
	ctx, cancel := context.WithTimeout(ctx, c.downloadTimeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		err := c.downloadOnce(ctx, dl, dest, want)
		var ghErr *Error
		if err == nil || !errors.As(err, &ghErr) || ghErr.Kind != ErrUnavailable || attempt >= c.maxAttempts {
			if ghErr != nil {
				ghErr.Attempts = attempt
				c.finish(ghErr)
			}
			return err
		}
		delay := c.backoff(attempt)
		c.logger.Warn("Runner application download failed, retrying",
			slog.String("detail", ghErr.Detail), slog.Int("attempt", attempt), slog.Duration("delay", delay))
		select {
		case <-ctx.Done():
			e := c.contextError(ctx, op)
			c.finish(e)
			return e
		case <-time.After(delay):
		}
	}
}

func (c *Client) downloadOnce(ctx context.Context, dl *gh.RunnerApplicationDownload, dest, want string) error {
	const op = "download runner application"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, dl.GetDownloadURL(), nil)
	if err != nil {
		return c.errorf(op, ErrRejected, "GitHub lists an unusable download URL")
	}
	// The download client carries no API credentials: the URL usually
	// points at a release host. GitHub supplies a short-lived token when one
	// is needed.
	if token := dl.GetTempDownloadToken(); token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.download.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return c.contextError(ctx, op)
		}
		return c.errorf(op, ErrUnavailable, "%v", redactURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		kind := ErrRejected
		if resp.StatusCode >= 500 {
			kind = ErrUnavailable
		}
		e := c.errorf(op, kind, "%s answered %s", urlWithoutQuery(resp.Request.URL), resp.Status)
		e.StatusCode = resp.StatusCode
		return e
	}

	tmp, err := os.CreateTemp(filepath.Dir(dest), ".download-*")
	if err != nil {
		return fmt.Errorf("cannot create temporary file for runner application: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()

	hash := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, hash), resp.Body); err != nil {
		if ctx.Err() != nil {
			return c.contextError(ctx, op)
		}
		return c.errorf(op, ErrUnavailable, "download interrupted: %v", err)
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != want {
		return c.errorf(op, ErrChecksum, "%s has sha256 %s, GitHub lists %s", filepath.Base(dest), got, want)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cannot write runner application: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write runner application: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("cannot write runner application: %w", err)
	}
	if err := os.Rename(tmp.Name(), dest); err != nil {
		return fmt.Errorf("cannot move runner application into the cache: %w", err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(hash.Sum(nil)), nil
}

// redactURLError drops the query string from a *url.Error's URL: release
// downloads redirect to URLs signed in their query.
func redactURLError(err error) error {
	var uErr *url.Error
	if errors.As(err, &uErr) {
		if i := strings.IndexByte(uErr.URL, '?'); i >= 0 {
			uErr.URL = uErr.URL[:i]
		}
	}
	return err
}

func urlWithoutQuery(u *url.URL) string {
	stripped := *u
	stripped.RawQuery = ""
	stripped.User = nil
	return stripped.String()
}
