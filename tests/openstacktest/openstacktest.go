// Package openstacktest connects tests to the real, loopback OpenStack test bed that
// tests/openstack/setup.sh stands up (Keystone, Glance, Placement, Nova with the fake virt
// driver, Neutron; OpenStack Zed from Debian 12).
//
// A test asks for the bed with Cloud (or AdminCloud, AppCredCloud). When the bed is not there,
// the test fails if CI=true (in CI a test whose real part is missing must never pass by
// skipping) and is skipped otherwise; either way the message says how to set the bed up.
//
//	cloudsYAML, cloudName := openstacktest.Cloud(t)
//	provider, endpointOpts := openstacktest.Connect(t, cloudsYAML, cloudName)
//	compute, err := openstack.NewComputeV2(provider, endpointOpts)
package openstacktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/config"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
)

// Names of what setup.sh creates. They must match tests/openstack/setup.sh.
const (
	// DefaultCloudsYAMLPath is where setup.sh writes clouds.yaml (mode 0600).
	DefaultCloudsYAMLPath = "/etc/openstack-test/clouds.yaml"
	// CloudsYAMLEnv, when set, names another clouds.yaml (setup.sh honours it too).
	CloudsYAMLEnv = "OPENSTACK_TEST_CLOUDS_YAML"

	// CloudName is the non-admin test user (member of ProjectName), password auth.
	CloudName = "testcloud"
	// AppCredCloudName is the same user through an application credential.
	AppCredCloudName = "testcloud-appcred"
	// AdminCloudName is the cloud admin, for admin-only calls (os-resetState,
	// reading OS-EXT-SRV-ATTR:user_data).
	AdminCloudName = "testcloud-admin"

	// ProjectName is the test project; FlavorName, ImageName and NetworkName live in it or
	// are public.
	ProjectName = "runner-test"
	// FlavorName: 2 vCPUs, 2 GiB RAM, 10 GiB disk.
	FlavorName = "runner-small"
	// UnschedulableFlavorName asks for more vCPUs than the fake hypervisor has: a server
	// created with it goes to ERROR (NoValidHost) without any admin call.
	UnschedulableFlavorName = "runner-unschedulable"
	// ImageName is a public 64 KiB raw image (the fake driver boots nothing).
	ImageName = "runner-image"
	// NetworkName is a network of ProjectName with one IPv4 subnet, 10.10.0.0/24.
	NetworkName = "runner-net"

	// SetupScript is what sets the bed up, relative to the repository root.
	SetupScript = "tests/openstack/setup.sh"

	// ComputeMicroversion is the newest compute API microversion of the bed's Nova (Zed).
	// Microversion 2.3 or later is what shows OS-EXT-SRV-ATTR:user_data (to admins).
	ComputeMicroversion = "2.93"
)

// probeTimeout bounds the check that Keystone answers; requestTimeout bounds every HTTP call of
// the clients Connect returns.
const (
	probeTimeout   = 5 * time.Second
	requestTimeout = 60 * time.Second
)

// CloudsYAMLPath returns the path of the bed's clouds.yaml: $OPENSTACK_TEST_CLOUDS_YAML or
// DefaultCloudsYAMLPath.
func CloudsYAMLPath() string {
	if p := os.Getenv(CloudsYAMLEnv); p != "" {
		return p
	}
	return DefaultCloudsYAMLPath
}

// Cloud returns the bed's clouds.yaml and the name of the non-admin test cloud in it. It fails
// the test if the bed is unavailable and CI=true, and skips it otherwise.
func Cloud(t testing.TB) (cloudsYAML []byte, cloudName string) {
	t.Helper()
	return bed(t, CloudName), CloudName
}

// AdminCloud is like Cloud, for the admin cloud.
func AdminCloud(t testing.TB) (cloudsYAML []byte, cloudName string) {
	t.Helper()
	return bed(t, AdminCloudName), AdminCloudName
}

// AppCredCloud is like Cloud, for the test user authenticating with an application credential.
func AppCredCloud(t testing.TB) (cloudsYAML []byte, cloudName string) {
	t.Helper()
	return bed(t, AppCredCloudName), AppCredCloudName
}

