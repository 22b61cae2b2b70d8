package lxd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/canonical/lxd/shared/api"
	"github.com/canonical/lxd/shared/revert"

	"github.com/canonical/github-runner-charm/src/cloud"
)

// Defaults of what initialise creates.
const (
	DefaultPool   = "default"
	DefaultBridge = "lxdbr0"
)

// profileDevices are the default profile's root disk and NIC, as found.
type profileDevices struct {
	rootName, pool   string
	nicName, network string
	profile          *api.Profile
	etag             string
}

func (d *lxdDaemon) defaultProfile(ctx context.Context) (profileDevices, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	type got struct {
		p    *api.Profile
		etag string
	}
	g, err := call(ctx, func() (got, error) {
		p, etag, err := c.GetProfile(api.ProjectDefaultName)
		return got{p, etag}, err
	})
	if err != nil {
		return profileDevices{}, fmt.Errorf("cannot read the default profile: %w", err)
	}
	found := profileDevices{profile: g.p, etag: g.etag}
	for name, dev := range g.p.Devices {
		switch {
		case dev["type"] == "disk" && dev["path"] == "/" && found.rootName == "":
			found.rootName, found.pool = name, dev["pool"]
		case dev["type"] == "nic" && found.nicName == "":
			found.nicName, found.network = name, dev["network"]
			if found.network == "" {
				found.network = dev["parent"]
			}
		}
	}
	return found, nil
}

// discover records the default profile's pool, so runners' root disks get
// their size; a daemon that is not initialised yet has none.
func (c *Cloud) discover(ctx context.Context) {
	found, err := c.setup.defaultProfile(ctx)
	if err != nil {
		c.log.Warn("cannot read LXD's default profile", "error", err)
		return
	}
	c.mu.Lock()
	c.pool, c.profileNetwork, c.profileNIC = found.pool, found.network, found.nicName
	c.mu.Unlock()
}

// initialise completes a daemon that nobody set up: when the default
// profile has no root disk, it gets one on Config.Pool (created if missing,
// with the best driver LXD offers: see ensurePool); when it has no NIC, it
// gets eth0 on Config.Network or lxdbr0 (created as a bridge with an
// explicit subnet if missing: LXD's own choice, `lxd init --auto`, probes
// subnets in a way that fails on some networks). What is there is left
// alone. A pool it made is deleted again if a later step fails, so the next
// try chooses afresh.
func (c *Cloud) initialise(ctx context.Context) error {
	if err := c.connected(ctx); err != nil {
		return fmt.Errorf("cannot initialise LXD: %w", err)
	}
	found, err := c.setup.defaultProfile(ctx)
	if err != nil {
		return fmt.Errorf("cannot initialise LXD: %w", err)
	}
	profile := found.profile.Writable()
	if profile.Devices == nil {
		profile.Devices = map[string]map[string]string{}
	}
	reverter := revert.New()
	defer reverter.Fail()
	changed := false
	var note string
	if found.rootName == "" {
		pool := c.cfg.Pool
		if pool == "" {
			pool = DefaultPool
		}
		made, err := c.ensurePool(ctx, pool)
		if err != nil {
			return fmt.Errorf("cannot initialise LXD: %w", err)
		}
		if made.created {
			reverter.Add(func() {
				// ctx may be what failed; the clean-up gets its own time.
				cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stateTimeout)
				defer cancel()
				if err := c.setup.deletePool(cleanupCtx, pool); err != nil {
					c.log.Error("cannot delete the storage pool of a failed initialisation", "pool", pool, "error", err)
				}
			})
		}
		note = made.note
		profile.Devices["root"] = map[string]string{"type": "disk", "path": "/", "pool": pool}
		found.pool, changed = pool, true
		c.log.Info("added a root disk to LXD's default profile", "pool", pool, "driver", made.driver, "created", made.created)
	} else if found.pool != "" {
		note = c.poolNote(ctx, found.pool)
	}
	if found.nicName == "" {
		network := c.cfg.Network
		if network == "" {
			network = DefaultBridge
		}
		cidr, err := c.setup.ensureBridge(ctx, network, c.cfg.BridgeCIDR, 0, api.NetworkPut{}, nil)
		if err != nil {
			return fmt.Errorf("cannot initialise LXD: %w", err)
		}
		profile.Devices["eth0"] = map[string]string{"type": "nic", "name": "eth0", "network": network}
		found.nicName, found.network, changed = "eth0", network, true
		c.log.Info("added a NIC to LXD's default profile", "network", network, "address", cidr)
	}
	if changed {
		if err := c.setup.updateDefaultProfile(ctx, profile, found.etag); err != nil {
			return fmt.Errorf("cannot initialise LXD: %w", err)
		}
	}
	reverter.Success()
	c.mu.Lock()
	c.pool, c.profileNetwork, c.profileNIC = found.pool, found.network, found.nicName
	c.storageNote = note
	c.mu.Unlock()
	if note != "" {
		c.log.Warn("runner starts will be slow", "pool", found.pool, "note", note)
	}
	return nil
}

