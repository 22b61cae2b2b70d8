package fakegithub

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed runnerapp
var runnerApp embed.FS

// RunnerArchitectures are the runner application builds the downloads
// endpoint lists, as GitHub names them.
var RunnerArchitectures = []string{"x64", "arm64"}

// ChecksumMode says what sha256_checksum the downloads endpoint sends, for
// tests of a manager's verification.
type ChecksumMode int

const (
	// ChecksumCorrect sends the real SHA-256 of the served tarball.
	ChecksumCorrect ChecksumMode = iota
	// ChecksumWrong sends the checksum of something else.
	ChecksumWrong
	// ChecksumMissing leaves sha256_checksum out, as older GitHub did.
	ChecksumMissing
)

// RunnerFilename is the file name GitHub gives the Linux runner
// application: "actions-runner-linux-<arch>-<version>.tar.gz".
func RunnerFilename(version, arch string) string {
	return fmt.Sprintf("actions-runner-linux-%s-%s.tar.gz", arch, version)
}

// tarballTime is the modification time of every entry, so that a tarball
// depends on its version and architecture alone.
var tarballTime = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// RunnerTarball builds the fake runner application for a version and an
// architecture ("x64" or "arm64"): a tar.gz laid out like GitHub's, with
// entries under "./" (run.sh, config.sh, bin/Runner.Listener). The same
// arguments always give the same bytes.
func RunnerTarball(version, arch string) ([]byte, error) {
	if !validArch(arch) {
		return nil, fmt.Errorf("cannot build runner tarball: unknown architecture %q", arch)
	}
	if version == "" || strings.ContainsAny(version, "/ ") {
		return nil, fmt.Errorf("cannot build runner tarball: invalid version %q", version)
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, fmt.Errorf("cannot build runner tarball: %w", err)
	}
	tw := tar.NewWriter(zw)
	err = fs.WalkDir(runnerApp, "runnerapp", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return addTarEntry(tw, name, d, version, arch)
	})
	if err != nil {
		return nil, fmt.Errorf("cannot build runner tarball: %w", err)
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("cannot build runner tarball: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("cannot build runner tarball: %w", err)
	}
	return buf.Bytes(), nil
}

// addTarEntry writes one file or directory of the embedded application,
// renamed from "runnerapp/x" to "./x" as GitHub's tar -C layout . does.
func addTarEntry(tw *tar.Writer, name string, d fs.DirEntry, version, arch string) error {
	entryName := "./" + strings.TrimPrefix(strings.TrimPrefix(name, "runnerapp"), "/")
	header := &tar.Header{Name: entryName, ModTime: tarballTime, Format: tar.FormatUSTAR}
	if d.IsDir() {
		if entryName != "./" {
			header.Name += "/"
		}
		header.Typeflag = tar.TypeDir
		header.Mode = 0o755
		return tw.WriteHeader(header)
	}
	content, err := runnerApp.ReadFile(name)
	if err != nil {
		return err
	}
	content = bytes.ReplaceAll(content, []byte("@VERSION@"), []byte(version))
	content = bytes.ReplaceAll(content, []byte("@ARCH@"), []byte(arch))
	header.Typeflag = tar.TypeReg
	header.Mode = 0o755 // every file is a script
	header.Size = int64(len(content))
	if err := tw.WriteHeader(header); err != nil {
		return err
	}
	_, err = tw.Write(content)
	return err
}

func validArch(arch string) bool {
	for _, a := range RunnerArchitectures {
		if a == arch {
			return true
		}
	}
	return false
}

// downloads is the runner application on offer. Guarded by Server.mu.
type downloads struct {
	version  string
	checksum ChecksumMode
	tarballs map[string][]byte // by architecture
	sums     map[string]string // hex SHA-256 by architecture
}

func (d *downloads) setVersion(version string) error {
	tarballs := make(map[string][]byte)
	sums := make(map[string]string)
	for _, arch := range RunnerArchitectures {
		data, err := RunnerTarball(version, arch)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		tarballs[arch], sums[arch] = data, hex.EncodeToString(sum[:])
	}
	d.version, d.tarballs, d.sums = version, tarballs, sums
	return nil
}

// apiRunnerApplication is the "runner-application" schema.
type apiRunnerApplication struct {
	OS             string `json:"os"`
	Architecture   string `json:"architecture"`
	DownloadURL    string `json:"download_url"`
	Filename       string `json:"filename"`
	SHA256Checksum string `json:"sha256_checksum,omitempty"`
}

func (d *downloads) applications(baseURL string) []apiRunnerApplication {
	apps := make([]apiRunnerApplication, 0, len(RunnerArchitectures))
	for _, arch := range RunnerArchitectures {
		filename := RunnerFilename(d.version, arch)
		app := apiRunnerApplication{
			OS:           "linux",
			Architecture: arch,
			DownloadURL:  fmt.Sprintf("%s%sreleases/download/v%s/%s", baseURL, fakePrefix, d.version, filename),
			Filename:     filename,
		}
		switch d.checksum {
		case ChecksumCorrect:
			app.SHA256Checksum = d.sums[arch]
		case ChecksumWrong:
			sum := sha256.Sum256([]byte("not the runner tarball " + arch))
			app.SHA256Checksum = hex.EncodeToString(sum[:])
		}
		apps = append(apps, app)
	}
	return apps
}

// tarballNamed returns the tarball with that file name, if on offer.
func (d *downloads) tarballNamed(filename string) ([]byte, bool) {
	for _, arch := range RunnerArchitectures {
		if RunnerFilename(d.version, arch) == filename {
			return d.tarballs[arch], true
		}
	}
	return nil, false
}

// SetRunnerVersion changes the runner application version on offer.
func (s *Server) SetRunnerVersion(version string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloads.setVersion(version)
}

// RunnerVersion returns the runner application version on offer.
func (s *Server) RunnerVersion() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloads.version
}

// SetChecksumMode chooses the sha256_checksum the downloads endpoint sends.
func (s *Server) SetChecksumMode(mode ChecksumMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.downloads.checksum = mode
}

// RunnerSHA256 returns the real hex SHA-256 of the tarball on offer for
// arch, whatever the checksum mode.
func (s *Server) RunnerSHA256(arch string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloads.sums[arch]
}

// serveRelease answers a download_url the way github.com does: with a
// redirect to where the bytes live, so clients must follow redirects.
func (s *Server) serveRelease(w http.ResponseWriter, r *http.Request) {
	version, filename := r.PathValue("version"), r.PathValue("filename")
	s.mu.Lock()
	_, ok := s.downloads.tarballNamed(filename)
	ok = ok && version == "v"+s.downloads.version
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.Redirect(w, r, fakePrefix+"objects/"+filename, http.StatusFound)
}

func (s *Server) serveObject(w http.ResponseWriter, r *http.Request) {
	filename := path.Base(r.PathValue("filename"))
	s.mu.Lock()
	data, ok := s.downloads.tarballNamed(filename)
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", "attachment; filename="+filename)
	http.ServeContent(w, r, filename, tarballTime, bytes.NewReader(data))
}
