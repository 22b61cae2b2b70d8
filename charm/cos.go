package charm

import "context"

// publishCOS writes the cos-agent relation data (see issue 13; the helper
// building COS replaces this placeholder).
func (c *Charm) publishCOS(ctx context.Context) error { return nil }
