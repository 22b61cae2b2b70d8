package bench_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/service/api"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
	"github.com/canonical/github-runner-charm/tests/stack"
)

// The demand benchmarks drive the packed charm as an operator does (the
// hook harness, Pebble, the real manager with its scale-set listener,
// engine and wake paths) against real LXD and the fake GitHub, whose
// scale-set service hands each queued job to the unit's scale set. Every
// latency is the fake's own timestamps (queued, started, finished) or, for
// a runner going online, the first poll that sees it (every 20 ms).

const (
	demandToken = "ghp_BENCH_DEMAND_0123456789abcdef"
	demandLabel = "bench"
	// scaleSetOption is runner-scale-set; jobs ask for the bed's label,
	// which the unit's scale set carries too.
	scaleSetOption = "bench-set"
	// burstJobs is the burst's size: what the issue asks, and what fits
	// this machine's memory (256 MiB containers; 2 cores make it slow, not
	// impossible).
	burstJobs = 20
	// reconcileInterval is set long (minutes) so that no figure owes
	// anything to the interval's cycles.
	reconcileInterval = 60
)

// deployDemand deploys one unit with opts (token, label and the long
// reconcile interval added), waits until its first cycle built the runner
// image, and until want runners are online.
func deployDemand(b *testing.B, name string, opts stack.Options, want int) *stack.Bed {
	b.Helper()
	opts.Name, opts.Token, opts.Label = name, demandToken, demandLabel
	if opts.Config == nil {
		opts.Config = map[string]any{}
	}
	opts.Config["reconcile-interval"] = reconcileInterval
	bed := stack.New(b, opts)
	bed.Unit.Deploy()
	client := api.NewClient(filepath.Join(bed.Unit.StateDir(), api.SocketName), 5*time.Minute)
	if _, err := client.Reconcile(context.Background()); err != nil {
		b.Fatalf("reconcile after deploy: %v\n%s", err, bed.Unit.ServiceLogs())
	}
	waitOnline(b, bed, want, 3*time.Minute)
	return bed
}

// waitOnline waits until exactly n runners of the unit are online and idle
// and the unit has no other instance.
func waitOnline(b *testing.B, bed *stack.Bed, n int, limit time.Duration) {
	b.Helper()
	stack.WaitFor(b, limit, fmt.Sprintf("%d idle runners online and nothing else", n), func() bool {
		idle, instances := idleOnline(bed), bed.Instances()
		return len(idle) == n && len(instances) == n
	})
}

// idleOnline names the unit's idle online runners at GitHub.
func idleOnline(bed *stack.Bed) []string {
	var out []string
	for _, r := range bed.GitHub.Runners("") {
		if strings.HasPrefix(r.Name, bed.Prefix+"-") && r.Status == "online" && !r.Busy {
			out = append(out, r.Name)
		}
	}
	return out
}