// bed returns clouds.yaml after checking that it holds cloudName and that its Keystone answers.
func bed(t testing.TB, cloudName string) []byte {
	t.Helper()
	data, err := check(cloudName)
	if err != nil {
		msg := fmt.Sprintf("OpenStack test bed unavailable: %v (set it up with: sudo bash %s)", err, SetupScript)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return data
}

func check(cloudName string) ([]byte, error) {
	path := CloudsYAMLPath()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read clouds.yaml: %w", err)
	}
	ao, _, err := parse(data, cloudName)
	if err != nil {
		return nil, fmt.Errorf("cannot use %s: %w", path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ao.IdentityEndpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot probe Keystone: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach Keystone: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return nil, fmt.Errorf("cannot use Keystone at %s: %s", ao.IdentityEndpoint, resp.Status)
	}
	return data, nil
}

func parse(cloudsYAML []byte, cloudName string) (gophercloud.AuthOptions, gophercloud.EndpointOpts, error) {
	ao, eo, _, err := clouds.Parse(clouds.WithCloudsYAML(bytes.NewReader(cloudsYAML)), clouds.WithCloudName(cloudName))
	if err != nil {
		return gophercloud.AuthOptions{}, gophercloud.EndpointOpts{}, err
	}
	if ao.IdentityEndpoint == "" {
		return gophercloud.AuthOptions{}, gophercloud.EndpointOpts{}, fmt.Errorf("cloud %q has no auth_url", cloudName)
	}
	return ao, eo, nil
}

// Connect authenticates as cloudName from cloudsYAML and returns the provider client and the
// endpoint options to pass to openstack.NewComputeV2 and friends. Every HTTP request it makes
// times out after a minute. It fails the test on error.
func Connect(t testing.TB, cloudsYAML []byte, cloudName string) (*gophercloud.ProviderClient, gophercloud.EndpointOpts) {
	t.Helper()
	ao, eo, err := parse(cloudsYAML, cloudName)
	if err != nil {
		t.Fatalf("cannot parse clouds.yaml: %v", err)
	}
	// clouds.Parse leaves AllowReauth off: without it a client dies when its token expires
	// (1 h on the bed). Long tests and the manager want it on.
	ao.AllowReauth = true
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	provider, err := config.NewProviderClient(ctx, ao, config.WithHTTPClient(http.Client{Timeout: requestTimeout}))
	if err != nil {
		t.Fatalf("cannot authenticate to %s as %q: %v", ao.IdentityEndpoint, cloudName, err)
	}
	return provider, eo
}

// UniqueName returns prefix followed by a random suffix, for names of test resources that must
// not collide with a parallel or earlier run's.
func UniqueName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// pollInterval is how often WaitForServerStatus and WaitForServerDeleted ask Nova.
const pollInterval = 500 * time.Millisecond

// WaitForServerStatus polls the server until its status is want, and returns the server. It
// returns an error early if the server goes to ERROR while waiting for another status, and when
// timeout passes.
func WaitForServerStatus(ctx context.Context, compute *gophercloud.ServiceClient, id, want string, timeout time.Duration) (*servers.Server, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := ""
	for {
		srv, err := servers.Get(ctx, compute, id).Extract()
		if err != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("cannot get server %s: %w", id, err)
		}
		if err == nil {
			last = srv.Status
			if srv.Status == want {
				return srv, nil
			}
			if srv.Status == "ERROR" {
				return srv, fmt.Errorf("cannot wait for server %s to be %s: it is ERROR (fault: %d %s)",
					id, want, srv.Fault.Code, srv.Fault.Message)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cannot wait for server %s to be %s: still %q after %v", id, want, last, timeout)
		case <-time.After(pollInterval):
		}
	}
}

// WaitForServerDeleted polls until Nova answers 404 for the server, or timeout passes.
func WaitForServerDeleted(ctx context.Context, compute *gophercloud.ServiceClient, id string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		_, err := servers.Get(ctx, compute, id).Extract()
		if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
			return nil
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("cannot get server %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot wait for server %s to be deleted: still there after %v", id, timeout)
		case <-time.After(pollInterval):
		}
	}
}

