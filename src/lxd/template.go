package lxd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/canonical/lxd/shared/api"

	"github.com/canonical/github-runner-charm/src/cloud"
)

// Runner containers are copies of a template: a stopped container of the
// runner image whose root filesystem LXD has already shifted to the
// containers' ID map, and which never ran its init. LXD 5.0 shifts a new
// container's files (a chown of every one) at its first start: 10 s and
// more for a 250 MB Debian runner image here, on every create, where a
// copy of a shifted container keeps that state (volatile.last_state.idmap)
// and starts at once; on a copy-on-write pool the copy is a snapshot. The
// template is made when Prepare has the image (or by the first create that
// finds none), on the pool runners go to.
//
// Its name has the unit's builder shape (prefix-img-<8 hex>), so that it is
// no runner to Instances, and a build (deleteStaleBuilders) or a teardown
// (deleteBuilders) deletes it with the builders: a new image gets a new
// template. A create that finds it gone creates from the image.

// templateInit is the template's init: it ends at once, so the one start
// that shifts the files stops the container again without booting it.
const templateInit = "lxc.init.cmd = /bin/true"

func (c *Cloud) templateName(fingerprint, pool string) string {
	sum := sha256.Sum256([]byte(fingerprint + "\x00" + pool))
	return c.cfg.Identity.Prefix() + builderInfix + hex.EncodeToString(sum[:4])
}

// createRunnerInstance creates (does not start) the runner instance of req
// from the image: a copy of its template when there is one, or can be
// made; from the image itself otherwise (virtual machines, whose disks
// need no shift).
func (c *Cloud) createRunnerInstance(ctx context.Context, req cloud.CreateRequest, fingerprint string) error {
	image := api.InstanceSource{Type: "image", Fingerprint: fingerprint}
	if c.cfg.LXD.Type != Container || c.setup == nil {
		return c.d.CreateInstance(ctx, c.instancePost(req, image))
	}
	template, err := c.ensureTemplate(ctx, fingerprint)
	if err != nil {
		c.log.Warn("cannot make the runner image's template; creating from the image", "error", err)
		return c.d.CreateInstance(ctx, c.instancePost(req, image))
	}
	err = c.d.CreateInstance(ctx, c.instancePost(req, api.InstanceSource{Type: "copy", Source: template, InstanceOnly: true}))
	if err == nil {
		return nil
	}
	// A build deleted it meanwhile, or the copy failed: the image still
	// makes the runner.
	c.forgetTemplate(template)
	c.log.Warn("cannot copy the runner image's template; creating from the image", "template", template, "error", err)
	if _, gone := c.d.Instance(ctx, req.Name); !errors.Is(gone, ErrNotFound) {
		return fmt.Errorf("cannot copy template %q: %w", template, err)
	}
	return c.d.CreateInstance(ctx, c.instancePost(req, image))
}

// prepareTemplate makes the current image's template, if runners are
// containers, so that the first create after a build copies it too; a
// failure is the creates' to retry.
func (c *Cloud) prepareTemplate(ctx context.Context) {
	c.mu.Lock()
	image := c.image
	c.mu.Unlock()
	if c.cfg.LXD.Type != Container || c.setup == nil || image == "" {
		return
	}
	if _, err := c.ensureTemplate(ctx, image); err != nil {
		c.log.Warn("cannot make the runner image's template; creates will try again", "error", err)
	}
}

