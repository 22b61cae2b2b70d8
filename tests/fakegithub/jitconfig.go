package fakegithub

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// runnerSettings is the ".runner" file of a configured runner, with the
// keys GitHub's runner writes. serverUrlV2 points at the fake's broker.
type runnerSettings struct {
	AgentID     int64  `json:"agentId"`
	AgentName   string `json:"agentName"`
	PoolID      int64  `json:"poolId"`
	PoolName    string `json:"poolName"`
	ServerURL   string `json:"serverUrl"`
	GitHubURL   string `json:"gitHubUrl"`
	WorkFolder  string `json:"workFolder"`
	Ephemeral   bool   `json:"ephemeral"`
	UseV2Flow   bool   `json:"useV2Flow"`
	ServerURLV2 string `json:"serverUrlV2"`
}

// runnerCredentials is the ".credentials" file. The real runner proves
// its identity with a JWT signed by the key in .credentials_rsaparams; the
// fake's broker takes clientId, a per-runner secret, as a bearer token.
type runnerCredentials struct {
	Scheme string            `json:"scheme"`
	Data   map[string]string `json:"data"`
}

const brokerPath = fakePrefix + "broker"

// encodeJITConfig builds an encoded_jit_config shaped like GitHub's:
// base64 of a JSON object whose keys are the runner's dot-files and whose
// values are their base64 contents.
func encodeJITConfig(baseURL string, r Runner, secret, workFolder string) string {
	settings := runnerSettings{
		AgentID:     r.ID,
		AgentName:   r.Name,
		PoolID:      r.GroupID,
		PoolName:    "Default",
		ServerURL:   baseURL + "/",
		GitHubURL:   baseURL + "/" + r.Scope,
		WorkFolder:  workFolder,
		Ephemeral:   r.Ephemeral,
		UseV2Flow:   true,
		ServerURLV2: baseURL + brokerPath,
	}
	credentials := runnerCredentials{
		Scheme: "OAuth",
		Data: map[string]string{
			"clientId":                secret,
			"authorizationUrl":        baseURL + brokerPath + "/token",
			"requireFipsCryptography": "False",
		},
	}
	// Dummy RSA parameters: nothing checks them, but managers that ship
	// the three files (as garm does) expect all three.
	rsaParams := map[string]string{"d": "ZmFrZQ==", "dp": "ZmFrZQ==", "dq": "ZmFrZQ==", "exponent": "AQAB",
		"inverseQ": "ZmFrZQ==", "modulus": "ZmFrZQ==", "p": "ZmFrZQ==", "q": "ZmFrZQ=="}
	files := map[string]string{
		".runner":                encodeFile(settings),
		".credentials":           encodeFile(credentials),
		".credentials_rsaparams": encodeFile(rsaParams),
	}
	outer, err := json.Marshal(files)
	if err != nil {
		panic(fmt.Sprintf("cannot encode JIT config: %v", err))
	}
	return base64.StdEncoding.EncodeToString(outer)
}

func encodeFile(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("cannot encode JIT config file: %v", err))
	}
	return base64.StdEncoding.EncodeToString(data)
}

// JITConfig is what an encoded_jit_config of the fake says, for tests that
// check where a manager put it (an instance's file, user data…).
type JITConfig struct {
	RunnerID   int64
	RunnerName string
	// ServerURL is the fake's base URL the runner will call.
	ServerURL  string
	WorkFolder string
	Ephemeral  bool
}

// DecodeJITConfig reads an encoded_jit_config produced by the fake.
func DecodeJITConfig(encoded string) (JITConfig, error) {
	outer, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return JITConfig{}, fmt.Errorf("cannot decode JIT config: %w", err)
	}
	var files map[string]string
	if err := json.Unmarshal(outer, &files); err != nil {
		return JITConfig{}, fmt.Errorf("cannot decode JIT config: %w", err)
	}
	var settings runnerSettings
	if err := decodeFile(files[".runner"], &settings); err != nil {
		return JITConfig{}, fmt.Errorf("cannot decode JIT config .runner: %w", err)
	}
	return JITConfig{
		RunnerID:   settings.AgentID,
		RunnerName: settings.AgentName,
		ServerURL:  strings.TrimSuffix(settings.ServerURL, "/"),
		WorkFolder: settings.WorkFolder,
		Ephemeral:  settings.Ephemeral,
	}, nil
}

func decodeFile(encoded string, v any) error {
	if encoded == "" {
		return errors.New("missing")
	}
	data, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}
