package e2eopenstack

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// A change of path and token drains the old path's idle runners at
// config-changed (servers, their ports and their GitHub records go), keeps
// its busy one until its job ends and then removes its server, asking the
// old path with the old token (the new one cannot see it), while the new
// path gets its runners; then the old token is forgotten.
func TestPathChangeDrainsTheOldPath(t *testing.T) {
	start := time.Now()
	bed := deployOnOpenStack(t, "osdrn", nil)
	u, fake, compute, prefix := bed.unit, bed.github, bed.compute, bed.prefix
	const newPath, newToken = "canonical/elsewhere", "ghp_OPENSTACK_E2E_NEW_TOKEN_0123456789"
	// Each token reaches its own repository only: the old one stays valid.
	fake.AddToken(fakegithub.Token{Value: newToken, Scope: newPath})

	waitFor(t, 3*time.Minute, "2 ACTIVE runner servers in the old path, online", func() bool {
		u.Action("reconcile-runners", nil)
		return len(activeServers(t, compute, prefix)) == 2 && len(onlineOf(fake, prefix)) == 2
	})
	idsOf := serverIDs(t, compute, prefix) // server name → ID
	records := fake.Runners(repo)
	busy, idle := records[0], records[1]
	job, err := fake.AssignJob(busy.ID, fakegithub.JobSpec{Command: heldJob})
	if err != nil {
		t.Fatal(err)
	}
	waitJobState(t, fake, job.ID, fakegithub.JobInProgress)
	for _, name := range []string{busy.Name, idle.Name} {
		if n := portsOf(t, bed.network, idsOf[name]); n == 0 {
			t.Fatalf("server %s has no port while it runs: the port check below would prove nothing", name)
		}
	}

	t.Logf("path %s → %s, and a new token, with %s busy and %s idle", repo, newPath, busy.Name, idle.Name)
	drainStart := time.Now()
	if r := u.Configure(map[string]any{"path": newPath, "token": newToken}); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	t.Logf("config-changed took %v", time.Since(drainStart).Round(time.Second))
	servers := allServers(t, compute, prefix)
	if _, ok := servers[idle.Name]; ok {
		t.Errorf("the idle runner's server %s outlived the path change", idle.Name)
	}
	if n := portsOf(t, bed.network, idsOf[idle.Name]); n != 0 {
		t.Errorf("%d ports of the idle runner's server %s left", n, idle.Name)
	}
	if _, ok := fake.Runner(idle.ID); ok {
		t.Errorf("the idle runner's GitHub record %s outlived the path change", idle.Name)
	}
	if servers[busy.Name] != "ACTIVE" {
		t.Errorf("the busy runner's server %s is %q after the path change, want ACTIVE (servers %v)", busy.Name, servers[busy.Name], servers)
	}

	t.Log("the new path gets its runners; the busy one keeps running")
	waitFor(t, 2*time.Minute, "2 ACTIVE runners in the new path", func() bool {
		u.Action("reconcile-runners", nil)
		servers := allServers(t, compute, prefix)
		fresh := runnersIn(fake, newPath, prefix)
		if len(fresh) != 2 {
			return false
		}
		for _, name := range fresh {
			if servers[name] != "ACTIVE" {
				return false
			}
		}
		return true
	})
	u.Action("reconcile-runners", nil)
	if s := allServers(t, compute, prefix); s[busy.Name] != "ACTIVE" {
		t.Errorf("the busy runner's server %s is %q while its job runs, want ACTIVE", busy.Name, s[busy.Name])
	}
	if r, ok := fake.Runner(busy.ID); !ok || !r.Busy {
		t.Errorf("the busy runner's record while its job runs: %+v, found %v", r, ok)
	}
	if j, _ := fake.Job(job.ID); j.State == fakegithub.JobCompleted {
		t.Errorf("the busy runner's job ended while it ran: %+v", j)
	}

	t.Log("the job ends, its runner powers off: the old path's last server and record go")
	bed.player.Exec(t, idsOf[busy.Name], "touch", releaseFile)
	if j := waitJob(t, fake, job.ID); j.ExitCode != 0 {
		t.Errorf("the busy runner's job: %+v", j)
	}
	waitFor(t, 2*time.Minute, "the busy runner's server to go", func() bool {
		u.Action("reconcile-runners", nil)
		_, ok := allServers(t, compute, prefix)[busy.Name]
		return !ok
	})
	if n := portsOf(t, bed.network, idsOf[busy.Name]); n != 0 {
		t.Errorf("%d ports of the busy runner's server %s left", n, busy.Name)
	}
	if left := runnersOf(fake, prefix); len(left) != 0 {
		t.Errorf("GitHub records left in the old path: %v", left)
	}
	if fresh := runnersIn(fake, newPath, prefix); len(fresh) != 2 {
		t.Errorf("GitHub records in the new path: %v, want 2", fresh)
	}
	if s := allServers(t, compute, prefix); len(s) != 2 {
		t.Errorf("servers after the old path's job ended: %v, want the new path's 2", s)
	}
	for _, d := range fake.Deletions() {
		if d.Scope == repo && d.Token != token {
			t.Errorf("the old path was asked to delete %s (%d) with another token than its own: answered %d", d.Name, d.RunnerID, d.Status)
		}
	}
	u.Action("reconcile-runners", nil)
	if files := filesHolding(t, u.StateDir(), token); len(files) > 0 {
		t.Errorf("the old token is still kept, in %v, with nothing of its path left", files)
	}
	t.Logf("run time %v", time.Since(start).Round(time.Second))
}

// heldJob is a job's command that runs until releaseFile exists in its
// runner's guest: a job kept busy as long as a test needs.
const (
	releaseFile = "/tmp/release-the-job"
	heldJob     = "while [ ! -e " + releaseFile + " ]; do sleep 1; done; echo released"
)