// Storage drivers, in the order ensurePool prefers them: zfs and btrfs
// start an instance from a snapshot of the image's volume, which LXD
// unpacks once per pool; dir copies the whole image for every instance
// (README, "LXD storage pool": 16–58 s against 1.3–2.8 s for a 100 MB
// image on the loaded test machine).
const (
	DriverZFS   = "zfs"
	DriverBtrfs = "btrfs"
	DriverDir   = "dir"
)

// Sizes of a loop-file pool (zfs or btrfs on a sparse file in LXD's
// disks/ directory, which takes only what is written, up to its size): 20%
// of the free space, at least 5 GiB and at most 30 GiB, the rule LXD's
// documentation gives for a loop pool without a size (LXD 5.0 itself
// takes 20% of the disk's whole size), but never more than half the free
// space, and no loop pool at all under minLoopPool: the free space is
// read, not assumed.
const (
	loopPoolLow  = 5 << 30
	loopPoolHigh = 30 << 30
	minLoopPool  = 1 << 30
)

// loopPoolSize is the size of a new loop-file pool on a disk with free
// bytes free, or 0 when that is too little for one.
func loopPoolSize(free uint64) uint64 {
	size := min(max(free/5, loopPoolLow), loopPoolHigh, free/2)
	if size < minLoopPool {
		return 0
	}
	return size &^ (1<<20 - 1) // whole MiB
}

// storageSupport is what ensurePool chooses from: the drivers LXD can
// create pools with, and the free space where it keeps loop files.
type storageSupport struct {
	// Drivers are LXD's storage_supported_drivers (local ones): a driver
	// is there when LXD found its tools and the kernel's support. LXD
	// reads them when it starts and when a pool is created or deleted, so
	// tools installed since are not listed yet: the pool is dir then, and
	// the note says why.
	Drivers []string
	// Free is the free space of LXD's directory in bytes; FreeKnown is
	// false when it cannot be read (a socket outside LXD's directory).
	Free      uint64
	FreeKnown bool
}

// PoolError is LXD refusing to create a storage pool.
type PoolError struct {
	Pool, Driver string
	Err          error
}

func (e *PoolError) Error() string {
	return fmt.Sprintf("cannot create storage pool %q with the %s driver: %v", e.Pool, e.Driver, e.Err)
}

func (e *PoolError) Unwrap() error { return e.Err }

// madePool is what ensurePool did.
type madePool struct {
	driver  string
	created bool   // the pool is new: a failed initialisation deletes it
	note    string // why runner starts will be slow, or ""
}

