package charm

import (
	"context"
	"maps"
	"slices"

	"github.com/canonical/github-runner-charm/src/config"
)

// The debug-ssh relation (interface debug-ssh) with tmate-ssh-server: each
// of its units publishes where its tmate server listens (host, port) and
// the fingerprints of its host keys (rsa_fingerprint, ed25519_fingerprint,
// "SHA256:…"). Each new runner gets one of the servers, chosen at random
// by the manager, as TMATE_SERVER_* in its job environment, where
// canonical/action-tmate reads it; the runners' firewall (LXD's denylist
// ACL, OpenStack's security group) lets them reach it.
const debugSSHEndpoint = "debug-ssh"

// tmateKeys are the keys a tmate-ssh-server unit publishes.
var tmateKeys = []string{"host", "port", "rsa_fingerprint", "ed25519_fingerprint"}

// tmateServers reads every debug-ssh relation's units: their servers,
// sorted, once each (a repeated address keeps its first unit's, by
// relation and unit name). A unit that has published none of the keys yet
// is left out quietly. A unit whose data breaks a rule (src/config's
// ParseTmateServer) is left out with a warning in the unit's log, and the
// unit is not Blocked: the data is another charm's, which no `juju config`
// of this one can fix, and the runners work without a debug server (the
// other units' servers still serve).
func (c *Charm) tmateServers(ctx context.Context) ([]config.TmateServer, error) {
	rels, err := c.relations(ctx, debugSSHEndpoint)
	if err != nil {
		return nil, err
	}
	var servers []config.TmateServer
	for _, rel := range rels {
		for _, unit := range slices.Sorted(maps.Keys(rel.Units)) {
			data := rel.Units[unit]
			if !slices.ContainsFunc(tmateKeys, func(k string) bool { return data[k] != "" }) {
				c.Log.Debug("the tmate server has published nothing yet", "relation", rel.ID, "remote-unit", unit)
				continue
			}
			s, err := config.ParseTmateServer(data)
			if err != nil {
				c.Log.Warn("leaving out a tmate server whose relation data is not valid (the tmate-ssh-server unit's to fix)",
					"relation", rel.ID, "remote-unit", unit, "problem", err.Error())
				continue
			}
			if slices.ContainsFunc(servers, func(o config.TmateServer) bool { return o.Address() == s.Address() }) {
				c.Log.Warn("leaving out a tmate server of an address another unit has published already",
					"relation", rel.ID, "remote-unit", unit, "address", s.Address())
				continue
			}
			servers = append(servers, s)
		}
	}
	return config.SortTmateServers(servers), nil
}
