// Package boot is what a runner instance runs at its first boot, the same
// on every cloud: the start script and the paths inside the instance that
// the clouds fill (LXD pushes the files, OpenStack's user-data writes
// them) and the script reads.
package boot

import _ "embed"

// Paths inside a runner instance.
const (
	// JITConfigPath holds the runner's JIT config until the start script
	// has read it, and then deletes it: root's, 0600, in a 0700 directory,
	// so neither the job (which runs as the runner user) nor any other
	// process but root's can read it.
	JITConfigPath = "/var/lib/github-runner/jit-config"
	// EnvironmentPath is the proxy and mirror settings, no secrets.
	EnvironmentPath = "/etc/github-runner/environment"
	// StartScriptPath is where StartScript is installed.
	StartScriptPath = "/usr/local/bin/github-runner-start"
	// LogPath is the start script's log.
	LogPath         = "/var/log/github-runner.log"
	DockerConfigDir = "/etc/docker"
	DockerConfig    = DockerConfigDir + "/daemon.json"
	// PreJobHookPath is where PreJobHook is installed, root's, 0755: the
	// runner's ACTIONS_RUNNER_HOOK_JOB_STARTED names it (GitHub's runner
	// wants a .sh file outside its application directory).
	PreJobHookPath = "/etc/github-runner/pre-job.sh"
	// PreJobScriptPath is the operator's pre-job-script, root's, 0755, which
	// the hook runs when it is there.
	PreJobScriptPath = "/etc/github-runner/pre-job-script"
	// AllowExternalContributorVariable, "false" in the runner's
	// environment, makes the hook refuse external contributors' jobs.
	AllowExternalContributorVariable = "GITHUB_RUNNER_ALLOW_EXTERNAL_CONTRIBUTOR"

	// DefaultRunnerUser and DefaultRunnerDir are who runs the runner and
	// where its application is: where the LXD image build installs it, and
	// where Canonical's github-runner-image-builder puts it in an OpenStack
	// image.
	DefaultRunnerUser = "ubuntu"
	DefaultRunnerDir  = "/home/ubuntu/actions-runner"
)

// StartScript is github-runner-start [USER [DIR]], run as root once at the
// instance's first boot: it waits for the JIT config (a VM's files arrive
// through its agent after boot), reads it and deletes the file, runs the
// runner application in DIR as USER (DefaultRunnerUser, DefaultRunnerDir
// when not given) with the config in its environment, never in argv, and
// powers the instance off when the runner has done its one job.
//
//go:embed start.sh
var StartScript string

// PreJobHook is the runners' job-started hook (pre-job.sh), run by the
// runner application as the runner user before each job, in the job's
// environment: with allow-external-contributor false it fails the job of
// a pull request or comment event from an author who is not the
// repository's OWNER, MEMBER or COLLABORATOR, reading GITHUB_EVENT_PATH;
// then it runs the operator's pre-job-script, whose failure it logs and
// lets the job go on.
//
//go:embed pre-job.sh
var PreJobHook string

// InstallScript is install.sh TARBALL VERSION, run as root in an image
// builder: it lays the runner application in the tarball out for the
// runner user, with the directories the instances' files go into, and
// leaves the image clean for its first boot as a runner.
//
//go:embed install.sh
var InstallScript string

// ToolsScript installs what jobs expect of a runner (tools.sh).
//
//go:embed tools.sh
var ToolsScript string

// LeanBootScript takes out of the boot what a runner does not need
// (lean.sh).
//
//go:embed lean.sh
var LeanBootScript string

// Step is one script of a runner image build.
type Step struct {
	Name   string // for logs and errors: "tools"
	Script string
}

// ImageSteps are the scripts every runner image build runs as root, in
// this order, after InstallScript, on both clouds: LXD pushes and runs
// each in its builder, OpenStack's builder user-data writes and runs them.
// Each is POSIX sh, run as "sh SCRIPT" with the unit's proxies (http_proxy,
// https_proxy, no_proxy and their upper-case forms) in its environment; a
// non-zero exit fails the build.
var ImageSteps = []Step{
	{Name: "tools", Script: ToolsScript},
	{Name: "lean-boot", Script: LeanBootScript},
}
