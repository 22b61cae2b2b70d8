package openstack

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// A server Canonical's Python charm made for the unit goes with the
// keypair it made for it (named as the server); another application's
// server of the Python naming, and its keypair, stay.
func TestPythonCharmServerGoesWithItsKeypair(t *testing.T) {
	t.Parallel()
	b := requireBed(t)
	c := newCloud(t, b, testConfig(b))
	id := c.cfg.Identity
	openstacktest.CleanupServers(t, b.compute, id.App+"-")
	ours := id.LegacyPrefix() + "-n-" + randomSuffix()
	theirs := id.App + "x-0-n-" + randomSuffix() // another application, whose name starts like ours
	openstacktest.CleanupServers(t, b.compute, id.App+"x-")
	for _, name := range []string{ours, theirs} {
		makeServerWithKeypair(t, b, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, name := range []string{ours, theirs} {
		if err := c.Delete(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if serverNamed(t, b, ours) != nil {
		t.Error("the Python charm's server is still there")
	}
	if keypairExists(t, b, ours) {
		t.Error("the Python charm's keypair for its server is still there")
	}
	if serverNamed(t, b, theirs) == nil || !keypairExists(t, b, theirs) {
		t.Error("another application's server or keypair was deleted")
	}
}

func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func makeServerWithKeypair(t *testing.T, b *bed, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := keypairs.Create(ctx, b.compute, keypairs.CreateOpts{Name: name, PublicKey: testPublicKey(t)}).Extract(); err != nil {
		t.Fatalf("cannot create keypair %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		keypairs.Delete(ctx, b.compute, name, nil)
	})
	opts := keypairs.CreateOptsExt{
		CreateOptsBuilder: servers.CreateOpts{Name: name, FlavorRef: b.fixtures.FlavorID, ImageRef: b.fixtures.ImageID, Networks: "none",
			Metadata: map[string]string{"platform_name": "github", "runner_id": "51"}},
		KeyName: name,
	}
	if _, err := servers.Create(ctx, b.compute, opts, nil).Extract(); err != nil {
		t.Fatalf("cannot create server %s: %v", name, err)
	}
}

// testPublicKey is an OpenSSH ed25519 public key (Nova wants one).
func testPublicKey(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	field := func(b []byte) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...) }
	wire := append(field([]byte("ssh-ed25519")), field(pub)...)
	return "ssh-ed25519 " + base64.StdEncoding.EncodeToString(wire)
}

func keypairExists(t *testing.T, b *bed, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := keypairs.Get(ctx, b.compute, name, nil).Extract()
	if err != nil && !errors.Is(err, gophercloud.ErrResourceNotFound{}) && !gophercloud.ResponseCodeIs(err, 404) {
		t.Fatal(err)
	}
	return err == nil
}
