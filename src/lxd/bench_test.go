package lxd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
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
			// Bounded: a runner that powers off without going online
			// (its boot lost the network) fails the round, not the hour.
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
			defer cancel()
			if err := srv.WaitRunnersOnline(waitCtx, r.repo, 1); err != nil {
				errs[i] = fmt.Errorf("runner %s not online: %w", r.name, err)
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

// BenchmarkRunnerOnlineDebian is BenchmarkRunnerOnline on a real
// distribution: a runner image built by ensureImage (install.sh and every
// boot.ImageSteps script, lean.sh included) from the Debian base
// (lxdtest.DebianImage: systemd, real cloud-init), on the pool the charm
// uses (the default profile's) and, for comparison, on a temporary `dir`
// pool selected through the instances' root device. It prints
//
//	BENCH lxd-image-build-debian <s> s size=<MB> base=<alias>
//	BENCH lxd-instance-create <s> s pool=<pool> driver=<driver> rounds=<R> first=<s> from-image=<s> image=<MB>
//	BENCH lxd-runner-online-debian <s> s n=<N> pool=<pool> driver=<driver> raw=<s> ratio=<ours/raw> raw-launch=<s> raw-exec=<s>
//
// lxd-instance-create is Create's own LXD calls (the copy of the image's
// template, the files, start) without the boot: the mean of rounds after a
// first one, which also makes the template and, on a copy-on-write pool,
// unpacks the image once (first=); from-image= is the same with the
// instance created from the image (which LXD shifts at its first start).
// raw is the Go client's create + start of the same image with the
// default profile, its first exec, and cloud-init done (`cloud-init status
// --wait`); raw-launch and raw-exec are its first two parts.
// One runner's boot is logged (systemd-analyze, cloud-init analyze).
func BenchmarkRunnerOnlineDebian(b *testing.B) {
	requireLXD(b)
	base := lxdtest.DebianImage(b)
	server := lxdtest.Connect(b)
	prefix := testPrefix(b)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	// Registered before newCloud's clean-up, so it runs after the
	// instances on it are gone.
	dirPool := prefix + "-dir"
	if err := server.CreateStoragePool(api.StoragePoolsPost{Name: dirPool, Driver: "dir"}); err != nil {
		b.Fatalf("cannot create the comparison pool: %v", err)
	}
	b.Cleanup(func() {
		if err := server.DeleteStoragePool(dirPool); err != nil {
			b.Errorf("cannot delete pool %s: %v", dirPool, err)
		}
	})
	srv := fakeGitHub(b)
	cfg := testConfig(prefix)
	cfg.LXD.BaseImage, cfg.LXD.Memory, cfg.LXD.Disk = base, 1<<30, 10<<30
	c := newCloud(b, cfg)
	if err := c.ready(ctx); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	alias, err := c.ensureImage(ctx, runnerTarball(b, srv), srv.RunnerVersion())
	if err != nil {
		b.Fatal(err)
	}
	build := time.Since(start)
	image, err := c.d.ImageByAlias(ctx, alias)
	if err != nil {
		b.Fatal(err)
	}
	sizeMB := float64(image.Size) / 1e6
	fmt.Printf("BENCH lxd-image-build-debian %.1f s size=%.0fMB base=%s\n", build.Seconds(), sizeMB, base)

	chosen := c.rootPool()
	for _, pool := range []string{chosen, dirPool} {
		p, _, err := server.GetStoragePool(pool)
		if err != nil {
			b.Fatal(err)
		}
		label := pool
		if pool == dirPool {
			label = "dir" // the prefix is random
		}
		b.Run("pool="+label, func(b *testing.B) {
			c.mu.Lock()
			c.pool = pool
			c.mu.Unlock()
			defer func() {
				c.mu.Lock()
				c.pool = chosen
				c.mu.Unlock()
			}()
			first, creates := createRounds(b, ctx, c, image.Fingerprint, 4, true)
			_, fromImage := createRounds(b, ctx, c, image.Fingerprint, 3, false)
			fmt.Printf("BENCH lxd-instance-create %.2f s pool=%s driver=%s rounds=%d first=%.2f from-image=%.2f image=%.0fMB\n",
				mean(creates).Seconds(), label, p.Driver, len(creates), first.Seconds(), mean(fromImage).Seconds(), sizeMB)
			if pool == chosen {
				logBoot(b, ctx, c, image.Fingerprint)
			}
			for _, size := range []struct{ n, rounds int }{{1, 3}, {5, 1}, {10, 1}} {
				var ours []time.Duration
				var raw rawTimes
				for range size.rounds {
					ours = append(ours, onlineRound(b, ctx, c, srv, size.n))
					raw.add(rawDebianRound(b, ctx, c, image.Fingerprint, pool, size.n))
				}
				o, r := mean(ours).Seconds(), mean(raw.done).Seconds()
				fmt.Printf("BENCH lxd-runner-online-debian %.2f s n=%d pool=%s driver=%s raw=%.2f ratio=%.2f raw-launch=%.2f raw-exec=%.2f rounds=%d\n",
					o, size.n, label, p.Driver, r, o/r, mean(raw.launch).Seconds(), mean(raw.exec).Seconds(), size.rounds)
			}
		})
	}
}

// createRounds times Create's LXD calls for an instance (the create as
// Create makes it, a copy of the image's template, or, !template, from the
// image; the files; the start) rounds times, one instance at a time,
// deleting each; it returns the first and the mean of the others. The
// first of the template's includes making the template.
func createRounds(b *testing.B, ctx context.Context, c *Cloud, fingerprint string, rounds int, template bool) (first time.Duration, rest []time.Duration) {
	b.Helper()
	for i := range rounds {
		name := c.cfg.Identity.NewName()
		req := cloud.CreateRequest{Name: name, RunnerID: int64(i + 1), JITConfig: "unused"}
		start := time.Now()
		var err error
		if template {
			err = c.createRunnerInstance(ctx, req, fingerprint)
		} else {
			err = c.d.CreateInstance(ctx, c.instancePost(req, api.InstanceSource{Type: "image", Fingerprint: fingerprint}))
		}
		if err != nil {
			b.Fatal(err)
		}
		files, err := c.runnerFiles(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range files {
			if err := c.d.PushFile(ctx, name, f); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.d.SetState(ctx, name, "start", false); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		if err := c.remove(ctx, name); err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			first = took
		} else {
			rest = append(rest, took)
		}
	}
	return first, rest
}

type rawTimes struct{ launch, exec, done []time.Duration }

func (r *rawTimes) add(o rawTimes) {
	r.launch = append(r.launch, mean(o.launch))
	r.exec = append(r.exec, mean(o.exec))
	r.done = append(r.done, mean(o.done))
}

// rawDebianRound creates and starts n instances of the image at once
// through the LXD client, as `lxc launch` does (the default profile, the
// root disk on pool), and times each until its create and start returned,
// its first exec ran, and cloud-init is done.
func rawDebianRound(b *testing.B, ctx context.Context, c *Cloud, fingerprint, pool string, n int) rawTimes {
	b.Helper()
	out := rawTimes{launch: make([]time.Duration, n), exec: make([]time.Duration, n), done: make([]time.Duration, n)}
	errs := make([]error, n)
	names := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		names[i] = fmt.Sprintf("%s-raw-%d", c.cfg.Identity.Prefix(), i)
		wg.Go(func() {
			start := time.Now()
			post := api.InstancesPost{
				Name: names[i], Type: api.InstanceTypeContainer,
				Source: api.InstanceSource{Type: "image", Fingerprint: fingerprint},
				InstancePut: api.InstancePut{Profiles: []string{"default"},
					Devices: map[string]map[string]string{"root": {"type": "disk", "path": "/", "pool": pool}}},
			}
			if err := c.d.CreateInstance(ctx, post); err != nil {
				errs[i] = err
				return
			}
			if err := c.d.SetState(ctx, names[i], "start", false); err != nil {
				errs[i] = err
				return
			}
			out.launch[i] = time.Since(start)
			if res, err := c.d.Exec(ctx, names[i], []string{"true"}, nil); err != nil || res.Code != 0 {
				errs[i] = fmt.Errorf("first exec in %s: %v %+v", names[i], err, res)
				return
			}
			out.exec[i] = time.Since(start)
			// Done is done, with or without errors (a base's module may
			// fail): what is timed is the boot, not the base's health.
			if _, err := c.d.Exec(ctx, names[i], []string{"cloud-init", "status", "--wait"}, nil); err != nil {
				errs[i] = fmt.Errorf("cloud-init status --wait in %s: %v", names[i], err)
				return
			}
			out.done[i] = time.Since(start)
		})
	}
	wg.Wait()
	for _, name := range names {
		if err := c.remove(ctx, name); err != nil {
			b.Error(err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return out
}

// logBoot boots one instance of the image the raw way and logs where its
// boot went: systemd's critical chain and blame, and cloud-init's stages.
func logBoot(b *testing.B, ctx context.Context, c *Cloud, fingerprint string) {
	b.Helper()
	name := c.cfg.Identity.Prefix() + "-raw-boot"
	post := api.InstancesPost{
		Name: name, Type: api.InstanceTypeContainer,
		Source:      api.InstanceSource{Type: "image", Fingerprint: fingerprint},
		InstancePut: api.InstancePut{Profiles: []string{"default"}},
	}
	if err := c.d.CreateInstance(ctx, post); err != nil {
		b.Fatal(err)
	}
	defer c.remove(ctx, name)
	if err := c.d.SetState(ctx, name, "start", false); err != nil {
		b.Fatal(err)
	}
	script := "cloud-init status --wait >/dev/null; timeout 120 systemctl is-system-running --wait >/dev/null; systemd-analyze; systemd-analyze critical-chain --no-pager; " +
		"systemd-analyze blame --no-pager | head -n 15; cloud-init analyze show | grep -E '^Starting|^Finished|Total Time|took'"
	res, err := c.d.Exec(ctx, name, []string{"sh", "-c", script}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("boot of the runner image (exit %d):\n%s%s", res.Code, res.Stdout, res.Stderr)
}
