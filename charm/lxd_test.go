package charm

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestLXDInstaller(t *testing.T) {
	tests := []struct {
		name       string
		present    bool
		snapErr    error
		appears    bool // the socket answers after the install
		wantSnap   bool
		wantErrHas string
	}{
		{name: "already there", present: true},
		{name: "installed from the snap", wantSnap: true, appears: true},
		{name: "no snap command", snapErr: errNoSnap, wantSnap: true, wantErrHas: "there is no snap command"},
		{name: "snap install fails", snapErr: errors.New("store unreachable"), wantSnap: true, wantErrHas: "cannot install the LXD snap (store unreachable)"},
		{name: "daemon silent after install", wantSnap: true, wantErrHas: "does not answer"},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			installed := false
			var calls []string
			i := &lxdInstaller{
				find: func() error {
					if test.present || (installed && test.appears) {
						return nil
					}
					return errors.New("no LXD socket")
				},
				snap: func(_ context.Context, args ...string) error {
					calls = append(calls, strings.Join(args, " "))
					installed = test.snapErr == nil
					return test.snapErr
				},
			}
			err := i.ensure(context.Background())
			if (len(calls) > 0) != test.wantSnap || (test.wantSnap && calls[0] != "install lxd") {
				t.Errorf("snap calls %v, want snap: %v", calls, test.wantSnap)
			}
			if test.wantErrHas == "" && err != nil || test.wantErrHas != "" && (err == nil || !strings.Contains(err.Error(), test.wantErrHas)) {
				t.Errorf("error %v, want %q", err, test.wantErrHas)
			}
		})
	}
}
