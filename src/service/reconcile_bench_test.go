package service

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/github"
	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/manager/managertest"
	"github.com/canonical/github-runner-charm/src/metrics"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// The child process of BenchmarkReconcile10k reads these.
const (
	passURLEnv     = "GITHUB_RUNNER_BENCH_PASS_URL"     // the fake GitHub
	passRunnersEnv = "GITHUB_RUNNER_BENCH_PASS_RUNNERS" // how many runners it holds
	passResultEnv  = "GITHUB_RUNNER_BENCH_PASS_RESULT"  // where to write passResult
	// passProfileEnv names a directory: after the measured passes, the
	// child runs profilePasses more under the profiler and writes their CPU
	// profile (cpu.pprof) and allocations (allocs.pprof, to read with
	// -base allocs-base.pprof, taken just before them) there.
	passProfileEnv = "GITHUB_RUNNER_BENCH_PPROF"
)

// steadyPasses are the passes the figures are of, after the first.
const steadyPasses = 5

// profilePasses are enough samples at pprof's 100 Hz for a pass of well
// under a second.
const profilePasses = 20

// passResult is what one reconcile pass cost the process that ran it.
type passResult struct {
	CPU     time.Duration `json:"cpu"` // user + system
	Wall    time.Duration `json:"wall"`
	PeakKiB int64         `json:"peak_kib"` // VmHWM during the pass
	BaseKiB int64         `json:"base_kib"` // VmRSS when the pass began
}

type passResults struct {
	First  passResult
	Steady []passResult // steadyPasses of them
	// PeakResettable is false when the kernel would not reset VmHWM, so
	// the peaks are the process's since it started.
	PeakResettable bool
}

// BenchmarkReconcile10k measures one reconcile pass of the service over
// 10,000 idle runners at steady state: the engine's cycle (every list page
// through the real go-github client, join, decide) and the metrics of the
// cycle, as the service runs it every interval, without Prepare. It prints
//
//	BENCH reconcile-10k <cpu-seconds> s n=10000 min=<cpu-seconds> max=<cpu-seconds> peak-rss=<MiB> base-rss=<MiB> first=<cpu-seconds> wall=<seconds>
//
// The pass runs in a child process (this test binary, re-executed to run
// TestReconcilePassChild) holding only the engine, the client and the
// in-memory cloud; the fake GitHub serves from this process, so its work is
// not counted. CPU is getrusage(RUSAGE_SELF) user+sys around the pass. The
// peak is VmHWM, reset through /proc/self/clear_refs just before the pass,
// so it is the pass's own peak resident set. The figures are of the
// steadyPasses passes after the first (the steady state a running manager
// repeats): the median CPU (min= and max= the spread), peak-rss= the
// highest peak, base-rss= the resident set before the first of them, wall=
// the median wall time. first= is the process's first pass, which also
// opens connections and warms the heap.
//
// To see where a pass's time and memory go (the profiled passes come after
// the measured ones, so the figures are the same with or without):
//
//	GITHUB_RUNNER_BENCH_PPROF=/tmp/prof go test -run '^$' -bench Reconcile10k -benchtime 1x ./src/service/
//	go tool pprof -top /tmp/prof/cpu.pprof
//	go tool pprof -top -sample_index=alloc_space -base /tmp/prof/allocs-base.pprof /tmp/prof/allocs.pprof
func BenchmarkReconcile10k(b *testing.B) {
	const n = 10000
	srv := fakegithub.NewTest(b, fakegithub.Options{RateLimit: 1 << 30})
	for i := range n {
		r, err := srv.AddRunner(costRepo, fakegithub.RunnerSpec{Name: runnerName(i), Online: true, Ephemeral: true})
		if err != nil {
			b.Fatal(err)
		}
		if r.ID != int64(i+1) { // the child names instances by this rule
			b.Fatalf("runner %d has id %d", i, r.ID)
		}
	}
	for range b.N {
		srv.ResetCounts()
		result := runPassChild(b, srv.URL(), n)
		passes := 1 + steadyPasses
		if os.Getenv(passProfileEnv) != "" {
			passes += profilePasses
		}
		if got, want := srv.Count(fakegithub.ListRepoRunners), passes*listPages(n); got != want || srv.TotalCount() != want {
			b.Fatalf("%d passes made requests %v, want %d list pages", passes, srv.Counts(), want)
		}
		if !result.PeakResettable {
			b.Log("cannot reset VmHWM: the peak is the child's since it started")
		}
		steady := result.Steady
		if len(steady) != steadyPasses {
			b.Fatalf("the child ran %d steady passes, want %d", len(steady), steadyPasses)
		}
		cpu := slices.Sorted(func(yield func(time.Duration) bool) {
			for _, p := range steady {
				yield(p.CPU)
			}
		})
		wall := slices.Sorted(func(yield func(time.Duration) bool) {
			for _, p := range steady {
				yield(p.Wall)
			}
		})
		var peakKiB int64
		for _, p := range steady {
			peakKiB = max(peakKiB, p.PeakKiB)
		}
		median, peakMiB := cpu[len(cpu)/2], float64(peakKiB)/1024
		b.ReportMetric(median.Seconds(), "cpu-s/pass")
		b.ReportMetric(peakMiB, "peak-MiB")
		fmt.Printf("BENCH reconcile-10k %.3f s n=%d min=%.3f max=%.3f peak-rss=%.1f base-rss=%.1f first=%.3f wall=%.3f\n",
			median.Seconds(), n, cpu[0].Seconds(), cpu[len(cpu)-1].Seconds(), peakMiB, float64(steady[0].BaseKiB)/1024,
			result.First.CPU.Seconds(), wall[len(wall)/2].Seconds())
	}
}