// ensureTemplate returns the name of the image's template on the runners'
// pool, making it if needed.
func (c *Cloud) ensureTemplate(ctx context.Context, fingerprint string) (string, error) {
	name := c.templateName(fingerprint, c.rootPool())
	c.templateMu.Lock()
	defer c.templateMu.Unlock()
	if c.templates[name] {
		return name, nil
	}
	inst, err := c.d.Instance(ctx, name)
	switch {
	case err == nil && c.isOwnBuilder(*inst) && templateReady(*inst):
		c.rememberTemplate(name)
		return name, nil
	case err == nil:
		// Half made by a manager that died: made again.
		if err := c.remove(ctx, name); err != nil {
			return "", err
		}
	case !errors.Is(err, ErrNotFound):
		return "", err
	}
	start := time.Now()
	config := c.ownerConfig()
	config["boot.autostart"] = "false"
	config["raw.lxc"] = templateInit
	devices := c.runnerNIC()
	if pool := c.rootPool(); pool != "" {
		devices["root"] = map[string]string{"type": "disk", "path": "/", "pool": pool}
	}
	post := api.InstancesPost{
		Name:        name,
		Type:        api.InstanceTypeContainer,
		Source:      api.InstanceSource{Type: "image", Fingerprint: fingerprint},
		InstancePut: api.InstancePut{Profiles: []string{"default"}, Config: config, Devices: devices},
	}
	if err := c.d.CreateInstance(ctx, post); err != nil {
		return "", fmt.Errorf("cannot create template %q: %w", name, err)
	}
	ok := false
	defer func() {
		if !ok {
			cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
			defer cancel()
			_ = c.remove(cleanupCtx, name)
		}
	}()
	// The start shifts the files; the init ends, and the container stops.
	if err := c.d.SetState(ctx, name, "start", false); err != nil {
		return "", fmt.Errorf("cannot start template %q: %w", name, err)
	}
	if err := c.waitStopped(ctx, name); err != nil {
		return "", err
	}
	// LXD tells the container stopped a moment before its stop operation
	// ends, and refuses an update until then; a stop of ours waits for
	// that one (and then finds the container stopped).
	stopCtx, cancelStop := context.WithTimeout(ctx, forceStopTimeout)
	if err := c.d.SetState(stopCtx, name, "stop", true); err != nil && !isAlreadyStopped(err) {
		c.log.Debug("template stop", "template", name, "error", err)
	}
	cancelStop()
	// Copies take the template's config: not its init.
	deadline := time.Now().Add(stateTimeout)
	for {
		err := c.setup.unsetConfig(ctx, name, "raw.lxc")
		if err == nil {
			break
		}
		// Busy stopping, or the stop changed it (its volatile keys)
		// between the read and the update: again.
		if !(isBusyStopping(err) || strings.Contains(err.Error(), "ETag")) || time.Now().After(deadline) {
			return "", fmt.Errorf("cannot finish template %q: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("cannot finish template %q: %w", name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	ok = true
	c.rememberTemplate(name)
	c.log.Info("runner image template made", "template", name, "fingerprint", fingerprint, "duration", time.Since(start).Round(time.Millisecond))
	return name, nil
}

// templateReady tells a finished template: stopped, shifted, without the
// template's init.
func templateReady(inst api.Instance) bool {
	return api.StatusCode(inst.StatusCode) == api.Stopped && inst.Config["raw.lxc"] == "" &&
		inst.Config["volatile.last_state.idmap"] != "" && inst.Config["volatile.last_state.idmap"] != "[]"
}

func (c *Cloud) waitStopped(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	for {
		inst, err := c.d.Instance(ctx, name)
		if err == nil && api.StatusCode(inst.StatusCode) == api.Stopped {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot make template %q: it did not stop: %v", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cloud) rememberTemplate(name string) {
	if c.templates == nil {
		c.templates = map[string]bool{}
	}
	c.templates[name] = true
}

func (c *Cloud) forgetTemplate(name string) {
	c.templateMu.Lock()
	delete(c.templates, name)
	c.templateMu.Unlock()
}

// unsetConfig removes config keys of an instance.
func (d *lxdDaemon) unsetConfig(ctx context.Context, name string, keys ...string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) {
		inst, etag, err := c.GetInstance(name)
		if err != nil {
			return struct{}{}, err
		}
		put := inst.Writable()
		for _, key := range keys {
			delete(put.Config, key)
		}
		op, err := c.UpdateInstance(name, put, etag)
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, op.WaitContext(ctx)
	})
	return err
}
