package chaos

import (
	"reflect"
	"testing"
	"time"
)

// A seed replays its schedule exactly, and every step's parameters stay in
// the bounds the machine and the invariants need.
func TestPlanIsReplayableAndBounded(t *testing.T) {
	const duration = 30 * time.Minute
	first, again, other := plan(7, duration), plan(7, duration), plan(8, duration)
	if !reflect.DeepEqual(first, again) {
		t.Error("one seed planned two schedules")
	}
	if reflect.DeepEqual(first, other) {
		t.Error("two seeds planned one schedule")
	}
	bounds := map[kind][2]int{
		jobStep: {2, 120}, machinesStep: {1, 3}, labelsStep: {1, len(labelSets) - 1},
		freezeStep: {10, 40}, omitBusyStep: {2, 12}, burstStep: {3, 20},
	}
	seen := map[kind]bool{}
	var last time.Duration
	for i, s := range first {
		seen[s.kind] = true
		if b, ok := bounds[s.kind]; ok && (s.n < b[0] || s.n > b[1]) {
			t.Errorf("step %d, %s: parameter %d outside [%d, %d]", i, s.kind, s.n, b[0], b[1])
		}
		if gap := s.at - last; i > 0 && (gap < 3*time.Second || gap > 12*time.Second) {
			t.Errorf("step %d comes %v after the one before", i, gap)
		}
		if s.at >= duration || s.dep < 0 || s.dep > 1 {
			t.Errorf("step %d: at %v, deployment %d", i, s.at, s.dep)
		}
		last = s.at
	}
	// Freezes must end well before the fake GitHub gives up on a job.
	if max := time.Duration(bounds[freezeStep][1]) * time.Second; max > lostTimeout/2 {
		t.Errorf("freezes of up to %v are too close to the lost-job timeout %v", max, lostTimeout)
	}
	for _, w := range weights {
		if !seen[w.kind] {
			t.Errorf("30 minutes of schedule never %s", w.kind)
		}
	}
}