func runPassChild(b *testing.B, url string, n int) passResults {
	b.Helper()
	resultFile := b.TempDir() + "/result.json"
	cmd := exec.Command(os.Args[0], "-test.run=^TestReconcilePassChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), passURLEnv+"="+url, passRunnersEnv+"="+strconv.Itoa(n), passResultEnv+"="+resultFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("the reconcile pass failed: %v\n%s", err, out)
	}
	data, err := os.ReadFile(resultFile)
	if err != nil {
		b.Fatalf("the reconcile pass left no result: %v", err)
	}
	var result passResults
	if err := json.Unmarshal(data, &result); err != nil {
		b.Fatal(err)
	}
	return result
}

// TestReconcilePassChild is BenchmarkReconcile10k's child process; run
// alone, it does nothing.
func TestReconcilePassChild(t *testing.T) {
	url, resultFile := os.Getenv(passURLEnv), os.Getenv(passResultEnv)
	if url == "" || resultFile == "" {
		t.Skip("the child process of BenchmarkReconcile10k")
	}
	n, err := strconv.Atoi(os.Getenv(passRunnersEnv))
	if err != nil {
		t.Fatal(err)
	}
	client, err := github.New(github.Config{Path: costRepo, BaseURL: url, Token: fakegithub.DefaultToken, Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	instances := managertest.NewCloud()
	now := time.Now()
	for i := range n {
		instances.Put(cloud.Instance{Name: runnerName(i), RunnerID: int64(i + 1), CreatedAt: now, Status: cloud.Running})
	}
	srv := &Server{
		Engine:   manager.New(instances, newPlatform(client, costID, costScope, nil), costSettings(n), discardLog()),
		Expected: n, Metrics: metrics.New("github-runner", nil), Log: discardLog(),
	}
	var results passResults
	results.PeakResettable = resetPeakRSS() == nil
	results.First = measurePass(t, srv, n)
	for range steadyPasses {
		results.Steady = append(results.Steady, measurePass(t, srv, n))
	}
	if dir := os.Getenv(passProfileEnv); dir != "" {
		stop := startProfile(t, dir)
		for range profilePasses {
			measurePass(t, srv, n)
		}
		stop()
	}
	data, err := json.Marshal(results)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(resultFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func measurePass(t *testing.T, srv *Server, n int) passResult {
	t.Helper()
	base := procStatusKiB(t, "VmRSS")
	resetPeakRSS()
	cpuBefore, start := cpuTime(t), time.Now()
	out, err := srv.cycle(manager.Reconcile)
	wall, cpu := time.Since(start), cpuTime(t)-cpuBefore
	peak := procStatusKiB(t, "VmHWM")
	if err != nil || len(out.Errors) > 0 {
		t.Fatalf("reconcile: %v %v", err, out.Errors)
	}
	if len(out.Views) != n || out.Created != 0 || out.RemovedTotal() != 0 {
		t.Fatalf("not a steady state: %d views, created %d, removed %v", len(out.Views), out.Created, out.Removed)
	}
	return passResult{CPU: cpu, Wall: wall, PeakKiB: peak, BaseKiB: base}
}

// startProfile starts profiling into dir, if it is not empty: the CPU
// profile, and an allocations profile to be read against the one taken
// now. The returned function stops and writes them.
func startProfile(t *testing.T, dir string) (stop func()) {
	t.Helper()
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeProfile := func(name string) {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	writeProfile("allocs-base.pprof")
	cpu, err := os.Create(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := cpu.Close(); err != nil {
			t.Fatal(err)
		}
		runtime.GC() // the allocs profile is as of the last GC
		writeProfile("allocs.pprof")
	}
}

// resetPeakRSS sets VmHWM back to the current resident set (Linux 4.0+).
func resetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

func cpuTime(t *testing.T) time.Duration {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatalf("cannot read rusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatusKiB reads a "kB" field of /proc/self/status.
func procStatusKiB(t *testing.T, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatalf("cannot read the process status: %v", err)
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		value, ok := strings.CutPrefix(scanner.Text(), field+":")
		if !ok {
			continue
		}
		kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("cannot parse %s %q: %v", field, value, err)
		}
		return kib
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