// waitStarted polls the fake until a runner took each job and returns
// them as they were then.
func waitStarted(b *testing.B, bed *stack.Bed, ids []int64, limit time.Duration) []fakegithub.Job {
	b.Helper()
	out := make([]fakegithub.Job, len(ids))
	deadline := time.Now().Add(limit)
	for i, id := range ids {
		for {
			job, ok := bed.GitHub.Job(id)
			if ok && !job.StartedAt.IsZero() {
				out[i] = job
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("job %d not started after %v: %+v\n%s", id, limit, job, bed.Unit.ServiceLogs())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return out
}

// waitDone waits for every job to end, successfully.
func waitDone(b *testing.B, bed *stack.Bed, ids []int64) []fakegithub.Job {
	b.Helper()
	out := make([]fakegithub.Job, len(ids))
	for i, id := range ids {
		out[i] = bed.WaitJob(id)
		if out[i].ExitCode != 0 || out[i].Lost {
			b.Fatalf("job %d did not succeed: %+v", id, out[i])
		}
	}
	return out
}

// BenchmarkJobStartLatency measures a queued job's wait for a runner on a
// scale-set unit: warm, with an idle runner ready (base=1; the physical
// limit is the fake's assignment plus the runner's broker poll), and cold,
// from zero runners (base=0: the listener's demand, the engine's create,
// the boot), beside a raw `lxc launch` + first `lxc exec` of the unit's
// runner image in the same run. It prints the median of its rounds:
//
//	BENCH job-start-latency <ms> ms mode=warm rounds=<R> min=<ms> max=<ms> queued-assigned=<ms> assigned-started=<ms>
//	BENCH job-start-latency <s> s mode=cold rounds=<R> raw=<s> ratio=<ours/raw> min=<s> max=<s>
func BenchmarkJobStartLatency(b *testing.B) {
	b.Run("warm", func(b *testing.B) {
		const rounds = 5
		bed := deployDemand(b, "bw", stack.Options{Base: 1, Max: 2, ScaleSet: scaleSetOption}, 1)
		var waits, assign, start []time.Duration
		for range rounds {
			waitIdle(b, bed)
			job := bed.QueueJob(fakegithub.JobSpec{Command: "true"})
			got := waitStarted(b, bed, []int64{job.ID}, 2*time.Minute)[0]
			if got.ScaleSetID == 0 {
				b.Fatalf("job %d ran without the unit's scale set: %+v", got.ID, got)
			}
			waits = append(waits, got.StartedAt.Sub(got.QueuedAt))
			assign = append(assign, got.AssignedAt.Sub(got.QueuedAt))
			start = append(start, got.StartedAt.Sub(got.AssignedAt))
			waitDone(b, bed, []int64{job.ID})
		}
		med := median(waits)
		b.ReportMetric(med.Seconds(), "s/job-start-warm")
		fmt.Printf("BENCH job-start-latency %.1f ms mode=warm rounds=%d min=%.1f max=%.1f queued-assigned=%.1f assigned-started=%.1f\n",
			ms(med), rounds, ms(slices.Min(waits)), ms(slices.Max(waits)), ms(median(assign)), ms(median(start)))
	})
	b.Run("cold", func(b *testing.B) {
		const rounds = 3
		bed := deployDemand(b, "bc", stack.Options{Max: 2, ScaleSet: scaleSetOption}, 0)
		image := bed.RunnerImage()
		if image == "" {
			b.Fatal("the unit has no runner image to launch raw")
		}
		var waits, raws []time.Duration
		for range rounds {
			waitOnline(b, bed, 0, 2*time.Minute)
			job := bed.QueueJob(fakegithub.JobSpec{Command: "true"})
			got := waitStarted(b, bed, []int64{job.ID}, 3*time.Minute)[0]
			if got.ScaleSetID == 0 {
				b.Fatalf("job %d ran without the unit's scale set: %+v", got.ID, got)
			}
			waits = append(waits, got.StartedAt.Sub(got.QueuedAt))
			waitDone(b, bed, []int64{job.ID})
			raws = append(raws, rawLaunch(b, image, 1))
		}
		med, raw := median(waits), median(raws)
		b.ReportMetric(med.Seconds(), "s/job-start-cold")
		b.ReportMetric(raw.Seconds(), "s/raw-launch-exec")
		fmt.Printf("BENCH job-start-latency %.2f s mode=cold rounds=%d raw=%.2f ratio=%.2f min=%.2f max=%.2f\n",
			med.Seconds(), rounds, raw.Seconds(), med.Seconds()/raw.Seconds(), slices.Min(waits).Seconds(), slices.Max(waits).Seconds())
	})
}

// waitIdle waits until the unit has an idle runner online.
func waitIdle(b *testing.B, bed *stack.Bed) {
	b.Helper()
	stack.WaitFor(b, 3*time.Minute, "an idle runner online", func() bool { return len(idleOnline(bed)) > 0 })
}

// BenchmarkBurst queues burstJobs jobs at once on a scale-set unit with
// base=0, max=burstJobs and measures the time until the last of them runs,
// beside as many raw `lxc launch` + first `lxc exec` in parallel (until
// the last exec), and the GitHub API calls the unit spent, per job, from
// the queueing until every job ended and the unit was back to no runner.
// It prints
//
//	BENCH burst <s> s n=<N> raw=<s> ratio=<ours/raw> calls-per-job=<c> <METHOD:/path>=<calls per job>…
//
// The protocol's minimum is one JIT configuration per runner (a runner per
// job) plus the listener's share of one message poll and one
// acknowledgement per message (a message carries up to 50 jobs' events):
// just over 1 call per job.
func BenchmarkBurst(b *testing.B) {
	bed := deployDemand(b, "bb", stack.Options{Max: burstJobs, ScaleSet: scaleSetOption}, 0)
	image := bed.RunnerImage()
	if image == "" {
		b.Fatal("the unit has no runner image to launch raw")
	}
	peak := bed.PeakInstances(b)
	bed.GitHub.ResetCounts()
	ids := make([]int64, burstJobs)
	for i := range ids {
		ids[i] = bed.QueueJob(fakegithub.JobSpec{Command: "true"}).ID
	}
	started := waitStarted(b, bed, ids, 10*time.Minute)
	first, last := started[0].QueuedAt, started[0].StartedAt
	for _, j := range started {
		first = minTime(first, j.QueuedAt)
		if j.StartedAt.After(last) {
			last = j.StartedAt
		}
	}
	ours := last.Sub(first)
	waitDone(b, bed, ids)
	waitOnline(b, bed, 0, 5*time.Minute)
	counts := bed.GitHub.Counts()
	if got := peak(); got > burstJobs {
		b.Errorf("%d instances at once, more than max-total-virtual-machines=%d", got, burstJobs)
	}
	b.Logf("burst of %d: all running after %v, at most %d instances at once", burstJobs, ours.Round(time.Millisecond), peak())
	raw := rawLaunch(b, image, burstJobs)
	b.ReportMetric(ours.Seconds(), "s/burst")
	b.ReportMetric(raw.Seconds(), "s/raw-launch-exec")
	fmt.Printf("BENCH burst %.2f s n=%d raw=%.2f ratio=%.2f %s\n", ours.Seconds(), burstJobs, raw.Seconds(), ours.Seconds()/raw.Seconds(), perJob(counts, burstJobs))
}

// perJob formats API calls per job: the total, then each endpoint's.
func perJob(counts map[string]int, jobs int) string {
	total := 0
	var keys []string
	for k, v := range counts {
		total += v
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{fmt.Sprintf("calls-per-job=%.2f", float64(total)/float64(jobs))}
	for _, k := range keys {
		// "POST /path" as one word: METHOD:/path.
		parts = append(parts, fmt.Sprintf("%s=%.2f", strings.Replace(k, " ", ":", 1), float64(counts[k])/float64(jobs)))
	}
	return strings.Join(parts, " ")
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// BenchmarkReplacementLatency measures, in both modes, the time from a
// job's end until its runner's replacement is online (the runner exits
// after its one job; the unit must notice and replace it, whatever
// reconcile-interval is: 60 minutes here), beside one raw `lxc launch` +
// first `lxc exec` of the runner image. The scale-set unit has base=max=1
// so that no runner is added while the job runs (the warm pool's top-up
// would hide the replacement). It prints the median of its rounds:
//
//	BENCH replacement-latency <s> s mode=<scale-set|classic> rounds=<R> raw=<s> ratio=<ours/raw> min=<s> max=<s> reconcile-interval=60m
func BenchmarkReplacementLatency(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts stack.Options
	}{
		{"scale-set", stack.Options{Base: 1, Max: 1, ScaleSet: scaleSetOption}},
		{"classic", stack.Options{Base: 1}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			const rounds = 3
			bed := deployDemand(b, "br", mode.opts, 1)
			image := bed.RunnerImage()
			if image == "" {
				b.Fatal("the unit has no runner image to launch raw")
			}
			var waits, raws []time.Duration
			for range rounds {
				waitOnline(b, bed, 1, 3*time.Minute)
				before := idleOnline(bed)
				job := bed.QueueJob(fakegithub.JobSpec{Command: "true"})
				done := waitDone(b, bed, []int64{job.ID})[0]
				online := waitReplacement(b, bed, before, 3*time.Minute)
				waits = append(waits, online.Sub(done.FinishedAt))
				raws = append(raws, rawLaunch(b, image, 1))
			}
			med, raw := median(waits), median(raws)
			b.ReportMetric(med.Seconds(), "s/replacement")
			b.ReportMetric(raw.Seconds(), "s/raw-launch-exec")
			fmt.Printf("BENCH replacement-latency %.2f s mode=%s rounds=%d raw=%.2f ratio=%.2f min=%.2f max=%.2f reconcile-interval=%dm\n",
				med.Seconds(), mode.name, rounds, raw.Seconds(), med.Seconds()/raw.Seconds(), slices.Min(waits).Seconds(), slices.Max(waits).Seconds(), reconcileInterval)
		})
	}
}

// waitReplacement polls every 20 ms until a runner of the unit not among
// before is online, and returns when it was first seen.
func waitReplacement(b *testing.B, bed *stack.Bed, before []string, limit time.Duration) time.Time {
	b.Helper()
	deadline := time.Now().Add(limit)
	for {
		for _, r := range bed.GitHub.Runners("") {
			if strings.HasPrefix(r.Name, bed.Prefix+"-") && r.Status == "online" && !slices.Contains(before, r.Name) {
				return time.Now()
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("no replacement online after %v\n%s", limit, bed.Unit.ServiceLogs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawLaunch launches n instances of image with the lxc client at once and
// returns the time until the last has run its first exec; they are
// deleted afterwards. LXD here sometimes never answers one of many
// parallel first execs: such a round is thrown away and run again (at
// most rawAttempts rounds), so that the figure is of a clean one.
func rawLaunch(b *testing.B, image string, n int) time.Duration {
	b.Helper()
	var errs []error
	for attempt := 1; attempt <= rawAttempts; attempt++ {
		took, err := rawRound(image, n)
		if err == nil {
			if attempt > 1 {
				b.Logf("raw launch of %d: clean round after %d thrown away: %v", n, attempt-1, errors.Join(errs...))
			}
			return took
		}
		errs = append(errs, err)
	}
	b.Fatalf("no clean raw launch of %d in %d rounds: %v", n, rawAttempts, errors.Join(errs...))
	return 0
}

const rawAttempts = 3

func rawRound(image string, n int) (time.Duration, error) {
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
			if out, err := lxc(time.Minute, "exec", names[i], "--", "true"); err != nil {
				errs[i] = fmt.Errorf("lxc exec: %v: %s", err, out)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	for _, name := range names {
		lxc(time.Minute, "delete", "--force", name)
	}
	return took, errors.Join(errs...)
}

// lxc runs the lxc client, killed (it passes SIGTERM on to the instance)
// after limit.
func lxc(limit time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return exec.CommandContext(ctx, "lxc", args...).CombinedOutput()
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
