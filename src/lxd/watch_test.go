package lxd

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/canonical/github-runner-charm/src/lxd/lxdsocket"
	"github.com/canonical/github-runner-charm/src/runner"
)

// watching is a Watch running until the test ends: changes receives a
// value for each call of changed, connections one each time the event
// stream is up.
type watching struct {
	changes     chan struct{}
	connections chan struct{}
}

func startWatch(t *testing.T, c *Cloud) *watching {
	t.Helper()
	w := &watching{changes: make(chan struct{}, 100), connections: make(chan struct{}, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan error, 1)
	go func() {
		ended <- c.watch(ctx, func() { w.changes <- struct{}{} }, func() { w.connections <- struct{}{} })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ended:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want ctx's error", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Watch did not return once its ctx ended")
		}
	})
	return w
}

func (w *watching) connected(t *testing.T) {
	t.Helper()
	select {
	case <-w.connections:
	case <-time.After(time.Minute):
		t.Fatal("the event stream never connected")
	}
}

// changed waits for a call of changed.
func (w *watching) changed(t *testing.T, why string) {
	t.Helper()
	select {
	case <-w.changes:
	case <-time.After(30 * time.Second):
		t.Fatalf("changed was not called after %s", why)
	}
}

// quiet checks that changed is not called for a while.
func (w *watching) quiet(t *testing.T, why string) {
	t.Helper()
	select {
	case <-w.changes:
		t.Errorf("changed was called after %s", why)
	case <-time.After(3 * time.Second):
	}
}

func (w *watching) drain() {
	for {
		select {
		case <-w.changes:
		default:
			return
		}
	}
}

// powerOff ends a running instance from inside, as a runner's start script
// does after its job, and waits until LXD has it stopped.
func powerOff(t *testing.T, c *Cloud, name string) {
	t.Helper()
	lxc(t, "exec", name, "--", "poweroff") // the exec may end with its container
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		inst, err := c.d.Instance(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if inst.Status == "Stopped" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s is %s a minute after its poweroff", name, inst.Status)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The watch calls changed when one of the unit's runners powers itself
// off, and not when another unit's of the same application does, on the
// same daemon.
func TestWatchSeesTheUnitsRunnersStop(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	app := testPrefix(t)
	c := newCloud(t, testConfig(app))
	id := c.cfg.Identity
	otherUnit := runner.Identity{Model: id.Model, App: app, Unit: 1}
	other := newCloud(t, Config{Identity: otherUnit, LXD: c.cfg.LXD})
	scope := runner.NewScope("https://api.github.com", testRepo)
	own, others := id.NewName(), otherUnit.NewName()
	makeInstance(t, c, own, userConfig(id.Meta(1, scope)), true)
	makeInstance(t, other, others, userConfig(otherUnit.Meta(2, scope)), true)

	w := startWatch(t, c)
	w.connected(t)
	powerOff(t, other, others)
	w.quiet(t, "another unit's runner stopped")
	powerOff(t, c, own)
	w.changed(t, "the unit's runner powered off")
}

// socketProxy forwards a unix socket to LXD's, and can go away for a while
// as a restarting daemon does: its connections are cut, and new ones
// refused until it is back.
type socketProxy struct {
	path, target string
	mu           sync.Mutex
	listener     net.Listener
	conns        map[net.Conn]bool
}

func newSocketProxy(t *testing.T) *socketProxy {
	t.Helper()
	target, err := lxdsocket.Find("")
	if err != nil {
		t.Fatal(err)
	}
	p := &socketProxy{path: filepath.Join(t.TempDir(), "lxd.socket"), target: target, conns: map[net.Conn]bool{}}
	p.listen(t)
	t.Cleanup(func() { p.down() })
	return p
}

func (p *socketProxy) listen(t *testing.T) {
	t.Helper()
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.listener = l
	p.mu.Unlock()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go p.forward(conn)
		}
	}()
}

func (p *socketProxy) forward(conn net.Conn) {
	upstream, err := net.Dial("unix", p.target)
	if err != nil {
		conn.Close()
		return
	}
	p.mu.Lock()
	p.conns[conn], p.conns[upstream] = true, true
	p.mu.Unlock()
	go func() { io.Copy(upstream, conn); upstream.Close() }()
	io.Copy(conn, upstream)
	conn.Close()
	p.mu.Lock()
	delete(p.conns, conn)
	delete(p.conns, upstream)
	p.mu.Unlock()
}

// down cuts every connection and refuses new ones.
func (p *socketProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listener != nil {
		p.listener.Close()
		p.listener = nil
	}
	os.Remove(p.path)
	for conn := range p.conns {
		conn.Close()
	}
}

// After the daemon goes away and comes back (as on a restart), the watch
// connects again by itself, calls changed for what it may have missed, and
// sees the unit's runners stop again. The daemon itself is not restarted:
// other tests use it; a proxy in front of its socket goes away instead.
func TestWatchReconnects(t *testing.T) {
	t.Parallel()
	requireLXD(t)
	proxy := newSocketProxy(t)
	cfg := testConfig(testPrefix(t))
	cfg.Socket = proxy.path
	c := newCloud(t, cfg)
	w := startWatch(t, c)
	w.connected(t)

	proxy.down()
	time.Sleep(3 * time.Second) // a failed attempt or two
	proxy.listen(t)
	w.connected(t)
	w.changed(t, "the event stream came back")
	w.drain()

	name := c.cfg.Identity.NewName()
	makeInstance(t, c, name, userConfig(c.cfg.Identity.Meta(3, runner.NewScope("https://api.github.com", testRepo))), true)
	powerOff(t, c, name)
	w.changed(t, "the unit's runner powered off after the reconnection")
}