// Fixtures holds the IDs of what setup.sh created, as seen by one cloud user.
type Fixtures struct {
	FlavorID              string
	UnschedulableFlavorID string
	ImageID               string
	NetworkID             string
}

// LookupFixtures finds the IDs of FlavorName, UnschedulableFlavorName, ImageName and
// NetworkName. It fails the test if one is missing (re-run setup.sh).
func LookupFixtures(t testing.TB, provider *gophercloud.ProviderClient, eo gophercloud.EndpointOpts) Fixtures {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf(format+" (re-run %s)", append(args, SetupScript)...)
	}
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		fail("cannot find the compute endpoint: %v", err)
	}
	imageClient, err := openstack.NewImageV2(provider, eo)
	if err != nil {
		fail("cannot find the image endpoint: %v", err)
	}
	network, err := openstack.NewNetworkV2(provider, eo)
	if err != nil {
		fail("cannot find the network endpoint: %v", err)
	}
	var f Fixtures

	pages, err := flavors.ListDetail(compute, nil).AllPages(ctx)
	if err != nil {
		fail("cannot list flavors: %v", err)
	}
	fl, err := flavors.ExtractFlavors(pages)
	if err != nil {
		fail("cannot list flavors: %v", err)
	}
	for _, flavor := range fl {
		switch flavor.Name {
		case FlavorName:
			f.FlavorID = flavor.ID
		case UnschedulableFlavorName:
			f.UnschedulableFlavorID = flavor.ID
		}
	}
	if f.FlavorID == "" || f.UnschedulableFlavorID == "" {
		fail("cannot find flavors %q and %q", FlavorName, UnschedulableFlavorName)
	}

	pages, err = images.List(imageClient, images.ListOpts{Name: ImageName, Status: images.ImageStatusActive}).AllPages(ctx)
	if err != nil {
		fail("cannot list images: %v", err)
	}
	il, err := images.ExtractImages(pages)
	if err != nil || len(il) == 0 {
		fail("cannot find active image %q (%v)", ImageName, err)
	}
	f.ImageID = il[0].ID

	pages, err = networks.List(network, networks.ListOpts{Name: NetworkName}).AllPages(ctx)
	if err != nil {
		fail("cannot list networks: %v", err)
	}
	nl, err := networks.ExtractNetworks(pages)
	if err != nil || len(nl) != 1 {
		fail("cannot find exactly one network %q (found %d, %v)", NetworkName, len(nl), err)
	}
	f.NetworkID = nl[0].ID
	return f
}

// CleanupServers registers a t.Cleanup that deletes every server of the client's project whose
// name starts with prefix (in any state, ERROR included) and waits until Nova confirms they are
// gone. Use a prefix from UniqueName so parallel tests do not delete each other's servers.
func CleanupServers(t testing.TB, compute *gophercloud.ServiceClient, prefix string) {
	t.Helper()
	if prefix == "" {
		t.Fatal("internal error: CleanupServers needs a prefix")
	}
	t.Cleanup(func() {
		// t.Context() is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Nova's name filter is a regular expression.
		pages, err := servers.List(compute, servers.ListOpts{Name: "^" + regexp.QuoteMeta(prefix)}).AllPages(ctx)
		if err != nil {
			t.Errorf("cannot list servers to clean up: %v", err)
			return
		}
		list, err := servers.ExtractServers(pages)
		if err != nil {
			t.Errorf("cannot list servers to clean up: %v", err)
			return
		}
		for _, srv := range list {
			err := servers.Delete(ctx, compute, srv.ID).ExtractErr()
			if err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
				t.Errorf("cannot delete server %s (%s): %v", srv.Name, srv.ID, err)
			}
		}
		for _, srv := range list {
			if err := WaitForServerDeleted(ctx, compute, srv.ID, time.Minute); err != nil {
				t.Errorf("cannot clean up: %v", err)
			}
		}
	})
}
