package charm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/canonical/github-runner-charm/src/config"
	"github.com/canonical/github-runner-charm/src/runner"
)

// identity is the unit's runner identity, from Juju's environment.
func identity(model, unit string) (runner.Identity, error) {
	id, err := runner.ParseIdentity(model, unit)
	if err != nil {
		return runner.Identity{}, fmt.Errorf("%w (from JUJU_MODEL_UUID and JUJU_UNIT_NAME)", err)
	}
	return id, nil
}

// hostProblems are what the configuration asks that this machine cannot
// give, and whatever else the manager would refuse in the config file these
// settings make here (the unit's identity, its state directory, the model's
// proxy); like config problems, they block the unit rather than fail a hook
// (a manager that refuses its file exits at start). The rules are
// src/config's, the facts (KVM) the charm's.
func (c *Charm) hostProblems(s Settings) []string {
	model := c.Getenv("JUJU_MODEL_UUID")
	id, err := identity(model, c.Unit)
	if err == nil {
		err = id.Check()
	}
	if err != nil {
		return []string{err.Error()}
	}
	proxy := modelProxy(c.Getenv)
	f, err := managerConfig(s, model, c.Unit, c.StateDir, proxy)
	if err != nil {
		return []string{err.Error()}
	}
	problems := f.ProblemsOn(config.Host{KVM: c.HasKVM()})
	for i, p := range problems {
		// What the model set is named by the model's option.
		if from, ok := modelProxyOption[p.Field]; ok && (s.RunnerHTTPProxy == "" || p.Field == "runner.no-proxy") {
			problems[i].Field = from
		}
	}
	return s.optionProblems(problems)
}

// modelProxyOption names the model's config behind the runners' proxy
// fields, when runner-http-proxy does not set them.
var modelProxyOption = map[string]string{
	"runner.http-proxy":  "the model's juju-http-proxy",
	"runner.https-proxy": "the model's juju-https-proxy",
	"runner.no-proxy":    "the model's juju-no-proxy",
}

func hostHasKVM() bool { return config.ThisHost().KVM }

// Proxy is the proxy environment for runners.
type Proxy struct{ HTTP, HTTPS, NoProxy string }

// modelProxy is the Juju model's proxy settings, which Juju exports to
// every hook as JUJU_CHARM_*_PROXY.
// Juju takes a proxy without a scheme (squid.internal:3128), which tools
// read as http://; the runners get the URL.
func modelProxy(getenv func(string) string) Proxy {
	return Proxy{HTTP: proxyURL(getenv("JUJU_CHARM_HTTP_PROXY")), HTTPS: proxyURL(getenv("JUJU_CHARM_HTTPS_PROXY")), NoProxy: getenv("JUJU_CHARM_NO_PROXY")}
}

func proxyURL(proxy string) string {
	if proxy = strings.TrimSpace(proxy); proxy != "" && !strings.Contains(proxy, "://") {
		return "http://" + proxy
	}
	return proxy
}

// managerConfig is the manager's config file for these settings.
func managerConfig(s Settings, modelUUID, unit, stateDir string, model Proxy) (*config.File, error) {
	if _, err := identity(modelUUID, unit); err != nil {
		return nil, err
	}
	f := &config.File{
		Unit:              unit,
		Model:             modelUUID,
		StateDir:          stateDir,
		Runners:           s.Runners,
		MaxRunners:        s.MaxRunners,
		ReconcileInterval: s.ReconcileInterval,
		LogLevel:          s.LogLevel,
		GitHub: config.GitHub{
			Path: s.Path.String(), APIURL: s.GitHubAPIURL, Token: s.Token, Group: s.Group, Labels: s.Labels,
			ScaleSet: s.ScaleSet, PlatformLabels: platformLabels(s, unit),
		},
		Runner: config.RunnerImage{
			DockerhubMirror: s.DockerhubMirror, Denylist: s.Denylist,
			PreJobScript: s.PreJobScript, RejectExternalContributors: !s.AllowExternalContributor,
		},
	}
	if s.App != nil {
		f.GitHub.App = &config.GitHubApp{ID: s.App.AppID, ClientID: s.App.ClientID, InstallationID: s.App.InstallationID, PrivateKey: s.App.PrivateKey}
	}
	// runner-http-proxy wins over the model's proxy, for both schemes.
	proxy := model
	if s.RunnerHTTPProxy != "" {
		proxy = Proxy{HTTP: s.RunnerHTTPProxy, HTTPS: s.RunnerHTTPProxy, NoProxy: model.NoProxy}
	}
	f.Runner.HTTPProxy, f.Runner.HTTPSProxy, f.Runner.NoProxy = proxy.HTTP, proxy.HTTPS, proxy.NoProxy
	f.Runner.TmateServers = s.TmateServers // the debug-ssh relation's
	if o := s.OpenStack; o != nil {
		f.OpenStack = &config.OpenStack{CloudsYAML: o.CloudsYAML, Flavor: o.Flavor, Network: o.Network, Image: o.Image, BaseImage: o.BaseImage}
	} else {
		f.LXD = &config.LXD{Type: s.RunnerType, BaseImage: s.BaseImage, CPU: s.CPU, Memory: s.Memory, Disk: s.Disk}
	}
	return f, nil
}

// drainBefore says which runners must go before moving from old to new
// settings: idle ones when who the runners register with or how they look
// changes (busy ones finish their job and are replaced afterwards), and all
// of them when the cloud changes, since the new manager cannot see the old
// cloud's instances and they would leak.
func drainBefore(old, new *config.File) (drain, busyToo bool) {
	if old == nil {
		return false, false // first configuration: nothing to drain
	}
	if (old.LXD == nil) != (new.LXD == nil) {
		return true, true
	}
	identity := old.GitHub.Path != new.GitHub.Path || old.GitHub.APIURL != new.GitHub.APIURL ||
		old.GitHub.Token != new.GitHub.Token || !sameApp(old.GitHub.App, new.GitHub.App) ||
		old.GitHub.Group != new.GitHub.Group || strings.Join(old.GitHub.Labels, ",") != strings.Join(new.GitHub.Labels, ",") ||
		old.GitHub.ScaleSet != new.GitHub.ScaleSet || // the runners of another scale set, or classic ones
		// How they look: their labels (the image relation's tags among
		// them), and their image (the image relation's new image).
		strings.Join(old.GitHub.PlatformLabels, ",") != strings.Join(new.GitHub.PlatformLabels, ",") ||
		(old.OpenStack != nil && new.OpenStack != nil && old.OpenStack.Image != new.OpenStack.Image)
	// Idle runners hold a server of the old tmate list: a relation change
	// (a server added, removed or changed) replaces them, busy ones never
	// (they finish their job, then go).
	tmate := !slices.Equal(old.Runner.TmateServers, new.Runner.TmateServers)
	// Idle runners carry the old job-started hook: they would run the old
	// pre-job-script, or let in whom allow-external-contributor now keeps
	// out.
	hook := old.Runner.PreJobScript != new.Runner.PreJobScript ||
		old.Runner.RejectExternalContributors != new.Runner.RejectExternalContributors
	return identity || tmate || hook, false
}

func sameApp(a, b *config.GitHubApp) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
