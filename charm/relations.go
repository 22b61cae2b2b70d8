package charm

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// Relation is one relation of an endpoint as this hook sees it.
type Relation struct {
	ID        string                       // "cos-agent:3"
	RemoteApp string                       // "" until a remote unit or the remote app's data shows it
	Units     map[string]map[string]string // each remote unit's bag
	App       map[string]string            // the remote application's bag
}

// relations reads every relation of endpoint with each remote unit's bag and
// the remote application's bag. The relation this hook breaks
// (<endpoint>-relation-broken, JUJU_RELATION_ID) is left out, and so is the
// unit departing in a -relation-departed hook (JUJU_DEPARTING_UNIT): Juju
// still lists both during the hook, but neither is there once it ends, and
// configure writes what should hold afterwards.
func (c *Charm) relations(ctx context.Context, endpoint string) ([]Relation, error) {
	ids, err := c.Tools.RelationIDs(ctx, endpoint)
	if err != nil {
		return nil, fmt.Errorf("cannot list the %s relations: %w", endpoint, err)
	}
	ids = liveRelationIDs(ids, c.Getenv)
	relations := make([]Relation, 0, len(ids))
	for _, id := range ids {
		units, err := c.Tools.RelationList(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("cannot list the units of relation %s: %w", id, err)
		}
		units = liveUnits(id, units, c.Getenv)
		r := Relation{ID: id, Units: make(map[string]map[string]string, len(units))}
		for _, unit := range units {
			bag, err := c.Tools.RelationGet(ctx, id, unit, false)
			if err != nil {
				return nil, fmt.Errorf("cannot read %s's data in relation %s: %w", unit, id, err)
			}
			r.Units[unit] = bag
			if r.RemoteApp == "" {
				r.RemoteApp, _, _ = strings.Cut(unit, "/")
			}
		}
		if r.RemoteApp == "" && c.Getenv("JUJU_RELATION_ID") == id {
			r.RemoteApp = c.Getenv("JUJU_REMOTE_APP")
		}
		r.App = map[string]string{}
		if r.RemoteApp != "" {
			if r.App, err = c.Tools.RelationGet(ctx, id, r.RemoteApp, true); err != nil {
				return nil, fmt.Errorf("cannot read %s's application data in relation %s: %w", r.RemoteApp, id, err)
			}
		}
		relations = append(relations, r)
	}
	return relations, nil
}

// hookName is the hook being run, "" in an action.
func hookName(getenv func(string) string) string {
	if dir, name, ok := strings.Cut(getenv("JUJU_DISPATCH_PATH"), "/"); ok && dir == "hooks" {
		return name
	}
	return ""
}

// liveRelationIDs leaves out the relation a -relation-broken hook breaks.
func liveRelationIDs(ids []string, getenv func(string) string) []string {
	broken := ""
	if strings.HasSuffix(hookName(getenv), "-relation-broken") {
		broken = getenv("JUJU_RELATION_ID")
	}
	live := make([]string, 0, len(ids))
	for _, id := range ids {
		if id != broken || broken == "" {
			live = append(live, id)
		}
	}
	sort.Strings(live)
	return live
}

// liveUnits leaves out the unit departing relation id in a
// -relation-departed hook.
func liveUnits(id string, units []string, getenv func(string) string) []string {
	departing := ""
	if getenv("JUJU_RELATION_ID") == id && strings.HasSuffix(hookName(getenv), "-relation-departed") {
		departing = getenv("JUJU_DEPARTING_UNIT")
	}
	live := make([]string, 0, len(units))
	for _, unit := range units {
		if departing == "" || unit != departing {
			live = append(live, unit)
		}
	}
	sort.Strings(live)
	return live
}
