package charm

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pythonFiles are files as Canonical's Python charm leaves them (upstream
// templates and writers), by path under the machine's root.
func pythonMIDFiles(unit string) map[string]string {
	return map[string]string{
		"etc/systemd/system/ghro.reconcile-runners.service": `[Unit]
Description=Dispatch the reconcile-runners event on ` + unit + `

[Service]
Type=oneshot
ExecStart=/usr/bin/run-one /usr/bin/bash -c '/usr/bin/juju-exec "` + unit + `" "JUJU_DISPATCH_PATH=reconcile-runners ./dispatch" || /usr/bin/juju-run "` + unit + `" "JUJU_DISPATCH_PATH=reconcile-runners ./dispatch"'

[Install]
WantedBy=multi-user.target
`,
		"etc/systemd/system/ghro.reconcile-runners.timer": `[Unit]
Description=Timer to dispatch reconcile-runners event periodically
Requires=ghro.reconcile-runners.service

[Timer]
Unit=ghro.reconcile-runners.service
OnUnitInactiveSec=10m
RandomizedDelaySec=2m

[Install]
WantedBy=timers.target
`,
		"etc/systemd/system/repo-policy-compliance.service": "[Service]\nUser=ubuntu\nEnvironment=\"GITHUB_TOKEN=ghp_secret\"\nExecStart=/usr/bin/gunicorn --bind 0.0.0.0:8080 --timeout 60 app:app\n",
		"home/ubuntu/repo_policy_compliance_service/app.py": "from repo_policy_compliance.blueprint import repo_policy_compliance\n",
		"etc/cron.d/build-runner-image":                     "17 3,9,15,21 * * * ubuntu /usr/bin/bash scripts/build-lxd-image.sh '' '' '' jammy\n",
		"etc/logrotate.d/github-runner-metrics":             "/var/log/github-runner-metrics.log {\nweekly\nrotate 0\n}\n",
		"etc/logrotate.d/reactive-runner":                   "/var/log/reactive_runner/*.log {\ndaily\n}\n",
		"var/log/github-runner-metrics.log":                 "{\"event\": \"runner_installed\"}\n",
	}
}

func pythonNEWFiles(unit string) map[string]string {
	n := strings.ReplaceAll(unit, "/", "-")
	return map[string]string{
		"etc/systemd/system/github-runner-manager@" + n + ".service": "[Service]\nExecStart=github-runner-manager --config-file /var/lib/github-runner-manager/" + n + "/config.yaml --host 127.0.0.1 --port 55555 --log-level INFO\n",
		"var/lib/github-runner-manager/" + n + "/config.yaml":        "github_config:\n  token: ghp_secret\n",
		"var/lib/github-runner-manager/" + n + "/http_port":          "55555\n",
		"var/lib/github-runner-manager/port-alloc.lock":              "",
		"etc/logrotate.d/github-runner-manager":                      "/var/log/github-runner-manager/*.log {\ndaily\nrotate 0\n}\n",
		"var/log/github-runner-manager/" + n + ".log":                "started\n",
	}
}

