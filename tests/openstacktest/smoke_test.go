package openstacktest_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// Bounds of the waits below. On the bed a server is ACTIVE 3-6 s after the POST; the first one
// after start-up takes up to ~25 s while the services warm up.
const (
	buildTimeout  = 3 * time.Minute
	actionTimeout = time.Minute
	deleteTimeout = time.Minute
)

func computeClient(t *testing.T, cloudsYAML []byte, cloudName, microversion string) *gophercloud.ServiceClient {
	t.Helper()
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatalf("cannot find the compute endpoint: %v", err)
	}
	compute.Microversion = microversion
	return compute
}

// TestServerLifecycle drives one server through what the manager does to runners: create with
// metadata, config drive and user-data, ACTIVE, read back, SHUTOFF, ERROR, delete.
func TestServerLifecycle(t *testing.T) {
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	adminYAML, adminName := openstacktest.AdminCloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	fixtures := openstacktest.LookupFixtures(t, provider, eo)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatalf("cannot find the compute endpoint: %v", err)
	}
	compute.Microversion = openstacktest.ComputeMicroversion
	admin := computeClient(t, adminYAML, adminName, openstacktest.ComputeMicroversion)

	prefix := openstacktest.UniqueName("ostest-") + "-"
	openstacktest.CleanupServers(t, compute, prefix)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()

	userData := []byte("#cloud-config\nruncmd:\n  - echo smoke test of tests/openstacktest\n")
	metadata := map[string]string{"runner-owner": "openstacktest", "runner-state": "creating"}
	configDrive := true
	start := time.Now()
	srv, err := servers.Create(ctx, compute, servers.CreateOpts{
		Name:        prefix + "0",
		FlavorRef:   fixtures.FlavorID,
		ImageRef:    fixtures.ImageID,
		Networks:    []servers.Network{{UUID: fixtures.NetworkID}},
		Metadata:    metadata,
		ConfigDrive: &configDrive,
		UserData:    userData,
	}, nil).Extract()
	if err != nil {
		t.Fatalf("cannot create server: %v", err)
	}
	posted := time.Since(start)
	srv, err = openstacktest.WaitForServerStatus(ctx, compute, srv.ID, "ACTIVE", buildTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server %s ACTIVE %.2fs after create (POST took %.2fs)", srv.ID, time.Since(start).Seconds(), posted.Seconds())

	for k, v := range metadata {
		if srv.Metadata[k] != v {
			t.Errorf("metadata %q = %q, want %q", k, srv.Metadata[k], v)
		}
	}
	if !srv.ConfigDrive {
		t.Errorf("config_drive is false, want true")
	}
	if len(srv.Addresses) == 0 {
		t.Errorf("server has no addresses, want one on %s", openstacktest.NetworkName)
	}

	// OS-EXT-SRV-ATTR:user_data (microversion >= 2.3) is admin-only under Nova's default policy
	// (os_compute_api:os-extended-server-attributes): the project's own user does not get it.
	if srv.Userdata != nil {
		t.Logf("user_data IS visible to the non-admin user at microversion %s", compute.Microversion)
	} else {
		t.Logf("user_data is not visible to the non-admin user at microversion %s (admin-only policy)", compute.Microversion)
	}
	for _, mv := range []string{"2.3", openstacktest.ComputeMicroversion} {
		admin.Microversion = mv
		got, err := servers.Get(ctx, admin, srv.ID).Extract()
		if err != nil {
			t.Fatalf("cannot get server as admin at microversion %s: %v", mv, err)
		}
		if got.Userdata == nil {
			t.Fatalf("admin at microversion %s: no OS-EXT-SRV-ATTR:user_data", mv)
		}
		decoded, err := base64.StdEncoding.DecodeString(*got.Userdata)
		if err != nil {
			t.Fatalf("admin at microversion %s: cannot decode user_data: %v", mv, err)
		}
		if string(decoded) != string(userData) {
			t.Fatalf("admin at microversion %s: user_data = %q, want %q", mv, decoded, userData)
		}
	}
	admin.Microversion = openstacktest.ComputeMicroversion

	// Metadata is how the manager tracks runners: it must be writable after creation.
	_, err = servers.UpdateMetadata(ctx, compute, srv.ID, servers.MetadataOpts{"runner-state": "idle"}).Extract()
	if err != nil {
		t.Fatalf("cannot update metadata: %v", err)
	}

	if err := servers.Stop(ctx, compute, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("cannot stop server: %v", err)
	}
	if _, err := openstacktest.WaitForServerStatus(ctx, compute, srv.ID, "SHUTOFF", actionTimeout); err != nil {
		t.Fatal(err)
	}

	// Forcing ERROR is an admin action (os-resetState); the project user gets 403.
	err = servers.ResetState(ctx, compute, srv.ID, servers.StateError).ExtractErr()
	if !gophercloud.ResponseCodeIs(err, http.StatusForbidden) {
		t.Errorf("os-resetState as the project user: got %v, want 403", err)
	}
	if err := servers.ResetState(ctx, admin, srv.ID, servers.StateError).ExtractErr(); err != nil {
		t.Fatalf("cannot reset server state to error as admin: %v", err)
	}
	if _, err := openstacktest.WaitForServerStatus(ctx, compute, srv.ID, "ERROR", actionTimeout); err != nil {
		t.Fatal(err)
	}

	// The project user can delete its server in ERROR.
	start = time.Now()
	if err := servers.Delete(ctx, compute, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("cannot delete server: %v", err)
	}
	if err := openstacktest.WaitForServerDeleted(ctx, compute, srv.ID, deleteTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("server %s gone %.2fs after delete", srv.ID, time.Since(start).Seconds())
}

// TestParallelServers creates a few servers at once, as the manager does when it scales up.
func TestParallelServers(t *testing.T) {
	const n = 4
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	fixtures := openstacktest.LookupFixtures(t, provider, eo)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatalf("cannot find the compute endpoint: %v", err)
	}
	compute.Microversion = openstacktest.ComputeMicroversion
	prefix := openstacktest.UniqueName("ostest-") + "-"
	openstacktest.CleanupServers(t, compute, prefix)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			srv, err := servers.Create(ctx, compute, servers.CreateOpts{
				Name:      fmt.Sprintf("%s%d", prefix, i),
				FlavorRef: fixtures.FlavorID,
				ImageRef:  fixtures.ImageID,
				Networks:  []servers.Network{{UUID: fixtures.NetworkID}},
				Metadata:  map[string]string{"runner-index": fmt.Sprint(i)},
			}, nil).Extract()
			if err != nil {
				errs <- fmt.Errorf("cannot create server %d: %w", i, err)
				return
			}
			_, err = openstacktest.WaitForServerStatus(ctx, compute, srv.ID, "ACTIVE", buildTimeout)
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d servers ACTIVE %.2fs after the first create", n, time.Since(start).Seconds())

	pages, err := servers.List(compute, servers.ListOpts{Name: "^" + prefix}).AllPages(ctx)
	if err != nil {
		t.Fatalf("cannot list servers: %v", err)
	}
	list, err := servers.ExtractServers(pages)
	if err != nil {
		t.Fatalf("cannot list servers: %v", err)
	}
	if len(list) != n {
		t.Fatalf("listed %d servers named %s*, want %d", len(list), prefix, n)
	}
	for _, srv := range list {
		if srv.Metadata["runner-index"] == "" {
			t.Errorf("server %s: no runner-index in list metadata %v", srv.Name, srv.Metadata)
		}
	}
	// Deletion and the wait for 404 are CleanupServers' job.
}

