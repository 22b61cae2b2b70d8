package lxd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// BenchmarkRunnerOnline measures, for 1, 5 and 10 runners created in
// parallel, the mean time from the Create call until the runner is online
// at the fake GitHub, next to the mean time of a raw `lxc launch` plus the
// first `lxc exec` of the same image, measured in the same run. It prints
//
//	BENCH lxd-runner-online <seconds> s n=<N> raw=<seconds> ratio=<ours/raw>
//
// Each size runs its rounds whatever b.N is: a round is seconds.
func BenchmarkRunnerOnline(b *testing.B) {
	requireLXD(b)
	srv := fakeGitHub(b)
	c := newCloud(b, testConfig(testPrefix(b)))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := c.ready(ctx); err != nil {
		b.Fatal(err)
	}
	alias, err := c.ensureImage(ctx, runnerTarball(b, srv), srv.RunnerVersion())
	if err != nil {
		b.Fatal(err)
	}
	// A single instance is a fraction of a second of a shared machine's
	// noise: n=1 takes the mean of three rounds, ours and raw in turn.
	for _, size := range []struct{ n, rounds int }{{1, 3}, {5, 1}, {10, 1}} {
		b.Run(fmt.Sprintf("n=%d", size.n), func(b *testing.B) {
			var ours, raw []time.Duration
			for range size.rounds {
				ours = append(ours, onlineRound(b, ctx, c, srv, size.n))
				raw = append(raw, rawRound(b, c, alias, size.n))
			}
			b.ReportMetric(mean(ours).Seconds(), "s/runner-online")
			b.ReportMetric(mean(raw).Seconds(), "s/raw-launch-exec")
			fmt.Printf("BENCH lxd-runner-online %.2f s n=%d raw=%.2f ratio=%.2f rounds=%d\n", mean(ours).Seconds(), size.n, mean(raw).Seconds(), mean(ours).Seconds()/mean(raw).Seconds(), size.rounds)
		})
	}
}

// onlineRound creates n runners at once, each registered in a repository of
// its own so that its going online is seen alone, and returns the mean time
// from Create to online. The runners are deleted afterwards.
func onlineRound(b *testing.B, ctx context.Context, c *Cloud, srv *fakegithub.Server, n int) time.Duration {
	type bench struct {
		name, repo, jit string
		id              int64
	}
	runners := make([]bench, n)
	for i := range runners {
		r := &runners[i]
		r.name = c.cfg.Identity.NewName()
		r.repo = fmt.Sprintf("canonical/bench-%d-%s", i, r.name[len(r.name)-6:])
		r.id, r.jit = register(b, srv, r.repo, r.name)
	}
	durations := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, r := range runners {
		wg.Go(func() {
			start := time.Now()
			if err := c.Create(ctx, cloud.CreateRequest{Name: r.name, RunnerID: r.id, JITConfig: r.jit}); err != nil {
				errs[i] = err
				return
			}
			if err := srv.WaitRunnersOnline(ctx, r.repo, 1); err != nil {
				errs[i] = err
				return
			}
			durations[i] = time.Since(start)
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
	return mean(durations)
}

// rawRound launches n instances of the image with the lxc client at once
// and returns the mean time until each runs its first exec.
func rawRound(b *testing.B, c *Cloud, image string, n int) time.Duration {
	durations := make([]time.Duration, n)
	errs := make([]error, n)
	names := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		names[i] = fmt.Sprintf("%s-raw-%d", c.cfg.Identity.Prefix(), i)
		wg.Go(func() {
			start := time.Now()
			if out, err := lxc(b, "launch", image, names[i]); err != nil {
				errs[i] = fmt.Errorf("lxc launch: %v: %s", err, out)
				return
			}
			if out, err := lxc(b, "exec", names[i], "--", "true"); err != nil {
				errs[i] = fmt.Errorf("lxc exec: %v: %s", err, out)
				return
			}
			durations[i] = time.Since(start)
		})
	}
	wg.Wait()
	for _, name := range names {
		lxc(b, "delete", "--force", name)
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return mean(durations)
}

func mean(ds []time.Duration) time.Duration {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return sum / time.Duration(len(ds))
}
