package lxd

import (
	"context"
	"testing"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
)

// TestRunnersAreCopiesOfAShiftedTemplate: a runner container is a copy of
// the image's template, a stopped container LXD shifted once and whose
// init never ran (so a runner's first start shifts nothing); the runner
// boots and goes online as one made from the image, the template is no
// runner, and a template deleted under the manager (a build's clean-up)
// only sends the next create to the image.
func TestRunnersAreCopiesOfAShiftedTemplate(t *testing.T) {
	requireLXD(t)
	srv := fakeGitHub(t)
	c := newCloud(t, testConfig(testPrefix(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := c.Prepare(ctx, func(context.Context) (string, string, error) {
		return runnerTarball(t, srv), srv.RunnerVersion(), nil
	}); err != nil {
		t.Fatal(err)
	}
	create := func(repo string) string {
		t.Helper()
		name := c.cfg.Identity.NewName()
		id, jit := register(t, srv, repo, name)
		if err := c.Create(ctx, cloud.CreateRequest{Name: name, RunnerID: id, JITConfig: jit}); err != nil {
			t.Fatal(err)
		}
		if err := srv.WaitRunnersOnline(ctx, repo, 1); err != nil {
			t.Fatalf("runner %s not online: %v", name, err)
		}
		return name
	}
	first := create("canonical/template-1")

	template := c.templateName(c.image, c.rootPool())
	inst, err := c.d.Instance(ctx, template)
	if err != nil {
		t.Fatalf("no template %s: %v", template, err)
	}
	if !c.isOwnBuilder(*inst) || !templateReady(*inst) {
		t.Errorf("template %s: status %s, builder %v, config %v: want a stopped, shifted builder of the unit without raw.lxc",
			template, inst.Status, c.isOwnBuilder(*inst), inst.Config)
	}
	runnerInst, err := c.d.Instance(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if runnerInst.Config["raw.lxc"] != "" || api.StatusCode(runnerInst.StatusCode) != api.Running {
		t.Errorf("runner %s: status %s, raw.lxc %q: want running with its own init", first, runnerInst.Status, runnerInst.Config["raw.lxc"])
	}
	instances, err := c.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range instances {
		if i.Name == template {
			t.Errorf("the template is listed as a runner: %+v", i)
		}
	}

	if err := c.remove(ctx, template); err != nil {
		t.Fatal(err)
	}
	create("canonical/template-2") // from the image
	create("canonical/template-3") // a new template
	if inst, err := c.d.Instance(ctx, template); err != nil || !templateReady(*inst) {
		t.Errorf("template %s not made again: %v", template, err)
	}
}
