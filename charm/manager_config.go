package charm

import (
	"fmt"
	"net/netip"
	"os"
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
// settings make; like config problems, they block the unit rather than fail
// a hook (a manager that refuses its file exits, and the hook replanning it
// fails).
func hostProblems(s Settings, model, unit string, kvm func() bool) []string {
	var problems []string
	if id, err := identity(model, unit); err != nil {
		problems = append(problems, err.Error())
	} else if err := id.Check(); err != nil {
		problems = append(problems, err.Error())
	} else if f, err := managerConfig(s, model, unit, "/state-dir", Proxy{}); err != nil {
		problems = append(problems, err.Error())
	} else {
		problems = append(problems, optionProblems(f.Problems())...)
	}
	if s.OpenStack == nil && s.RunnerType == RunnerTypeVM && !kvm() {
		problems = append(problems, "virtual machines need KVM on this host; set runner-type=container")
	}
	return problems
}

func hostHasKVM() bool {
	_, err := os.Stat("/dev/kvm")
	return err == nil
}

// Proxy is the proxy environment for runners.
type Proxy struct{ HTTP, HTTPS, NoProxy string }

// modelProxy is the Juju model's proxy settings, which Juju exports to
// every hook as JUJU_CHARM_*_PROXY.
func modelProxy(getenv func(string) string) Proxy {
	return Proxy{HTTP: getenv("JUJU_CHARM_HTTP_PROXY"), HTTPS: getenv("JUJU_CHARM_HTTPS_PROXY"), NoProxy: getenv("JUJU_CHARM_NO_PROXY")}
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
		ReconcileInterval: s.ReconcileInterval,
		GitHub: config.GitHub{
			Path: s.Path.String(), APIURL: s.GitHubAPIURL, Token: s.Token, Group: s.Group, Labels: s.Labels,
		},
		Runner: config.RunnerImage{DockerhubMirror: s.DockerhubMirror, Denylist: prefixStrings(s.Denylist)},
	}
	if s.App != nil {
		f.GitHub.App = &config.GitHubApp{ID: s.App.AppID, InstallationID: s.App.InstallationID, PrivateKey: s.App.PrivateKey}
	}
	// runner-http-proxy wins over the model's proxy, for both schemes.
	proxy := model
	if s.RunnerHTTPProxy != "" {
		proxy = Proxy{HTTP: s.RunnerHTTPProxy, HTTPS: s.RunnerHTTPProxy, NoProxy: model.NoProxy}
	}
	f.Runner.HTTPProxy, f.Runner.HTTPSProxy, f.Runner.NoProxy = proxy.HTTP, proxy.HTTPS, proxy.NoProxy
	if o := s.OpenStack; o != nil {
		f.OpenStack = &config.OpenStack{CloudsYAML: o.CloudsYAML, Flavor: o.Flavor, Network: o.Network, Image: o.Image}
	} else {
		f.LXD = &config.LXD{Type: s.RunnerType, BaseImage: s.BaseImage, CPU: s.CPU, Memory: s.Memory, Disk: s.Disk}
	}
	return f, nil
}

func prefixStrings(prefixes []netip.Prefix) []string {
	out := make([]string, 0, len(prefixes))
	for _, p := range prefixes {
		out = append(out, p.String())
	}
	return out
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
		old.GitHub.Group != new.GitHub.Group || strings.Join(old.GitHub.Labels, ",") != strings.Join(new.GitHub.Labels, ",")
	return identity, false
}

func sameApp(a, b *config.GitHubApp) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
