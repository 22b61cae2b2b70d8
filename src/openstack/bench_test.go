package openstack

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/openstacktest"
)

// BenchmarkRunnerOnline measures, for 1 and 5 runners created in parallel,
// the mean time from the Create call until the runner is online at the
// fake GitHub (Create waits for ACTIVE; then the VM player boots the
// server's user-data under real cloud-init and the runner it starts
// registers), next to the mean time of a plain gophercloud create of the
// same flavor, image and network polled until ACTIVE at the same interval,
// measured in the same run. It prints
//
//	BENCH openstack-runner-online <seconds> s n=<N> raw=<seconds> ratio=<ours/raw>
//
// The fake driver boots nothing, so tests/vmplayer plays each server as
// an LXD container of the Debian runner image (the runner application is
// in the image): online includes the player noticing the ACTIVE server
// (it polls Nova every playerInterval), the container's boot, cloud-init
// running the user-data and the runner's registration. The raw servers
// are not the player's (their names do not start with the Cloud's
// prefix). Each size runs its rounds whatever b.N is: a round is seconds
// of Nova.
func BenchmarkRunnerOnline(b *testing.B) {
	bed := requireBed(b)
	srv, bridge := playedGitHub(b)
	cfg := testConfig(bed)
	cfg.Runner.NoProxy += "," + bridge
	c := newCloud(b, bed, cfg)
	openstacktest.CleanupServers(b, bed.compute, rawPrefix(c))
	startPlayer(b, cfg, playerInterval)
	mustPrepare(b, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	// The first server after the services start is slow; it is neither's.
	rawRound(b, ctx, bed, c, 1)
	// A single server is seconds of a shared machine's noise: n=1 takes
	// the mean of three rounds, ours and raw in turn.
	for _, size := range []struct{ n, rounds int }{{1, 3}, {5, 1}} {
		b.Run(fmt.Sprintf("n=%d", size.n), func(b *testing.B) {
			var ours, active, raw []time.Duration
			for range size.rounds {
				o, a := onlineRound(b, ctx, bed, c, srv, size.n)
				ours, active = append(ours, o), append(active, a)
				raw = append(raw, rawRound(b, ctx, bed, c, size.n))
			}
			b.ReportMetric(mean(ours).Seconds(), "s/runner-online")
			b.ReportMetric(mean(active).Seconds(), "s/runner-active")
			b.ReportMetric(mean(raw).Seconds(), "s/raw-active")
			fmt.Printf("BENCH openstack-runner-online %.2f s n=%d raw=%.2f ratio=%.2f rounds=%d\n", mean(ours).Seconds(), size.n, mean(raw).Seconds(), mean(ours).Seconds()/mean(raw).Seconds(), size.rounds)
		})
	}
}

// onlineRound creates n runners at once, each registered in a repository
// of its own so that its going online is seen alone, and returns the mean
// time from Create to online, and from Create to its return (ACTIVE). The
// runners are deleted afterwards.
func onlineRound(b *testing.B, ctx context.Context, bed *bed, c *Cloud, srv *fakegithub.Server, n int) (online, active time.Duration) {
	type bench struct {
		name, repo, jit string
		id              int64
	}
	runners := make([]bench, n)
	for i := range runners {
		r := &runners[i]
		r.name = newRunnerName(c)
		r.repo = fmt.Sprintf("canonical/bench-%d-%s", i, r.name[len(r.name)-6:])
		r.id, r.jit = register(b, srv, r.repo, r.name)
	}
	durations := make([]time.Duration, n)
	actives := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, r := range runners {
		wg.Go(func() {
			start := time.Now()
			if err := c.Create(ctx, cloud.CreateRequest{Name: r.name, RunnerID: r.id, JITConfig: r.jit}); err != nil {
				errs[i] = err
				return
			}
			actives[i] = time.Since(start)
			if err := srv.WaitRunnersOnline(ctx, r.repo, 1); err != nil {
				errs[i] = err
				return
			}
			durations[i] = time.Since(start)
			b.Logf("%s: ACTIVE after %v, online after %v", r.name, actives[i].Round(time.Millisecond), durations[i].Round(time.Millisecond))
		})
	}
	wg.Wait()
	for _, r := range runners {
		if err := c.Delete(ctx, r.name); err != nil {
			b.Error(err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return mean(durations), mean(actives)
}

// playerInterval is how often the benchmark's player asks Nova for new
// servers: a real guest boots at once, so the player should notice soon.
const playerInterval = 500 * time.Millisecond

// rawPrefix starts the raw servers' names: not the Cloud's prefix, so the
// player leaves them alone.
func rawPrefix(c *Cloud) string { return "raw-" + c.cfg.Identity.Prefix() + "-" }

// rawRound creates n servers with gophercloud alone and returns the mean
// time until each is ACTIVE.
func rawRound(b *testing.B, ctx context.Context, bed *bed, c *Cloud, n int) time.Duration {
	durations := make([]time.Duration, n)
	errs := make([]error, n)
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			start := time.Now()
			s, err := servers.Create(ctx, bed.compute, servers.CreateOpts{
				Name:      fmt.Sprintf("%s%d", rawPrefix(c), i),
				FlavorRef: bed.fixtures.FlavorID,
				ImageRef:  bed.fixtures.ImageID,
				Networks:  []servers.Network{{UUID: bed.fixtures.NetworkID}},
			}, nil).Extract()
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = s.ID
			if _, err := waitServer(ctx, bed, s.ID, "ACTIVE"); err != nil {
				errs[i] = err
				return
			}
			durations[i] = time.Since(start)
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != "" {
			servers.Delete(ctx, bed.compute, id)
			if err := openstacktest.WaitForServerDeleted(ctx, bed.compute, id, time.Minute); err != nil {
				b.Error(err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return mean(durations)
}

// waitServer polls at the Cloud's own interval, so that the comparison is
// of the work, not of the polling.
func waitServer(ctx context.Context, bed *bed, id, want string) (*servers.Server, error) {
	for {
		s, err := servers.Get(ctx, bed.compute, id).Extract()
		if err == nil && s.Status == want {
			return s, nil
		}
		if err == nil && s.Status == "ERROR" {
			return nil, fmt.Errorf("server %s is ERROR", id)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}
