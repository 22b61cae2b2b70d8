package github

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	jwt "github.com/golang-jwt/jwt/v4"

	"github.com/canonical/github-runner-charm/src/config"
	gh "github.com/google/go-github/v62/github"
)

// Defaults for Config's zero values.
const (
	DefaultRequestTimeout  = 30 * time.Second
	DefaultDownloadTimeout = 10 * time.Minute
	DefaultMaxAttempts     = 3
	DefaultRetryBaseDelay  = time.Second
	DefaultRunnerGroup     = "default"

	maxRetryDelay   = 30 * time.Second
	repoRunnerGroup = 1 // repositories have a single runner group, id 1
)

// AppCredentials authenticate as a GitHub App installation.
type AppCredentials struct {
	// AppID is the App's numeric ID; ClientID its client ID (Iv1.…),
	// which, when set, is the JWTs' issuer instead.
	AppID          int64
	ClientID       string
	InstallationID int64
	// PrivateKeyPEM is the App's private key, PEM encoded.
	PrivateKeyPEM []byte
}

// Config says which GitHub, which path and which credentials. Exactly one of
// Token and App must be set.
type Config struct {
	// Path is "org" or "owner/repo".
	Path string
	// BaseURL is empty for github.com. For GitHub Enterprise Server give the
	// server, with or without the API suffix: "https://HOST",
	// "https://HOST/api/v3" and either with a trailing slash all mean
	// https://HOST/api/v3/. See config.ParseAPIURL for the full rule.
	BaseURL string
	// Token is a personal access token (classic or fine-grained).
	Token string
	// App authenticates as a GitHub App installation instead of Token.
	App *AppCredentials
	// RunnerGroup is the organisation runner group's name (default
	// "default"); repositories always use group id 1.
	RunnerGroup string

	// RequestTimeout bounds each API request (each page, each attempt).
	RequestTimeout time.Duration
	// DownloadTimeout bounds one runner application download.
	DownloadTimeout time.Duration
	// MaxAttempts is how many times a request is tried on 5xx or a dropped
	// connection.
	MaxAttempts int
	// RetryBaseDelay is the first backoff; it doubles each attempt.
	RetryBaseDelay time.Duration
	// Transport is the base HTTP transport (proxies, test TLS); default
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Client talks to one repository or organisation's self-hosted runners. It
// is safe for concurrent use.
type Client struct {
	api      *gh.Client
	download *http.Client
	budget   *budgetRecorder
	scope    config.Path
	usesApp  bool
	group    string
	logger   *slog.Logger

	requestTimeout  time.Duration
	downloadTimeout time.Duration
	maxAttempts     int
	retryBaseDelay  time.Duration

	mu sync.Mutex
	// hold is the last rate-limit error while it is in force; see checkHold.
	hold *Error
	// groupID caches the organisation runner group's id once looked up.
	groupID int64
}

// New checks cfg and returns a Client. It makes no request.
func New(cfg Config) (*Client, error) {
	sc, err := config.ParsePath(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("cannot use GitHub path: %w", err)
	}
	base, err := config.ParseAPIURL(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("cannot use GitHub URL: %w", err)
	}
	transport := cfg.Transport
	if transport == nil {
		transport = http.DefaultTransport
	}
	c := &Client{
		download:        &http.Client{Transport: transport},
		scope:           sc,
		usesApp:         cfg.App != nil,
		group:           cfg.RunnerGroup,
		logger:          cfg.Logger,
		requestTimeout:  positiveOr(cfg.RequestTimeout, DefaultRequestTimeout),
		downloadTimeout: positiveOr(cfg.DownloadTimeout, DefaultDownloadTimeout),
		maxAttempts:     cfg.MaxAttempts,
		retryBaseDelay:  positiveOr(cfg.RetryBaseDelay, DefaultRetryBaseDelay),
	}
	if c.group == "" {
		c.group = DefaultRunnerGroup
	}
	if c.maxAttempts <= 0 {
		c.maxAttempts = DefaultMaxAttempts
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	c.logger = c.logger.With(slog.String("github-path", sc.String()))

	authed, err := authTransport(cfg, base, transport)
	if err != nil {
		return nil, err
	}
	// The recorder sits above authentication so it sees API responses only,
	// not the App's installation-token requests (those have the App's own
	// budget, which would mislead a pacing manager).
	c.budget = &budgetRecorder{next: authed}
	c.api = gh.NewClient(&http.Client{Transport: secondaryLimitTransport{next: c.budget}})
	c.api.BaseURL = base
	return c, nil
}

func positiveOr(d, fallback time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return fallback
}

// authTransport wraps base with exactly one of PAT or App authentication.
func authTransport(cfg Config, apiBase *url.URL, base http.RoundTripper) (http.RoundTripper, error) {
	switch {
	case cfg.Token != "" && cfg.App != nil:
		return nil, errors.New("cannot use both a GitHub token and GitHub App credentials: configure one of them")
	case cfg.Token == "" && cfg.App == nil:
		return nil, errors.New("cannot authenticate to GitHub: configure a token or GitHub App credentials")
	case cfg.Token != "":
		token, err := config.ParseToken(cfg.Token)
		if err != nil {
			return nil, fmt.Errorf("cannot use GitHub token: it %w", err) // the rule never quotes it
		}
		return tokenTransport{token: token, next: base}, nil
	}
	app := cfg.App // its IDs are as src/config checked them
	key, err := config.ParseAppKey(string(app.PrivateKeyPEM))
	if err != nil {
		return nil, fmt.Errorf("cannot use GitHub App private key: it %w", err) // the rule never quotes it
	}
	issuer := (&config.GitHubApp{ID: app.AppID, ClientID: app.ClientID}).Issuer()
	atr, err := ghinstallation.NewAppsTransportWithOptions(base, app.AppID,
		ghinstallation.WithSigner(issuerSigner{issuer: issuer, next: ghinstallation.NewRSASigner(jwt.SigningMethodRS256, key)}))
	if err != nil {
		return nil, fmt.Errorf("cannot use GitHub App credentials: %w", err)
	}
	itr := ghinstallation.NewFromAppsTransport(atr, app.InstallationID)
	// ghinstallation wants the API root without the trailing slash.
	itr.BaseURL = strings.TrimSuffix(apiBase.String(), "/")
	return itr, nil
}

// issuerSigner signs the App's JWTs with issuer as their iss claim:
// ghinstallation always puts the numeric App ID there, while GitHub takes
// the App's client ID as well (and recommends it).
type issuerSigner struct {
	issuer string
	next   ghinstallation.Signer
}

func (s issuerSigner) Sign(claims jwt.Claims) (string, error) {
	registered, ok := claims.(*jwt.RegisteredClaims)
	if !ok {
		return "", fmt.Errorf("cannot sign the GitHub App's JWT: unexpected claims %T", claims)
	}
	c := *registered
	c.Issuer = s.issuer
	return s.next.Sign(&c)
}

// tokenTransport adds a PAT to every API request. It is ours rather than
// go-github's WithAuthToken so that both kinds of credentials sit at the
// same place in the transport chain, below the budget recorder. The
// download client has no such transport: the token must not travel to
// release hosts.
type tokenTransport struct {
	token string
	next  http.RoundTripper
}

func (t tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+t.token)
	return t.next.RoundTrip(req)
}
