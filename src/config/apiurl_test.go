package config

import (
	"strings"
	"testing"
)

func TestParseAPIURL(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "", want: "https://api.github.com/"},
		{in: "https://github.com", want: "https://api.github.com/"},
		{in: "https://github.com/", want: "https://api.github.com/"},
		{in: "https://api.github.com/", want: "https://api.github.com/"},
		{in: "https://ghes.example.com", want: "https://ghes.example.com/api/v3/"},
		{in: "https://ghes.example.com/", want: "https://ghes.example.com/api/v3/"},
		{in: "https://ghes.example.com/api/v3", want: "https://ghes.example.com/api/v3/"},
		{in: "https://ghes.example.com/api/v3/", want: "https://ghes.example.com/api/v3/"},
		{in: "https://ghes.example.com:8443/api/v3", want: "https://ghes.example.com:8443/api/v3/"},
		{in: "https://octocorp.ghe.com", want: "https://api.octocorp.ghe.com/"},
		{in: "https://api.octocorp.ghe.com/", want: "https://api.octocorp.ghe.com/"},
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080/api/v3/"},
		{in: "http://localhost:8080/api/v3/", want: "http://localhost:8080/api/v3/"},
		{in: "http://[::1]:8080/", want: "http://[::1]:8080/api/v3/"},
		{in: "http://ghes.example.com", wantErr: "must use https"},
		{in: "http://192.0.2.1:8080/", wantErr: "must use https"},
		{in: "ftp://ghes.example.com", wantErr: "must use https"},
		{in: "ghes.example.com", wantErr: "is not a URL like https://HOST"},
		{in: "https://ghes.example.com/some/where", wantErr: "is not a URL like https://HOST"},
		{in: "https://github.com/canonical", wantErr: "github.com takes none"},
		{in: "https://octocorp.ghe.com/x", wantErr: "ghe.com takes none"},
		{in: "https://ghes.example.com/?q=1", wantErr: "must not contain credentials, a query"},
		{in: "https://user:hunter2@ghes.example.com", wantErr: "must not contain credentials"},
		{in: "https://user:hunter2@", wantErr: "is not a URL"},
		{in: "https://u:hunter2 x@host", wantErr: "is not a URL"},
	}
	for _, tt := range tests {
		got, err := ParseAPIURL(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseAPIURL(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("ParseAPIURL(%q) error echoes the password: %v", tt.in, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseAPIURL(%q): %v", tt.in, err)
			continue
		}
		if got.String() != tt.want {
			t.Errorf("ParseAPIURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
