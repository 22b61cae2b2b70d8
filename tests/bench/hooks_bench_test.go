// Package bench_test holds the whole-process benchmarks: the packed charm's
// dispatch run by the hook harness, with the real manager service under
// Pebble behind it.
package bench_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/harness"
	"github.com/canonical/github-runner-charm/tests/lxdtest"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }

const (
	token = "ghp_BENCHMARK_0123456789abcdef"
	app   = "bench-hooks"
	// hookRuns is how many times each hook runs; the median is reported.
	hookRuns = 9
)

// BenchmarkHookLatency measures the wall time of the packed charm's
// dispatch, as the hook harness runs it (a process with Juju's environment,
// every hook tool a round trip to the harness's agent socket), on a deployed
// unit whose manager runs under Pebble with a healthy GitHub (the fake, on
// loopback) and LXD (the test bed's image; no runners, so nothing else
// competes for the machine). It prints the median of hookRuns runs:
//
//	BENCH hook-latency <ms> ms hook=update-status min=<ms> max=<ms>
//	BENCH hook-latency <ms> ms hook=config-changed-unchanged min=<ms> max=<ms>
//
// update-status asks the manager for its runners (one GitHub list page and
// one LXD list); config-changed with nothing changed reads the config and
// returns early: the manager config, the Pebble layer on disk (config hash
// and manager binary digest) and Pebble's binary are unchanged (the
// binaries' digests come from a cache keyed by file identity, so nothing is
// hashed), and the service runs.
func BenchmarkHookLatency(b *testing.B) {
	u, _ := deploy(b)

	for _, hook := range []struct{ name, label string }{
		{"update-status", "update-status"},
		{"config-changed", "config-changed-unchanged"},
	} {
		b.Run(hook.label, func(b *testing.B) {
			samples := make([]time.Duration, 0, hookRuns)
			for range b.N {
				samples = samples[:0]
				for range hookRuns {
					start := time.Now()
					r := u.Hook(hook.name)
					samples = append(samples, time.Since(start))
					if r.Code != 0 {
						b.Fatalf("%s exit %d: %s", hook.name, r.Code, r.Stderr)
					}
				}
			}
			if s := u.Status(); s.Status != "active" {
				b.Fatalf("status after %s = %+v, want active\n%s", hook.name, s, u.ServiceLogs())
			}
			slices.Sort(samples)
			median := samples[len(samples)/2]
			b.ReportMetric(ms(median), "ms/"+hook.label)
			fmt.Printf("BENCH hook-latency %.1f ms hook=%s min=%.1f max=%.1f\n", ms(median), hook.label, ms(samples[0]), ms(samples[len(samples)-1]))
		})
	}
}

// BenchmarkHookLatencyCycleStuck measures update-status while a reconcile
// cycle is in flight and stuck on slow GitHub answers (every runner list
// takes 20 s): hooks answer from the last completed cycle, so they must not
// wait for this one. It prints the p99 of hookRuns×3 runs (with so few
// runs, the slowest):
//
//	BENCH hook-latency-cycle-stuck <ms> ms hook=update-status p50=<ms> p99=<ms>
func BenchmarkHookLatencyCycleStuck(b *testing.B) {
	u, github := deploy(b)
	if err := github.InjectFault(fakegithub.Fault{Endpoint: fakegithub.ListRepoRunners, Kind: fakegithub.Latency, Delay: 20 * time.Second}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(github.ClearFaults)
	client := api.NewClient(filepath.Join(u.StateDir(), api.SocketName), time.Minute)
	go client.Reconcile(context.Background()) // the cycle in flight
	time.Sleep(time.Second)                   // until it waits on GitHub's list
	samples := make([]time.Duration, 0, 3*hookRuns)
	for range b.N {
		samples = samples[:0]
		for range 3 * hookRuns {
			start := time.Now()
			if r := u.Hook("update-status"); r.Code != 0 {
				b.Fatalf("update-status exit %d: %s", r.Code, r.Stderr)
			}
			samples = append(samples, time.Since(start))
		}
	}
	if s := u.Status(); s.Status != "active" {
		b.Fatalf("status during a stuck cycle = %+v, want the last cycle's active\n%s", s, u.ServiceLogs())
	}
	slices.Sort(samples)
	p50, p99 := samples[len(samples)/2], samples[len(samples)-1]
	b.ReportMetric(ms(p99), "ms-p99/update-status")
	fmt.Printf("BENCH hook-latency-cycle-stuck %.1f ms hook=update-status p50=%.1f p99=%.1f\n", ms(p99), ms(p50), ms(p99))
}

// deploy deploys the unit the benchmarks measure, with no runners, and
// waits until it is active.
func deploy(b *testing.B) (*harness.Unit, *fakegithub.Server) {
	lxd := lxdtest.Connect(b)
	// Registered before the unit's own clean-up (stop, remove), so it runs
	// after it.
	b.Cleanup(func() {
		if err := lxdtest.DeleteAll(lxd, app+"-"); err != nil {
			b.Error(err)
		}
	})
	github := fakegithub.NewTest(b, fakegithub.Options{})
	github.AddToken(fakegithub.Token{Value: token})
	u := harness.New(b, harness.Options{App: app, Leader: true})
	u.SetConfig(map[string]any{
		"path": "canonical/runners", "token": token, "github-api-url": github.URL(),
		"runner-type": "container", "base-image": lxdtest.BaseImageAlias, "virtual-machines": 0,
	})
	u.Deploy()
	// The first cycle builds the runner image, and the status says so once
	// it has taken a moment: a reconcile after it returns once it is done.
	client := api.NewClient(filepath.Join(u.StateDir(), api.SocketName), 5*time.Minute)
	if _, err := client.Reconcile(context.Background()); err != nil {
		b.Fatalf("reconcile after deploy: %v\n%s", err, u.ServiceLogs())
	}
	waitActive(b, u)
	return u, github
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitActive runs update-status until the manager reports no problem: it
// has prepared the runner image and read GitHub.
func waitActive(b *testing.B, u *harness.Unit) {
	b.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		u.Hook("update-status")
		s := u.Status()
		if s.Status == "active" {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the unit is not active after 3 minutes: %+v\n%s", s, u.ServiceLogs())
		}
		time.Sleep(2 * time.Second)
	}
}
