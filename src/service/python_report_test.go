package service

import (
	"testing"

	"github.com/canonical/github-runner-charm/src/manager"
	"github.com/canonical/github-runner-charm/src/runner"
)

// The report counts the runners of the Python charm left to remove, and
// the busy ones among them.
func TestReportCountsPythonCharmRunners(t *testing.T) {
	views := []manager.View{
		{Name: "a-0-0123456789ab", State: runner.Retiring, PythonCharm: true, Runner: &manager.Runner{Busy: true, Online: true}},
		{Name: "a-0-0123456789abcdef01234567", State: runner.Stopped, PythonCharm: true},
		{Name: "a-0-n-0123456789ab", State: runner.Retiring, Runner: &manager.Runner{Busy: true}}, // a tombstone's or our own
		{Name: "a-c0ffee-0-01234567", State: runner.Busy, Runner: &manager.Runner{Busy: true, Online: true}},
	}
	r := Report(views, 1)
	if r.PythonCharm != 2 || r.PythonCharmBusy != 1 || r.Busy != 1 {
		t.Errorf("report %+v", r)
	}
}
