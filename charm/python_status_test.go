package charm

import (
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/service/api"
)

// While the runners the Python charm left are being removed, the status
// says how many are left and how many of them are busy, before what it
// says of the unit's own runners; a problem still comes first.
func TestStatusWhilePythonCharmRunnersAreRemoved(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name    string
		report  api.RunnersReport
		status  Status
		message string
	}{
		{"two left, one busy", api.RunnersReport{AsOf: now, Expected: 1, Online: 1, PythonCharm: 2, PythonCharmBusy: 1},
			Maintenance, "removing the Python charm's runners: 2 left, 1 busy; 1 runners: 1 idle, 0 busy"},
		{"while the unit's own come up", api.RunnersReport{AsOf: now, Expected: 2, PythonCharm: 1, PythonCharmBusy: 1},
			Maintenance, "removing the Python charm's runners: 1 left, 1 busy; 0 of 2 runners online: 0 idle, 0 busy"},
		{"all gone", api.RunnersReport{AsOf: now, Expected: 1, Online: 1}, Active, "1 runners: 1 idle, 0 busy"},
		{"a blocking problem first", api.RunnersReport{AsOf: now, Problem: "the token is refused", Blocking: true, PythonCharm: 1},
			Blocked, "the token is refused"},
	}
	for _, test := range tests {
		status, message := statusFromReport(test.report)
		if status != test.status || message != test.message {
			t.Errorf("%s: %s %q, want %s %q", test.name, status, message, test.status, test.message)
		}
	}
}