// ensurePool makes sure pool exists. An existing one is used as it is (its
// note says so if it is dir); a new one gets zfs where LXD offers it, else
// btrfs, each on a loop file of loopPoolSize, else dir, whose note says why.
// A copy-on-write driver LXD lists but fails to create with is passed over
// for the next, and the note gives LXD's error.
//
// btrfs-progs is not installed for LXD: the snap LXD the charm installs
// brings the btrfs and zfs tools itself; a deb-installed LXD is the
// operator's, and the note names the package.
func (c *Cloud) ensurePool(ctx context.Context, pool string) (madePool, error) {
	existing, err := c.setup.storagePool(ctx, pool)
	if err == nil {
		return madePool{driver: existing.Driver, note: dirNote(pool, existing.Driver, "")}, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return madePool{}, err
	}
	probe := c.probeStorage
	if probe == nil {
		probe = c.setup.storageSupport
	}
	support, err := probe(ctx)
	if err != nil {
		// dir still works: the note says what is unknown.
		c.log.Warn("cannot tell which storage drivers LXD supports", "error", err)
	}
	size := uint64(0)
	if support.FreeKnown {
		size = loopPoolSize(support.Free)
	}
	var why string
	switch {
	case err != nil:
		why = "LXD does not say which storage drivers it supports (" + err.Error() + ")"
	case !slices.Contains(support.Drivers, DriverZFS) && !slices.Contains(support.Drivers, DriverBtrfs):
		why = "LXD offers neither zfs nor btrfs here (zfs needs its kernel module and tools; btrfs, with LXD from the deb, the btrfs-progs package)"
	case support.FreeKnown && size == 0:
		why = fmt.Sprintf("the disk has %d MiB free, too little for a loop-file pool", support.Free>>20)
	default:
		for _, driver := range []string{DriverZFS, DriverBtrfs} {
			if !slices.Contains(support.Drivers, driver) {
				continue
			}
			config := map[string]string{}
			if size > 0 {
				config["size"] = strconv.FormatUint(size>>20, 10) + "MiB"
			} // else LXD's own size: the free space is unknown
			err := c.setup.createPool(ctx, pool, driver, config)
			if err == nil {
				return madePool{driver: driver, created: true}, nil
			}
			c.log.Warn("cannot create a copy-on-write storage pool; trying the next driver", "pool", pool, "driver", driver, "error", err)
			why = fmt.Sprintf("LXD failed to create it with %s (%v)", driver, errors.Unwrap(err))
		}
	}
	if err := c.setup.createPool(ctx, pool, DriverDir, nil); err != nil {
		return madePool{}, err
	}
	return madePool{driver: DriverDir, created: true, note: dirNote(pool, DriverDir, why)}, nil
}

// dirNote is what the status says of a pool on the dir driver ("" for any
// other): why runner starts are slow, and, for a pool the charm made, why
// it is dir.
func dirNote(pool, driver, why string) string {
	if driver != DriverDir {
		return ""
	}
	note := fmt.Sprintf("runner starts are slow: LXD storage pool %q uses the dir driver, which copies the whole image for each runner", pool)
	if why == "" {
		return note + " (a zfs or btrfs pool starts runners from a snapshot)"
	}
	return note + "; the charm chose dir as " + why
}

// poolNote is dirNote of an existing pool; a pool it cannot read gets no
// note (the creates will say what is wrong).
func (c *Cloud) poolNote(ctx context.Context, pool string) string {
	p, err := c.setup.storagePool(ctx, pool)
	if err != nil {
		c.log.Warn("cannot read the default profile's storage pool", "pool", pool, "error", err)
		return ""
	}
	return dirNote(pool, p.Driver, "")
}

var _ cloud.Noter = (*Cloud)(nil)

// Note is what the operator should know of the unit's LXD that stops
// nothing: that runner starts are slow on a dir pool, and why. "" until
// Prepare or a Create has looked.
func (c *Cloud) Note() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.storageNote
}

func (d *lxdDaemon) storagePool(ctx context.Context, name string) (*api.StoragePool, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	p, err := call(ctx, func() (*api.StoragePool, error) {
		p, _, err := c.GetStoragePool(name)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read storage pool %q: %w", name, err)
	}
	return p, nil
}

// createPool creates a pool; a loop-file pool's file is LXD's to make
// (from config's size).
func (d *lxdDaemon) createPool(ctx context.Context, name, driver string, config map[string]string) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c := d.client(ctx)
	post := api.StoragePoolsPost{Name: name, Driver: driver, StoragePoolPut: api.StoragePoolPut{Config: config}}
	if _, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.CreateStoragePool(post) }); err != nil {
		return &PoolError{Pool: name, Driver: driver, Err: err}
	}
	return nil
}

func (d *lxdDaemon) deletePool(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c := d.client(ctx)
	if _, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.DeleteStoragePool(name) }); err != nil {
		return fmt.Errorf("cannot delete storage pool %q: %w", name, err)
	}
	return nil
}

