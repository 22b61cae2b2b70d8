// Command fakegithub serves the fake GitHub of package
// github.com/canonical/github-runner-charm/tests/fakegithub for end-to-end
// tests: the runner REST API, the broker for the fake runner application,
// the runner downloads, the runner scale-set service and the HTTP controls
// (see fakegithub.Remote).
//
//	fakegithub -listen 10.1.2.1:0 -token-file tokens -url-file url -status-lag 5s
//
// It runs until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

// tokenFlags collects repeated "VALUE[@SCOPE]" flags.
type tokenFlags struct {
	tokens    *[]fakegithub.Token
	forbidden bool
}

func (f tokenFlags) String() string { return "" }

func (f tokenFlags) Set(spec string) error {
	token, err := parseToken(spec, f.forbidden)
	if err != nil {
		return err
	}
	*f.tokens = append(*f.tokens, token)
	return nil
}

// parseToken reads "VALUE[@SCOPE]", SCOPE being "owner/repo" or "org".
func parseToken(spec string, forbidden bool) (fakegithub.Token, error) {
	value, scope, _ := strings.Cut(strings.TrimSpace(spec), "@")
	if value == "" {
		return fakegithub.Token{}, errors.New("cannot use an empty token")
	}
	return fakegithub.Token{Value: value, Scope: scope, Forbidden: forbidden}, nil
}

// readTokenFile reads one "VALUE[@SCOPE]" per line; "#" starts a comment.
func readTokenFile(path string) ([]fakegithub.Token, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read token file: %w", err)
	}
	var tokens []fakegithub.Token
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		token, err := parseToken(line, false)
		if err != nil {
			return nil, fmt.Errorf("cannot read token file: %w", err)
		}
		tokens = append(tokens, token)
	}
	return tokens, nil
}

var checksumModes = map[string]fakegithub.ChecksumMode{
	"correct": fakegithub.ChecksumCorrect,
	"wrong":   fakegithub.ChecksumWrong,
	"missing": fakegithub.ChecksumMissing,
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	flags := flag.NewFlagSet("fakegithub", flag.ContinueOnError)
	flags.SetOutput(stderr)
	var opts fakegithub.Options
	listen := flags.String("listen", "127.0.0.1:0", "`address` to serve on, e.g. 0.0.0.0:8080 or an LXD bridge's 10.1.2.1:0")
	flags.Var(tokenFlags{tokens: &opts.Tokens}, "token", "accept `TOKEN[@SCOPE]` (repeatable); SCOPE is owner/repo or org, none means everything")
	flags.Var(tokenFlags{tokens: &opts.Tokens, forbidden: true}, "forbidden-token", "accept `TOKEN[@SCOPE]` that lacks the administration permission (403)")
	tokenFile := flags.String("token-file", "", "read `FILE` with one TOKEN[@SCOPE] per line (keeps tokens off the command line)")
	urlFile := flags.String("url-file", "", "write the base URL to `FILE` once serving")
	flags.StringVar(&opts.AdvertiseURL, "advertise-url", "", "base `URL` runners and downloads use (default: the host of each API request)")
	flags.DurationVar(&opts.StatusLag, "status-lag", 0, "how long a connected runner stays offline")
	flags.DurationVar(&opts.JobLostTimeout, "job-lost-timeout", 0, "fail a job as lost once its runner goes unheard this long (0: never)")
	flags.IntVar(&opts.RateLimit, "rate-limit", 5000, "primary rate limit per token and hour")
	flags.StringVar(&opts.RunnerVersion, "runner-version", fakegithub.DefaultRunnerVersion, "runner application `version` on offer")
	flags.StringVar(&opts.GHESVersion, "ghes-version", "", "play a GitHub Enterprise Server of this `version` (3.8: no scale sets; 3.17: one scale-set label); empty: github.com")
	flags.StringVar(&opts.ScaleSetMode, "scale-set-mode", fakegithub.ScaleSetModeGitHub, "scale-set job flow: github.com (JobAssigned) or ghes (JobAvailable, then acquire)")
	flags.DurationVar(&opts.ScaleSetLongPoll, "scale-set-long-poll", 0, "how long a scale-set message poll waits before 202 (default 2s)")
	flags.DurationVar(&opts.ScaleSetSessionExpiry, "scale-set-session-expiry", 0, "end a scale-set session nobody polled this long (default 1m; negative: never)")
	flags.DurationVar(&opts.ScaleSetAssignTimeout, "scale-set-assign-timeout", 0, "cancel and reassign a scale-set job no runner took this long (default 5m)")
	checksum := flags.String("checksum", "correct", "sha256_checksum of the downloads: correct, wrong or missing")
	debug := flags.Bool("debug", false, "log every request (never tokens or JIT configs)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("cannot use arguments %q", flags.Args())
	}
	mode, ok := checksumModes[*checksum]
	if !ok {
		return fmt.Errorf("cannot use checksum mode %q", *checksum)
	}
	if *tokenFile != "" {
		tokens, err := readTokenFile(*tokenFile)
		if err != nil {
			return err
		}
		opts.Tokens = append(opts.Tokens, tokens...)
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	opts.Logger = logger

	srv, err := fakegithub.New(opts)
	if err != nil {
		return err
	}
	srv.SetChecksumMode(mode)
	if err := srv.Start(*listen); err != nil {
		return err
	}
	defer srv.Close()
	baseURL := srv.URL()
	if opts.AdvertiseURL != "" {
		baseURL = strings.TrimSuffix(opts.AdvertiseURL, "/")
	}
	if *urlFile != "" {
		if err := writeFileAtomically(*urlFile, baseURL+"\n"); err != nil {
			return err
		}
	}
	logger.Info("serving fake GitHub", "url", srv.URL(), "advertised", baseURL, "tokens", len(opts.Tokens))
	<-ctx.Done()
	logger.Info("stopping fake GitHub")
	return nil
}

// writeFileAtomically writes through a rename, so that a test polling for
// the file never reads half a URL.
func writeFileAtomically(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".fakegithub-url-*")
	if err != nil {
		return fmt.Errorf("cannot write URL file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return fmt.Errorf("cannot write URL file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cannot write URL file: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("cannot write URL file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cannot write URL file: %w", err)
	}
	return nil
}
