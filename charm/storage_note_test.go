package charm

import (
	"context"
	"testing"

	"github.com/canonical/github-runner-charm/src/service/api"
)

// noteManager reports runners and, maybe, the cloud's note.
type noteManager struct {
	Manager
	note string
}

func (m noteManager) Runners(context.Context) (api.RunnersReport, error) {
	return api.RunnersReport{Expected: 1, Online: 1, Note: m.note}, nil
}

// check-runners shows the cloud's note (slow starts on LXD's dir pool) when
// there is one, and no note key otherwise.
func TestCheckRunnersShowsTheNote(t *testing.T) {
	for _, note := range []string{"", `runner starts are slow: LXD storage pool "default" uses the dir driver`} {
		c := &Charm{Manager: noteManager{note: note}}
		results, err := c.checkRunners(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := results["note"]
		if got != note || ok != (note != "") {
			t.Errorf("with note %q, check-runners gives note %q (present %v)", note, got, ok)
		}
	}
}
