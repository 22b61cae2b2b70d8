package chaos

import (
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/runner"
	"github.com/canonical/github-runner-charm/tests/fakegithub"
)

// startMonitor checks the invariants every 3 seconds, and reads the
// managers' logs every 30, until the returned function is called.
func (c *chaos) startMonitor() (stop func()) {
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(3 * time.Second)
		defer tick.Stop()
		lastLogs := time.Now()
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				c.check()
				if now.Sub(lastLogs) >= 30*time.Second {
					c.readManagerLogs()
					lastLogs = now
				}
			}
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// check is one pass of the monitor.
func (c *chaos) check() {
	listed := time.Now() // what the list shows is at least this recent
	instances, err := c.lxd.GetInstances(api.InstanceTypeContainer)
	if err != nil {
		c.note("monitor: cannot list LXD instances: %v", err)
		return
	}
	present := make(map[string]api.Instance, len(instances))
	for _, inst := range instances {
		present[inst.Name] = inst
	}
	// GitHub is read after LXD: an instance the list missed is gone, so
	// a job its runner had not reported by now never will be.
	c.checkJobs(present, listed)
	c.checkDeletions()
	c.checkLeaks(present, c.gh.Runners(""), listed)
	c.checkOwners(instances)
}

// checkJobs judges each job once: it ran to its end (its runner reported
// it, exit 0), or it was killed: failed as lost, or still unfinished while
// its runner's instance is gone. Invariant 1: a killed job needs a busy
// flush of its deployment that ran while it did. Jobs given after the list
// wait for the next pass: their runner's instance may be younger than it.
func (c *chaos) checkJobs(present map[string]api.Instance, listed time.Time) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, j := range c.jobs {
		if j.judged {
			continue
		}
		if !j.assigned.Before(listed) {
			continue
		}
		job, ok := c.gh.Job(id)
		_, hasInstance := present[j.job.RunnerName]
		switch {
		case !ok:
			c.violateLocked("job %d vanished from GitHub", id)
			j.judged = true
			continue
		case job.State == fakegithub.JobCompleted && !job.Lost && job.ExitCode == 0:
			j.judged, j.ran = true, true
			continue
		case job.State == fakegithub.JobCompleted && job.Lost:
			j.why = "failed as lost: " + job.Output
		case job.State == fakegithub.JobCompleted:
			j.why = "ended with exit code " + strconv.Itoa(job.ExitCode) + ": " + job.Output
		case !hasInstance:
			j.why = "its runner's instance is gone while the job is " + job.State
		default:
			continue
		}
		j.judged, j.killedAt = true, now
		j.excused = excused(j.dep.busyFlushes, j.assigned, now)
		if j.excused {
			c.noteLocked("job %d on %s (%s) was killed by a busy flush: %s", id, j.job.RunnerName, j.dep.name, j.why)
			continue
		}
		c.violateLocked("job %d (step %s) on %s of %s was killed without a busy flush: %s",
			id, j.job.Spec.Name, j.job.RunnerName, j.dep.name, j.why)
	}
}

// excused: a busy flush started before the kill was seen and had not ended
// before the job was given.
func excused(flushes []window, assigned, seen time.Time) bool {
	for _, w := range flushes {
		if !w.start.After(seen) && (w.end.IsZero() || !w.end.Before(assigned)) {
			return true
		}
	}
	return false
}

// checkDeletions reads the DELETEs GitHub answered since the last pass.
// Invariant 3: each came with the token of the deployment whose prefix the
// runner has. Invariant 5: none that succeeded was of a busy runner.
func (c *chaos) checkDeletions() {
	deletions := c.gh.Deletions()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deletionsSeen > len(deletions) {
		return // a concurrent pass read a later list
	}
	for _, del := range deletions[c.deletionsSeen:] {
		asker, owner := c.byToken(del.Token), c.byName(del.Name)
		switch {
		case asker == nil:
			c.violateLocked("a DELETE of runner %d (%s) came with a token of neither deployment", del.RunnerID, del.Name)
		case owner != nil && owner != asker:
			c.violateLocked("deployment %s asked GitHub to delete %s, a runner of %s (answer %d)", asker.name, del.Name, owner.name, del.Status)
		case del.Status == http.StatusNoContent && del.Busy:
			c.violateLocked("GitHub deleted the busy runner %s for %s", del.Name, asker.name)
		}
		if asker != nil {
			c.counts["DELETE "+asker.name+" "+strconv.Itoa(del.Status)]++
		}
	}
	c.deletionsSeen = len(deletions)
}