func writeFiles(t *testing.T, root string, files ...map[string]string) {
	t.Helper()
	for _, set := range files {
		for rel, content := range set {
			path := filepath.Join(root, rel)
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func exists(root, rel string) bool {
	_, err := os.Lstat(filepath.Join(root, rel))
	return err == nil
}

// The Python charm's services and files of the unit go, stopped first
// where systemd runs; what it installed once per machine goes with its last
// unit there; another unit's, and every log, stay; a second run finds
// nothing to do.
func TestRemovePythonCharmFiles(t *testing.T) {
	const unit = "github-runner/0"
	other := "other-runner/2"
	mine := []string{
		"etc/systemd/system/github-runner-manager@github-runner-0.service",
		"var/lib/github-runner-manager/github-runner-0",
	}
	machine := []string{
		"etc/logrotate.d/github-runner-manager", "var/lib/github-runner-manager/port-alloc.lock",
	}
	mid := []string{
		"etc/systemd/system/ghro.reconcile-runners.service", "etc/systemd/system/ghro.reconcile-runners.timer",
	}
	midMachine := []string{
		"etc/systemd/system/repo-policy-compliance.service", "home/ubuntu/repo_policy_compliance_service",
		"etc/cron.d/build-runner-image", "etc/logrotate.d/github-runner-metrics", "etc/logrotate.d/reactive-runner",
	}
	logs := []string{"var/log/github-runner-manager/github-runner-0.log"}
	midLogs := []string{"var/log/github-runner-metrics.log"}
	tests := []struct {
		name       string
		files      []map[string]string
		gone, kept []string
		stopped    []string // systemctl disable --now, in order
	}{
		{
			name: "the NEW charm's unit alone", files: []map[string]string{pythonNEWFiles(unit)},
			gone: concat(mine, machine, []string{"var/lib/github-runner-manager"}), kept: logs,
			stopped: []string{"github-runner-manager@github-runner-0.service"},
		},
		{
			name: "the NEW charm's unit beside another application's", files: []map[string]string{pythonNEWFiles(unit), pythonNEWFiles(other)},
			gone:    mine,
			kept:    concat(logs, machine, []string{"etc/systemd/system/github-runner-manager@other-runner-2.service", "var/lib/github-runner-manager/other-runner-2/config.yaml"}),
			stopped: []string{"github-runner-manager@github-runner-0.service"},
		},
		{
			name: "the MID charm's unit", files: []map[string]string{pythonMIDFiles(unit)},
			gone: concat(mid, midMachine), kept: midLogs,
			stopped: []string{"ghro.reconcile-runners.timer", "ghro.reconcile-runners.service", "repo-policy-compliance.service"},
		},
		{
			name: "the MID charm's timer of another unit", files: []map[string]string{pythonMIDFiles(other), pythonNEWFiles(unit)},
			gone: mine, kept: concat(mid, midMachine, machine),
			stopped: []string{"github-runner-manager@github-runner-0.service"},
		},
		{
			name: "a MID unit refreshed to the NEW charm, then switched", files: []map[string]string{pythonMIDFiles(unit), pythonNEWFiles(unit),
				{"etc/systemd/system/github-runner-manager.service": "[Service]\nExecStart=github-runner-manager\n"}},
			gone: concat(mine, machine, mid, midMachine, []string{"etc/systemd/system/github-runner-manager.service"}), kept: concat(logs, midLogs),
			stopped: []string{"github-runner-manager@github-runner-0.service", "ghro.reconcile-runners.timer", "ghro.reconcile-runners.service",
				"github-runner-manager.service", "repo-policy-compliance.service"},
		},
		{name: "nothing of the Python charm"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, root, test.files...)
			writeFiles(t, root, map[string]string{"etc/systemd/system/ssh.service": "[Service]\n", "etc/cron.d/e2scrub_all": "#\n"})
			var calls []string
			p := &pythonCharm{root: root, unit: unit, systemctl: func(_ context.Context, args ...string) error {
				calls = append(calls, strings.Join(args, " "))
				return nil
			}}
			removed, err := p.remove(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, rel := range test.gone {
				if exists(root, rel) {
					t.Errorf("%s is still there", rel)
				}
				if !slices.Contains(removed, filepath.Join(root, rel)) {
					t.Errorf("%s not said removed: %v", rel, removed)
				}
			}
			for _, rel := range append(test.kept, "etc/systemd/system/ssh.service", "etc/cron.d/e2scrub_all") {
				if !exists(root, rel) {
					t.Errorf("%s was removed", rel)
				}
			}
			var disabled []string
			for _, call := range calls {
				if unit, ok := strings.CutPrefix(call, "disable --now "); ok {
					disabled = append(disabled, unit)
				}
			}
			if !slices.Equal(disabled, test.stopped) {
				t.Errorf("stopped %q, want %q", disabled, test.stopped)
			}
			if len(test.stopped) > 0 && !slices.Contains(calls, "daemon-reload") {
				t.Errorf("no daemon-reload: %q", calls)
			}
			calls = nil
			if removed, err := p.remove(context.Background()); err != nil || len(removed) > 0 || len(calls) > 0 {
				t.Errorf("second run: removed %v, systemctl %q, %v", removed, calls, err)
			}
		})
	}
}

// A unit systemd cannot stop keeps its file, so the hook, retried, tries
// again; without systemd the files go all the same.
func TestRemovePythonCharmFilesWhenSystemctlFails(t *testing.T) {
	const unit = "github-runner/0"
	service := "etc/systemd/system/github-runner-manager@github-runner-0.service"
	root := t.TempDir()
	writeFiles(t, root, pythonNEWFiles(unit))
	p := &pythonCharm{root: root, unit: unit, systemctl: func(context.Context, ...string) error { return errors.New("cannot run systemctl") }}
	if _, err := p.remove(context.Background()); err == nil {
		t.Error("no error")
	}
	if !exists(root, service) {
		t.Error("the service file of a service that could not be stopped was removed")
	}
	if exists(root, "var/lib/github-runner-manager/github-runner-0/config.yaml") {
		t.Error("the Python charm's config, with its token, is still there")
	}
	p.systemctl = nil
	if _, err := p.remove(context.Background()); err != nil || exists(root, service) {
		t.Errorf("without systemd: %v, file there %v", err, exists(root, service))
	}
}

// Under a root other than "/" (the harness's), systemctl never runs.
func TestPythonCharmRootNeverRunsSystemctlElsewhere(t *testing.T) {
	c := &Charm{Unit: "github-runner/0", Getenv: func(k string) string {
		if k == hostRootEnv {
			return t.TempDir()
		}
		return ""
	}}
	if p := c.pythonCharm(); p.systemctl != nil || p.root == "/" {
		t.Errorf("root %q, systemctl set %v", p.root, p.systemctl != nil)
	}
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
