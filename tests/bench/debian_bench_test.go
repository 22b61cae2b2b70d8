package bench_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// flushRounds is how many flushes BenchmarkFlushOnlineDebian times.
const flushRounds = 3

// BenchmarkFlushOnlineDebian deploys one unit through the packed charm
// (the hook harness, Pebble, the real manager) with base-image the Debian
// test base (systemd, real cloud-init) and virtual-machines=2 on the pool
// LXD's default profile gives, and times the flush-runners action, as an
// operator runs it, until both replacements are online at the fake GitHub
// (polled every 20 ms), beside two raw `lxc launch` of the unit's runner
// image at once until cloud-init is done in both. It prints the median of
// flushRounds flushes, and the deploy's first cycle (which builds the
// runner image: install.sh, tools.sh, lean.sh) until both runners were
// online:
//
//	BENCH lxd-flush-online-debian <s> s n=2 rounds=<R> min=<s> max=<s> raw=<s> ratio=<ours/raw>
//	BENCH lxd-deploy-online-debian <s> s n=2 base=<alias>
func BenchmarkFlushOnlineDebian(b *testing.B) {
	base := lxdtest.DebianImage(b)
	const n = 2
	bed := stack.New(b, stack.Options{Name: "bf", Token: demandToken, Label: demandLabel, Runners: n, Config: map[string]any{
		"base-image": base, "vm-memory": "1GiB", "vm-disk": "10GiB", "reconcile-interval": reconcileInterval,
	}})
	start := time.Now()
	bed.Unit.Deploy()
	// The first cycle builds the image from the Debian base: minutes.
	client := api.NewClient(filepath.Join(bed.Unit.StateDir(), api.SocketName), 30*time.Minute)
	if _, err := client.Reconcile(context.Background()); err != nil {
		b.Fatalf("reconcile after deploy: %v\n%s", err, bed.Unit.ServiceLogs())
	}
	waitOnline(b, bed, n, 5*time.Minute)
	deployed := time.Since(start)
	image := bed.RunnerImage()
	if image == "" {
		b.Fatal("the unit has no runner image to launch raw")
	}
	var flushes, raws []time.Duration
	for range flushRounds {
		waitOnline(b, bed, n, 3*time.Minute)
		before := idleOnline(bed)
		start := time.Now()
		if r := bed.Unit.Action("flush-runners", nil); r.Status != "completed" {
			b.Fatalf("flush-runners: %+v", r)
		}
		waitReplacements(b, bed, before, n, 3*time.Minute)
		flushes = append(flushes, time.Since(start))
		raws = append(raws, rawCloudInit(b, image, n))
	}
	med, raw := median(flushes), median(raws)
	b.ReportMetric(med.Seconds(), "s/flush-online")
	b.ReportMetric(raw.Seconds(), "s/raw-launch-cloud-init")
	fmt.Printf("BENCH lxd-flush-online-debian %.2f s n=%d rounds=%d min=%.2f max=%.2f raw=%.2f ratio=%.2f\n",
		med.Seconds(), n, flushRounds, slices.Min(flushes).Seconds(), slices.Max(flushes).Seconds(), raw.Seconds(), med.Seconds()/raw.Seconds())
	fmt.Printf("BENCH lxd-deploy-online-debian %.1f s n=%d base=%s\n", deployed.Seconds(), n, base)
}

// waitReplacements polls every 20 ms until n runners of the unit not among
// before are online.
func waitReplacements(b *testing.B, bed *stack.Bed, before []string, n int, limit time.Duration) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for {
		online := 0
		for _, r := range bed.GitHub.Runners("") {
			if strings.HasPrefix(r.Name, bed.Prefix+"-") && r.Status == "online" && !slices.Contains(before, r.Name) {
				online++
			}
		}
		if online >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d replacements online after %v\n%s", online, n, limit, bed.Unit.ServiceLogs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawCloudInit launches n instances of image with the lxc client at once
// and returns the time until cloud-init is done in the last of them; they
// are deleted afterwards.
func rawCloudInit(b *testing.B, image string, n int) time.Duration {
	b.Helper()
	var suffix [3]byte
	rand.Read(suffix[:])
	names := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range names {
		names[i] = fmt.Sprintf("rawbench-%s-%d", hex.EncodeToString(suffix[:]), i)
		wg.Go(func() {
			if out, err := lxc(5*time.Minute, "launch", image, names[i]); err != nil {
				errs[i] = fmt.Errorf("lxc launch: %v: %s", err, out)
				return
			}
			// Done is done, with or without errors (a base's module may
			// fail): what is timed is the boot, not the base's health.
			if out, err := lxc(5*time.Minute, "exec", names[i], "--", "sh", "-c", "cloud-init status --wait >/dev/null; true"); err != nil {
				errs[i] = fmt.Errorf("lxc exec cloud-init status --wait: %v: %s", err, out)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for _, name := range names {
		lxc(time.Minute, "delete", "--force", name)
	}
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}
	return took
}
