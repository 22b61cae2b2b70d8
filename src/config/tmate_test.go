package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Real fingerprints, as ssh-keygen -l -E sha256 prints them.
const (
	testRSAFingerprint     = "SHA256:aZyJL5q5TD/FqtKgRRlXhZiJoRNASJw9IPhPLHHx/1A"
	testED25519Fingerprint = "SHA256:Q0cJAgy/QhMms3Z0VxDde1EGXvGAEt+dIa7kZqMUMDY"
)

func tmateData(overrides map[string]string) map[string]string {
	data := map[string]string{"host": "10.1.2.3", "port": "10022", "rsa_fingerprint": testRSAFingerprint, "ed25519_fingerprint": testED25519Fingerprint}
	for k, v := range overrides {
		if v == "-" {
			delete(data, k)
		} else {
			data[k] = v
		}
	}
	return data
}

func TestParseTmateServer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		overrides map[string]string
		want      TmateServer
		problem   string // "" for none
	}{
		{name: "an IPv4 server", want: TmateServer{Host: "10.1.2.3", Port: 10022, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}},
		{name: "an IPv6 server", overrides: map[string]string{"host": "fd00::7"}, want: TmateServer{Host: "fd00::7", Port: 10022, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}},
		{name: "a host name, spaces trimmed", overrides: map[string]string{"host": " tmate.example.com ", "port": " 22 "},
			want: TmateServer{Host: "tmate.example.com", Port: 22, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}},
		{name: "a padded fingerprint", overrides: map[string]string{"rsa_fingerprint": testRSAFingerprint + "="},
			want: TmateServer{Host: "10.1.2.3", Port: 10022, RSAFingerprint: testRSAFingerprint + "=", ED25519Fingerprint: testED25519Fingerprint}},
		{name: "nothing yet", overrides: map[string]string{"host": "-", "port": "-", "rsa_fingerprint": "-", "ed25519_fingerprint": "-"},
			problem: "port is missing; host is missing; rsa_fingerprint is missing; ed25519_fingerprint is missing"},
		{name: "port zero", overrides: map[string]string{"port": "0"}, problem: `port "0" is not a TCP port (1-65535)`},
		{name: "port too big", overrides: map[string]string{"port": "65536"}, problem: `port "65536" is not a TCP port`},
		{name: "port not a number", overrides: map[string]string{"port": "ssh"}, problem: `port "ssh" is not a TCP port`},
		{name: "host with a port", overrides: map[string]string{"host": "10.1.2.3:22"}, problem: `host "10.1.2.3:22" is neither an IP address nor a host name`},
		{name: "host a bad address", overrides: map[string]string{"host": "10.1.2.300"}, problem: "host "},
		{name: "host with a zone", overrides: map[string]string{"host": "fe80::1%eth0"}, problem: "host "},
		{name: "host with a space", overrides: map[string]string{"host": "a b"}, problem: "host "},
		{name: "host a shell word", overrides: map[string]string{"host": "$(reboot)"}, problem: "host "},
		{name: "host with a newline", overrides: map[string]string{"host": "a\nTMATE_SERVER_PORT=1"}, problem: "host "},
		{name: "host label ends with a hyphen", overrides: map[string]string{"host": "tmate-.example"}, problem: "host "},
		{name: "fingerprint without SHA256", overrides: map[string]string{"rsa_fingerprint": strings.TrimPrefix(testRSAFingerprint, "SHA256:")},
			problem: "rsa_fingerprint "},
		{name: "MD5 fingerprint", overrides: map[string]string{"ed25519_fingerprint": "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48"},
			problem: `ed25519_fingerprint "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48" is not a SHA256 host key fingerprint`},
		{name: "fingerprint too short", overrides: map[string]string{"ed25519_fingerprint": "SHA256:abcd"}, problem: "ed25519_fingerprint "},
		{name: "fingerprint not base64", overrides: map[string]string{"ed25519_fingerprint": "SHA256:" + strings.Repeat("!", 43)}, problem: "ed25519_fingerprint "},
		{name: "fingerprint with a quote", overrides: map[string]string{"rsa_fingerprint": testRSAFingerprint[:20] + "'" + testRSAFingerprint[21:]}, problem: "rsa_fingerprint "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseTmateServer(tmateData(tc.overrides))
			switch {
			case tc.problem == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.problem == "" && got != tc.want:
				t.Fatalf("got %+v, want %+v", got, tc.want)
			case tc.problem != "" && (err == nil || !strings.Contains(err.Error(), tc.problem)):
				t.Fatalf("error %v, want one containing %q", err, tc.problem)
			case tc.problem != "" && got != (TmateServer{}):
				t.Fatalf("a refused server came back: %+v", got)
			}
		})
	}
}

