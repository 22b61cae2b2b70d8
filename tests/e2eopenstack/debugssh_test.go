package e2eopenstack

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// Real fingerprints, as ssh-keygen -l -E sha256 prints them.
const (
	tmateRSA     = "SHA256:aZyJL5q5TD/FqtKgRRlXhZiJoRNASJw9IPhPLHHx/1A"
	tmateED25519 = "SHA256:Q0cJAgy/QhMms3Z0VxDde1EGXvGAEt+dIa7kZqMUMDY"
)

// On the real OpenStack bed through the charm: related to a
// tmate-ssh-server unit inside the denylist, the runners' security group
// lets them reach the server's port, and the servers made after the
// relation carry the server in their user-data's environment file; a
// departed unit takes its rule away.
func TestDebugSSHRelationOnOpenStack(t *testing.T) {
	bed := deployOnOpenStack(t, "ostmate", nil)
	u, compute, prefix := bed.unit, bed.compute, bed.prefix
	adminYAML, adminName := openstacktest.AdminCloud(t)
	provider, eo := openstacktest.Connect(t, adminYAML, adminName)
	admin, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatal(err)
	}
	admin.Microversion = openstacktest.ComputeMicroversion // shows user_data, to admins

	if r := u.Configure(map[string]any{"denylist": "10.0.0.0/8"}); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	waitFor(t, 2*time.Minute, "2 ACTIVE runner servers", func() bool {
		u.Action("reconcile-runners", nil)
		return len(activeServers(t, compute, prefix)) == 2
	})
	before := activeServers(t, compute, prefix)

	t.Log("related: the idle servers are replaced by servers whose user-data has the tmate server")
	id := u.Relate("debug-ssh", "tmate-ssh-server", nil, map[string]map[string]string{"tmate-ssh-server/0": {
		"host": "10.1.2.3", "port": "10022", "rsa_fingerprint": tmateRSA, "ed25519_fingerprint": tmateED25519,
	}})
	var fresh []string
	waitFor(t, 3*time.Minute, "2 new ACTIVE runner servers", func() bool {
		u.Action("reconcile-runners", nil)
		fresh = activeServers(t, compute, prefix)
		return len(fresh) == 2 && !overlaps(before, fresh)
	})
	want := []string{"TMATE_SERVER_HOST='10.1.2.3'\n", "TMATE_SERVER_PORT='10022'\n",
		"TMATE_SERVER_RSA_FINGERPRINT='" + tmateRSA + "'\n", "TMATE_SERVER_ED25519_FINGERPRINT='" + tmateED25519 + "'\n"}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, s := range listServers(t, compute, prefix) {
		if !slices.Contains(fresh, s.Name) {
			continue
		}
		got, err := servers.Get(ctx, admin, s.ID).Extract()
		if err != nil || got.Userdata == nil {
			t.Fatalf("cannot read %s's user-data as admin: %v", s.Name, err)
		}
		script, err := base64.StdEncoding.DecodeString(*got.Userdata)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range want {
			if !strings.Contains(string(script), line) {
				t.Errorf("%s's user-data lacks %q", s.Name, line)
			}
		}
	}
	group := prefix + "runners"
	tmateRule := func() []string {
		t.Helper()
		ids := securityGroupIDs(t, bed.network, group)
		if len(ids) != 1 {
			t.Fatalf("%d security groups %s, want 1", len(ids), group)
		}
		// Its own time: the runners' boots and replacements take minutes before and between.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pages, err := rules.List(bed.network, rules.ListOpts{SecGroupID: ids[0], Direction: string(rules.DirEgress)}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		list, err := rules.ExtractRules(pages)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range list {
			if r.Protocol != "" {
				out = append(out, fmt.Sprintf("%s %s %d-%d", r.Protocol, r.RemoteIPPrefix, r.PortRangeMin, r.PortRangeMax))
			}
		}
		return out
	}
	if got := tmateRule(); !slices.Equal(got, []string{"tcp 10.1.2.3/32 10022-10022"}) {
		t.Errorf("the security group's port rules = %v, want the tmate server's", got)
	}

	t.Log("the unit departs: its rule goes")
	if r := u.DepartRemoteUnit(id, "tmate-ssh-server/0"); r.Code != 0 {
		t.Fatalf("debug-ssh-relation-departed: exit %d: %s", r.Code, r.Stderr)
	}
	waitFor(t, 2*time.Minute, "the tmate rule to go", func() bool {
		u.Action("reconcile-runners", nil)
		return len(tmateRule()) == 0
	})
	bed.removeLeavesNothing(t)
}