// storageSupport asks LXD which drivers it supports and reads the free
// space of its directory (where the socket is, and disks/ for loop files).
func (d *lxdDaemon) storageSupport(ctx context.Context) (storageSupport, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	server, err := call(ctx, func() (*api.Server, error) {
		s, _, err := c.GetServer()
		return s, err
	})
	if err != nil {
		return storageSupport{}, fmt.Errorf("cannot read LXD's storage drivers: %w", err)
	}
	var s storageSupport
	for _, driver := range server.Environment.StorageSupportedDrivers {
		if !driver.Remote {
			s.Drivers = append(s.Drivers, driver.Name)
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(d.socket), &fs); err == nil {
		s.Free, s.FreeKnown = fs.Bavail*uint64(fs.Bsize), true
	}
	return s, nil
}

// ensureBridge makes sure a managed bridge exists and returns its address.
// A new one gets cidr, or else a free /24 from the from-th candidate of
// pickSubnet on, and extra's description and config; an existing one must
// be one mayUse (if not nil) accepts.
func (d *lxdDaemon) ensureBridge(ctx context.Context, name, cidr string, from uint32, extra api.NetworkPut, mayUse func(api.Network) error) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c := d.client(ctx)
	existing, err := call(ctx, func() (*api.Network, error) {
		n, _, err := c.GetNetwork(name)
		return n, err
	})
	if err == nil {
		if !existing.Managed {
			return "", fmt.Errorf("cannot use network %q: LXD does not manage it", name)
		}
		if mayUse != nil {
			if err := mayUse(*existing); err != nil {
				return "", fmt.Errorf("cannot use network %q: %w", name, err)
			}
		}
		return existing.Config["ipv4.address"], nil
	}
	if !errors.Is(err, ErrNotFound) {
		return "", fmt.Errorf("cannot read network %q: %w", name, err)
	}
	if cidr == "" {
		used, err := hostPrefixes()
		if err != nil {
			return "", fmt.Errorf("cannot choose a subnet for bridge %q: %w", name, err)
		}
		prefix, ok := pickSubnet(used, from)
		if !ok {
			return "", fmt.Errorf("cannot choose a subnet for bridge %q: every candidate overlaps a host network; set one", name)
		}
		cidr = prefix.String()
	}
	config := map[string]string{
		"ipv4.address": cidr,
		"ipv4.nat":     "true",
		"ipv6.address": "none", // runners need IPv4 only; the denylist is IPv4
	}
	for k, v := range extra.Config {
		config[k] = v
	}
	post := api.NetworksPost{Name: name, Type: "bridge", NetworkPut: api.NetworkPut{Description: extra.Description, Config: config}}
	if _, err := call(ctx, func() (struct{}, error) { return struct{}{}, c.CreateNetwork(post) }); err != nil {
		return "", fmt.Errorf("cannot create bridge %q with address %s: %w", name, cidr, err)
	}
	return cidr, nil
}

func (d *lxdDaemon) updateDefaultProfile(ctx context.Context, profile api.ProfilePut, etag string) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) {
		return struct{}{}, c.UpdateProfile(api.ProjectDefaultName, profile, etag)
	})
	if err != nil {
		return fmt.Errorf("cannot update the default profile: %w", err)
	}
	return nil
}

// pickSubnet returns the first candidate /24 that overlaps none of used,
// looking from the from-th candidate on (and round): bridges made by units
// at the same time start at candidates of their own. The gateway (.1) is
// the bridge's address.
func pickSubnet(used []netip.Prefix, from uint32) (netip.Prefix, bool) {
	const seconds, thirds = 256 - 99, 16 // 10.99-255.{0,17,…,255}.0/24
	for i := range uint32(seconds * thirds) {
		k := (from + i) % (seconds * thirds)
		second, third := 99+k/thirds, k%thirds*17
		candidate := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(second), byte(third), 0}), 24)
		free := true
		for _, u := range used {
			if u.Overlaps(candidate) {
				free = false
				break
			}
		}
		if free {
			return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(second), byte(third), 1}), 24), true
		}
	}
	return netip.Prefix{}, false
}

// hostPrefixes are the IPv4 networks on the host's interfaces and routes,
// which a new bridge must not shadow. The default route is left out: it
// overlaps everything.
func hostPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
			out = append(out, p.Masked())
		}
	}
	routes, err := os.Open("/proc/net/route")
	if err != nil {
		return out, nil // not Linux: the interfaces will do
	}
	defer routes.Close()
	scanner := bufio.NewScanner(routes)
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) < 8 || fields[0] == "Iface" {
			continue
		}
		dst, err1 := parseHexIPv4(fields[1])
		mask, err2 := parseHexIPv4(fields[7])
		if err1 != nil || err2 != nil {
			continue
		}
		bits, _ := net.IPMask(mask[:]).Size()
		if bits == 0 {
			continue
		}
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(dst), bits).Masked())
	}
	return out, nil
}

// parseHexIPv4 reads /proc/net/route's little-endian hex addresses.
func parseHexIPv4(s string) ([4]byte, error) {
	var out [4]byte
	var v uint32
	if _, err := fmt.Sscanf(s, "%08X", &v); err != nil {
		return out, err
	}
	binary.LittleEndian.PutUint32(out[:], v)
	return out, nil
}
