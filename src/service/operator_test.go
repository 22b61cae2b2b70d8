package service

import (
	"errors"
	"fmt"
	"testing"

	"github.com/canonical/github-runner-charm/src/cloud"
	"github.com/canonical/github-runner-charm/src/github"
)

// A cloud's error that needs the operator blocks the unit by its mark
// alone: the service knows no cloud's sentinels.
func TestOperatorErrorsBlock(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("cannot prepare: %w", cloud.NewOperatorError("OpenStack image not found")), true},
		{fmt.Errorf("cannot prepare: %w", errors.Join(errors.New("flavor fine"), cloud.NewOperatorError("no network"))), true},
		{fmt.Errorf("cannot list: %w", github.ErrBadCredentials), true},
		{errors.New("cannot reach the LXD daemon"), false},
		{fmt.Errorf("cannot create: %w", errors.New("out of disk space")), false},
	} {
		if got := blocksOperator(tc.err); got != tc.want {
			t.Errorf("blocksOperator(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
