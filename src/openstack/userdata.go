package openstack

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/canonical/github-runner-charm/src/cloud/boot"
	"github.com/canonical/github-runner-charm/src/config"
)

// The paths inside a runner server are boot's, the same as LXD's. The
// user-data creates them; only the runner application must be in the
// image already (Config.RunnerDir).

// DefaultRunnerUser and DefaultRunnerDir are where Canonical's
// github-runner-image-builder (and the Python charm's
// build-openstack-image.sh) install the runner application.
const (
	DefaultRunnerUser = boot.DefaultRunnerUser
	DefaultRunnerDir  = boot.DefaultRunnerDir
)

// maxUserData is Nova's limit on user_data, counted after base64.
const maxUserData = 65535

// jitDelimiter ends the JIT config's here-document in the user-data; it
// cannot occur in base64 text, which checkJITConfig insists on.
const jitDelimiter = "GITHUB_RUNNER_JIT_CONFIG"

//go:embed userdata.sh.tmpl
var userDataTemplateText string

var userDataTemplate = template.Must(template.New("user-data").Funcs(template.FuncMap{"quote": config.ShellQuote}).Parse(userDataTemplateText))

// userDataInput is what the user-data template needs.
type userDataInput struct {
	Name            string
	Environment     string
	DockerhubMirror string // as a JSON string, quotes included; "" for none
	JITConfig       string
	JITDelimiter    string
	StartScript     string
	// PreJobHook is boot's hook when the runner has one, PreJobScript the
	// operator's script, ended by PreJobDelimiter, a line it does not hold.
	PreJobHook      string
	PreJobScript    string
	PreJobDelimiter string
	RunnerUser      string
	RunnerDir       string
	Paths           map[string]string
}

// jitConfigPattern is what GitHub's encoded_jit_config looks like: base64
// (standard or URL alphabet). Anything else could break out of the
// here-document it travels in.
var jitConfigPattern = regexp.MustCompile(`^[A-Za-z0-9+/=_.-]+$`)

func checkJITConfig(jit string) error {
	switch {
	case jit == "":
		return errors.New("no JIT config")
	case !jitConfigPattern.MatchString(jit):
		// Never quote it: it is a secret.
		return errors.New("the JIT config is not base64 text")
	}
	return nil
}

// userData renders a runner's user-data: a shell script cloud-init runs
// once, as root, at first boot, base64-encoded for Nova. It holds the JIT
// config, so it travels only on the config drive and in Nova's user_data
// (which only admins can read through the API), never in metadata or logs.
func userData(name, jit string, runnerUser, runnerDir string, image config.RunnerImage) (string, error) {
	return userDataWith(name, jit, runnerUser, runnerDir, image, nil)
}

// userDataWith is userData for a runner with variables of its own (its
// tmate server), written after the common ones.
func userDataWith(name, jit string, runnerUser, runnerDir string, image config.RunnerImage, env map[string]string) (string, error) {
	if err := checkJITConfig(jit); err != nil {
		return "", err
	}
	in := userDataInput{
		Name: name, Environment: image.EnvironmentFileWith(env), JITConfig: jit, JITDelimiter: jitDelimiter,
		StartScript: boot.StartScript, RunnerUser: runnerUser, RunnerDir: runnerDir,
		Paths: map[string]string{
			"JITConfig": boot.JITConfigPath, "Environment": boot.EnvironmentPath, "StartScript": boot.StartScriptPath,
			"Log": boot.LogPath, "DockerConfig": boot.DockerConfig,
			"PreJobHook": boot.PreJobHookPath, "PreJobScript": boot.PreJobScriptPath,
		},
	}
	if image.PreJobHook() {
		in.PreJobHook = boot.PreJobHook
		in.PreJobScript = image.PreJobScriptFile()
		in.PreJobDelimiter = hereDocDelimiter("GITHUB_RUNNER_PRE_JOB_SCRIPT", in.PreJobScript)
	}
	if image.DockerhubMirror != "" {
		mirror, err := json.Marshal(image.DockerhubMirror)
		if err != nil {
			return "", fmt.Errorf("cannot encode the Docker Hub mirror: %w", err)
		}
		in.DockerhubMirror = string(mirror)
	}
	var b bytes.Buffer
	if err := userDataTemplate.Execute(&b, in); err != nil {
		return "", fmt.Errorf("cannot render user-data: %w", err)
	}
	encoded := base64.StdEncoding.EncodeToString(b.Bytes())
	if len(encoded) > maxUserData {
		return "", fmt.Errorf("user-data is %d bytes in base64, more than Nova's %d", len(encoded), maxUserData)
	}
	return encoded, nil
}

// hereDocDelimiter is base, or base with a number after it, whichever is
// no line of text: the operator's script may hold any line.
func hereDocDelimiter(base, text string) string {
	lines := strings.Split(text, "\n")
	delimiter := base
	for n := 1; slices.Contains(lines, delimiter); n++ {
		delimiter = fmt.Sprintf("%s_%d", base, n)
	}
	return delimiter
}