func (c *chaos) byToken(token string) *deployment {
	for _, d := range c.deps {
		if d.bed.Token == token {
			return d
		}
	}
	return nil
}

// byName is the deployment whose runner the name is, or nil.
func (c *chaos) byName(name string) *deployment {
	for _, d := range c.deps {
		if name != "" && strings.HasPrefix(name, d.bed.Prefix+"-") {
			return d
		}
	}
	return nil
}

// checkLeaks is invariant 2 while the schedule runs: a deployment's record
// without an instance, or instance without a record, is normal for a
// moment (a runner being created or removed, a busy flushed runner whose
// job GitHub has not failed yet) but not for leakGrace.
func (c *chaos) checkLeaks(present map[string]api.Instance, runners []fakegithub.Runner, now time.Time) {
	records := map[string]bool{}
	for _, r := range runners {
		records[r.Name] = true
	}
	unmatched := map[string]string{}
	for name := range present {
		if c.byName(name) != nil && !strings.Contains(name, "-img-") && !records[name] {
			unmatched[name] = "an instance without a GitHub runner"
		}
	}
	for name := range records {
		if _, ok := present[name]; c.byName(name) != nil && !ok {
			unmatched[name] = "a GitHub runner without an instance"
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.unmatched {
		if _, ok := unmatched[name]; !ok {
			delete(c.unmatched, name)
		}
	}
	for name, what := range unmatched {
		since, ok := c.unmatched[name]
		if !ok {
			c.unmatched[name] = now
			continue
		}
		if now.Sub(since) >= leakGrace && !c.reported["leak "+name] {
			c.reported["leak "+name] = true
			c.violateLocked("%s of %s, %s, for %v", name, c.byName(name).name, what, now.Sub(since).Round(time.Second))
		}
	}
}

// checkOwners: every instance of a deployment's prefix says in its
// metadata that it is that deployment's (invariant 3, on LXD's side).
func (c *chaos) checkOwners(instances []api.Instance) {
	for _, inst := range instances {
		d := c.byName(inst.Name)
		if d == nil || strings.Contains(inst.Name, "-img-") {
			continue
		}
		model, unit := inst.Config["user."+runner.MetaModel], inst.Config["user."+runner.MetaUnit]
		c.mu.Lock()
		if (model != d.model || unit != d.bed.Unit.Name) && !c.reported["owner "+inst.Name] {
			c.reported["owner "+inst.Name] = true
			c.violateLocked("instance %s of %s says it is of model %q, unit %q", inst.Name, d.name, model, unit)
		}
		c.mu.Unlock()
	}
}

// removal matches a manager's log line about a runner it removed or an
// instance it deleted.
var removal = regexp.MustCompile(`msg="(runner removed|runner instance deleted)".* (?:runner|instance)=(\S+)`)

// readManagerLogs reads what each manager logged (Pebble keeps it across
// restarts) and checks invariant 3 on the managers' side: each removed only
// runners and instances of its own prefix.
func (c *chaos) readManagerLogs() {
	for _, d := range c.deps {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		cmd := exec.CommandContext(ctx, filepath.Join(d.bed.Unit.CharmDir, "bin", "pebble"), "logs", "-n", "all")
		cmd.Env = []string{"PEBBLE=" + filepath.Join(d.bed.Unit.StateDir(), "pebble")}
		out, err := cmd.Output()
		cancel()
		if err != nil {
			c.note("monitor: cannot read %s's manager logs: %v", d.name, err)
			continue
		}
		c.mu.Lock()
		for _, line := range strings.Split(string(out), "\n") {
			key := d.name + "\x00" + line
			if c.logLines[key] {
				continue
			}
			c.logLines[key] = true
			m := removal.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			c.counts["logged "+d.name+" "+m[1]]++
			if owner := c.byName(m[2]); owner != d {
				c.violateLocked("%s's manager logged %q of %s, not of its prefix %s: %s", d.name, m[1], m[2], d.bed.Prefix, line)
			}
		}
		c.mu.Unlock()
	}
}
