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
	"strings"

	"github.com/canonical/lxd/shared/api"
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
// profile has no root disk, it gets one on Config.Pool (created with the
// dir driver if missing); when it has no NIC, it gets eth0 on
// Config.Network or lxdbr0 (created as a bridge with an explicit subnet if
// missing: LXD's own choice, `lxd init --auto`, probes subnets in a way
// that fails on some networks). What is there is left alone.
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
	changed := false
	if found.rootName == "" {
		pool := c.cfg.Pool
		if pool == "" {
			pool = DefaultPool
		}
		if err := c.setup.ensurePool(ctx, pool); err != nil {
			return fmt.Errorf("cannot initialise LXD: %w", err)
		}
		profile.Devices["root"] = map[string]string{"type": "disk", "path": "/", "pool": pool}
		found.pool, changed = pool, true
		c.log.Info("added a root disk to LXD's default profile", "pool", pool)
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
	c.mu.Lock()
	c.pool, c.profileNetwork, c.profileNIC = found.pool, found.network, found.nicName
	c.mu.Unlock()
	return nil
}

func (d *lxdDaemon) ensurePool(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, stateTimeout)
	defer cancel()
	c := d.client(ctx)
	_, err := call(ctx, func() (struct{}, error) {
		_, _, err := c.GetStoragePool(name)
		if err == nil || !api.StatusErrorCheck(err, 404) {
			return struct{}{}, err
		}
		// dir needs nothing from the kernel or the disk layout: it works on
		// every machine, at the cost of copying each image in full.
		return struct{}{}, c.CreateStoragePool(api.StoragePoolsPost{Name: name, Driver: "dir"})
	})
	if err != nil {
		return fmt.Errorf("cannot create storage pool %q: %w", name, err)
	}
	return nil
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