// TestUnschedulableServerGoesToError checks the non-admin way to get a server in ERROR: a flavor
// no host can take makes the scheduler fail it with NoValidHost.
func TestUnschedulableServerGoesToError(t *testing.T) {
	cloudsYAML, cloudName := openstacktest.Cloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	fixtures := openstacktest.LookupFixtures(t, provider, eo)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatalf("cannot find the compute endpoint: %v", err)
	}
	compute.Microversion = openstacktest.ComputeMicroversion
	prefix := openstacktest.UniqueName("ostest-") + "-"
	openstacktest.CleanupServers(t, compute, prefix)

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	srv, err := servers.Create(ctx, compute, servers.CreateOpts{
		Name:      prefix + "0",
		FlavorRef: fixtures.UnschedulableFlavorID,
		ImageRef:  fixtures.ImageID,
		Networks:  []servers.Network{{UUID: fixtures.NetworkID}},
	}, nil).Extract()
	if err != nil {
		t.Fatalf("cannot create server: %v", err)
	}
	got, err := openstacktest.WaitForServerStatus(ctx, compute, srv.ID, "ERROR", buildTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got.Fault.Message, "No valid host") {
		t.Errorf("fault = %d %q, want No valid host", got.Fault.Code, got.Fault.Message)
	}
	if err := servers.Delete(ctx, compute, srv.ID).ExtractErr(); err != nil {
		t.Fatalf("cannot delete server: %v", err)
	}
	if err := openstacktest.WaitForServerDeleted(ctx, compute, srv.ID, deleteTimeout); err != nil {
		t.Fatal(err)
	}
}

// TestAppCredential checks the application-credential cloud: same project, no password.
func TestAppCredential(t *testing.T) {
	cloudsYAML, cloudName := openstacktest.AppCredCloud(t)
	provider, eo := openstacktest.Connect(t, cloudsYAML, cloudName)
	openstacktest.LookupFixtures(t, provider, eo)
	compute, err := openstack.NewComputeV2(provider, eo)
	if err != nil {
		t.Fatalf("cannot find the compute endpoint: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if _, err := servers.List(compute, nil).AllPages(ctx); err != nil {
		t.Fatalf("cannot list servers with the application credential: %v", err)
	}
}

// TestCloudSkipsOrFails checks the contract of Cloud when the bed is missing: skip locally, fail
// when CI=true.
func TestCloudSkipsOrFails(t *testing.T) {
	t.Setenv(openstacktest.CloudsYAMLEnv, t.TempDir()+"/missing.yaml")
	for _, ci := range []string{"", "true"} {
		t.Setenv("CI", ci)
		ft := &fakeT{TB: t}
		done := make(chan struct{})
		// Fatal and Skip end the calling goroutine (runtime.Goexit), like in a real test.
		go func() {
			defer close(done)
			openstacktest.Cloud(ft)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Cloud did not return")
		}
		if ci == "true" && (!ft.failed || ft.skipped) {
			t.Errorf("CI=true: failed=%v skipped=%v, want a failure", ft.failed, ft.skipped)
		}
		if ci == "" && (ft.failed || !ft.skipped) {
			t.Errorf("CI unset: failed=%v skipped=%v, want a skip", ft.failed, ft.skipped)
		}
		if !strings.Contains(ft.msg, openstacktest.SetupScript) {
			t.Errorf("message %q does not name %s", ft.msg, openstacktest.SetupScript)
		}
	}
}

// fakeT records Fatal and Skip instead of ending the real test.
type fakeT struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

func (f *fakeT) Skip(args ...any) {
	f.skipped, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