func TestTmateServersInFileProblems(t *testing.T) {
	good := TmateServer{Host: "10.1.2.3", Port: 10022, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}
	for _, tc := range []struct {
		name    string
		servers []TmateServer
		want    []Problem
	}{
		{name: "none"},
		{name: "two", servers: []TmateServer{good, {Host: "tmate.example.com", Port: 22, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}}},
		{name: "bad values", servers: []TmateServer{good, {Host: "a b", Port: 70000, RSAFingerprint: "x"}}, want: []Problem{
			{"runner.tmate-servers[1].host", `"a b" is neither an IP address nor a host name`},
			{"runner.tmate-servers[1].port", "must be a TCP port (1-65535), not 70000"},
			{"runner.tmate-servers[1].rsa-fingerprint", `"x" is not a SHA256 host key fingerprint (SHA256:<base64>, as ssh-keygen -l prints)`},
			{"runner.tmate-servers[1].ed25519-fingerprint", "is missing"},
		}},
		{name: "one address twice", servers: []TmateServer{good, good}, want: []Problem{{"runner.tmate-servers[1]", `"10.1.2.3:10022" is listed twice`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := validFile()
			f.Runner.TmateServers = tc.servers
			if got := f.Problems(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("problems %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTmateServersRoundTrip(t *testing.T) {
	f := validFile()
	f.Runner.TmateServers = []TmateServer{
		{Host: "10.1.2.3", Port: 10022, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint},
		{Host: "fd00::7", Port: 22, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint},
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := f.Write(path); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	for _, key := range []string{"tmate-servers:", "host: fd00::7", "rsa-fingerprint: " + testRSAFingerprint, "ed25519-fingerprint: "} {
		if !strings.Contains(string(data), key) {
			t.Errorf("the file lacks %q:\n%s", key, data)
		}
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Runner.TmateServers, f.Runner.TmateServers) {
		t.Fatalf("read back %+v, want %+v", got.Runner.TmateServers, f.Runner.TmateServers)
	}
	// A key of the relation's spelling is a typo in the file.
	bad := strings.Replace(string(data), "rsa-fingerprint", "rsa_fingerprint", 1)
	if _, err := Parse([]byte(bad)); err == nil {
		t.Fatal("a file with rsa_fingerprint parsed")
	}
}

func TestTmateEnvironment(t *testing.T) {
	s := TmateServer{Host: "10.1.2.3", Port: 10022, RSAFingerprint: testRSAFingerprint, ED25519Fingerprint: testED25519Fingerprint}
	want := map[string]string{
		"TMATE_SERVER_HOST": "10.1.2.3", "TMATE_SERVER_PORT": "10022",
		"TMATE_SERVER_RSA_FINGERPRINT": testRSAFingerprint, "TMATE_SERVER_ED25519_FINGERPRINT": testED25519Fingerprint,
	}
	if got := s.Environment(); !reflect.DeepEqual(got, want) {
		t.Fatalf("environment %v, want %v", got, want)
	}
	image := RunnerImage{HTTPProxy: "http://proxy:3128"}
	got := image.EnvironmentFileWith(s.Environment())
	wantTail := "TMATE_SERVER_ED25519_FINGERPRINT='" + testED25519Fingerprint + "'\n" +
		"TMATE_SERVER_HOST='10.1.2.3'\n" +
		"TMATE_SERVER_PORT='10022'\n" +
		"TMATE_SERVER_RSA_FINGERPRINT='" + testRSAFingerprint + "'\n"
	if got != image.EnvironmentFile()+wantTail {
		t.Fatalf("environment file:\n%s\nwant the common part, then:\n%s", got, wantTail)
	}
	if image.EnvironmentFileWith(nil) != image.EnvironmentFile() {
		t.Fatal("no extra variables changed the file")
	}
}

func TestSortTmateServers(t *testing.T) {
	a := TmateServer{Host: "10.0.0.2", Port: 10022, RSAFingerprint: "a"}
	b := TmateServer{Host: "10.0.0.1", Port: 10022}
	dup := TmateServer{Host: "10.0.0.2", Port: 10022, RSAFingerprint: "other"}
	got := SortTmateServers([]TmateServer{a, b, dup})
	if want := []TmateServer{b, a}; !reflect.DeepEqual(got, want) {
		t.Fatalf("sorted %+v, want %+v", got, want)
	}
}