// waitJobState waits until the runner process has the job (in_progress) or
// it has ended.
func waitJobState(t *testing.T, fake *fakegithub.Server, id int64, state string) {
	t.Helper()
	waitFor(t, 2*time.Minute, "job state "+state, func() bool {
		j, _ := fake.Job(id)
		return j.State == state
	})
}

// stop and remove while the manager's own cycle (the one config-changed
// restarts it into) is creating servers leave nothing of the unit.
func TestRemoveWhileCreatingLeavesNothing(t *testing.T) {
	start := time.Now()
	bed := deployOnOpenStack(t, "osrmc", nil)
	u, fake, compute, prefix := bed.unit, bed.github, bed.compute, bed.prefix
	waitFor(t, 2*time.Minute, "2 ACTIVE runner servers", func() bool {
		u.Action("reconcile-runners", nil)
		return len(activeServers(t, compute, prefix)) == 2 && len(runnersOf(fake, prefix)) == 2
	})
	registered := fake.Count(fakegithub.RepoJITConfig)
	// More runners: the manager, restarted with the new config, creates
	// them in the cycle it starts with, not in an action.
	if r := u.Configure(map[string]any{"virtual-machines": 6}); r.Code != 0 {
		t.Fatalf("config-changed: exit %d: %s", r.Code, r.Stderr)
	}
	creating := func() bool {
		return fake.Count(fakegithub.RepoJITConfig) > registered && len(activeServers(t, compute, prefix)) < 6
	}
	deadline := time.Now().Add(time.Minute)
	for !creating() {
		if time.Now().After(deadline) {
			t.Fatalf("no cycle creating servers within a minute (servers %v)", allServers(t, compute, prefix))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("removing the unit while creating: servers %v, %d runners registered", allServers(t, compute, prefix), fake.Count(fakegithub.RepoJITConfig)-registered)
	bed.removeLeavesNothing(t)
	t.Logf("run time %v", time.Since(start).Round(time.Second))
}

// removeLeavesNothing runs stop and remove and checks that nothing of the
// unit is left: no server, no port of any server it had while the hooks
// ran or of its security group, no security group, no GitHub record, no
// state directory.
func (b *osBed) removeLeavesNothing(t *testing.T) {
	t.Helper()
	group := b.prefix + "runners"
	groupIDs := securityGroupIDs(t, b.network, group)
	// Servers the hooks may delete before any list after them: watched
	// from now until the hooks end.
	ids := map[string]bool{}
	watch := func() {
		list, _ := tryListServers(b.compute, b.prefix) // a list missed is the next one's
		for _, s := range list {
			ids[s.ID] = true
		}
	}
	watch()
	done := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
				watch()
			}
		}
	}()
	hooksStart := time.Now()
	for _, hook := range []string{"stop", "remove"} {
		if r := b.unit.Hook(hook); r.Code != 0 {
			close(done)
			<-watched
			t.Fatalf("%s: exit %d: %s", hook, r.Code, r.Stderr)
		}
	}
	close(done)
	<-watched
	t.Logf("stop and remove took %v, %d servers seen", time.Since(hooksStart).Round(time.Second), len(ids))

	var left []string
	for name, status := range allServers(t, b.compute, b.prefix) {
		left = append(left, "server "+name+" ("+status+")")
	}
	for id := range ids {
		if n := portsOf(t, b.network, id); n > 0 {
			left = append(left, "port of server "+id)
		}
	}
	for _, id := range groupIDs {
		if n := portsIn(t, b.network, id); n > 0 {
			left = append(left, "port in security group "+group)
		}
	}
	if n := securityGroups(t, b.network, group); n != 0 {
		left = append(left, "security group "+group)
	}
	for _, r := range b.github.Runners("") {
		if strings.HasPrefix(r.Name, b.prefix) {
			left = append(left, "GitHub runner "+r.Name+" in "+r.Scope)
		}
	}
	if _, err := os.Stat(b.unit.StateDir()); !os.IsNotExist(err) {
		left = append(left, "state directory "+b.unit.StateDir())
	}
	slices.Sort(left)
	if len(left) > 0 {
		t.Errorf("left after remove:\n%s", strings.Join(left, "\n"))
	}
}

// filesHolding lists the files under dir that contain secret.
func filesHolding(t *testing.T, dir, secret string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil // sockets, and files gone while walking
		}
		if data, err := os.ReadFile(path); err == nil && bytes.Contains(data, []byte(secret)) {
			found = append(found, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// portsOf counts the ports of a server (Nova's, whose device is it).
func portsOf(t *testing.T, network *gophercloud.ServiceClient, serverID string) int {
	t.Helper()
	if serverID == "" {
		t.Fatal("internal error: portsOf needs a server ID")
	}
	return len(listPorts(t, network, ports.ListOpts{DeviceID: serverID}))
}

// portsIn counts the ports in a security group.
func portsIn(t *testing.T, network *gophercloud.ServiceClient, groupID string) int {
	t.Helper()
	return len(listPorts(t, network, ports.ListOpts{SecurityGroups: []string{groupID}}))
}

func listPorts(t *testing.T, network *gophercloud.ServiceClient, opts ports.ListOpts) []ports.Port {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pages, err := ports.List(network, opts).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := ports.ExtractPorts(pages)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// securityGroupIDs lists the IDs of the project's security groups named name.
func securityGroupIDs(t *testing.T, network *gophercloud.ServiceClient, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pages, err := groups.List(network, groups.ListOpts{Name: name}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	list, err := groups.ExtractGroups(pages)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range list {
		ids = append(ids, g.ID)
	}
	return ids
}
