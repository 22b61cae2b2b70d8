package openstack

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"syscall"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// openstackAPI is what the runner lifecycle needs of OpenStack: the
// consumer-side view of gophercloud, narrow enough to read at a glance and
// to wrap in tests (to count calls or make one step fail).
//
// Every method bounds its work with apiTimeout on top of ctx. A 404 comes
// back as an error that errors.Is(err, errNotFound); no error carries a
// credential.
type openstackAPI interface {
	// Servers lists the project's servers whose names match the regular
	// expression pattern (Nova's name filter), with their metadata.
	Servers(ctx context.Context, pattern string) ([]servers.Server, error)
	Server(ctx context.Context, id string) (*servers.Server, error)
	CreateServer(ctx context.Context, opts servers.CreateOpts) (*servers.Server, error)
	DeleteServer(ctx context.Context, id string) error

	// Flavors lists every flavor the project may use (public ones, and
	// private ones it was given access to: that is what Nova shows a
	// non-admin by default).
	Flavors(ctx context.Context) ([]flavors.Flavor, error)
	Image(ctx context.Context, id string) (*images.Image, error)
	ImagesNamed(ctx context.Context, name string) ([]images.Image, error)
	// Networks lists the networks with the ID or name given in opts.
	Networks(ctx context.Context, opts networks.ListOpts) ([]networks.Network, error)

	SecurityGroupsNamed(ctx context.Context, name string) ([]groups.SecGroup, error)
	CreateSecurityGroup(ctx context.Context, name, description string) (*groups.SecGroup, error)
	DeleteSecurityGroup(ctx context.Context, id string) error
	SecurityGroupRules(ctx context.Context, groupID string) ([]rules.SecGroupRule, error)
	CreateSecurityGroupRule(ctx context.Context, opts rules.CreateOpts) error
	DeleteSecurityGroupRule(ctx context.Context, id string) error

	// PortsOf lists the ports attached to a device (a server's ID).
	PortsOf(ctx context.Context, deviceID string) ([]ports.Port, error)
	DeletePort(ctx context.Context, id string) error

	// DeleteKeypair deletes a keypair of the project's user: the Python
	// charm made one per server, named as the server.
	DeleteKeypair(ctx context.Context, name string) error

	// The image build (image.go): Images lists every image the project
	// sees; CreateImage snapshots a server (Nova's createImage) and
	// returns the new image's ID.
	Images(ctx context.Context) ([]images.Image, error)
	CreateImage(ctx context.Context, serverID string, opts servers.CreateImageOpts) (string, error)
	UpdateImage(ctx context.Context, id string, opts images.UpdateOpts) error
	DeleteImage(ctx context.Context, id string) error
}

var errNotFound = errors.New("not found in OpenStack")

// errConflict is OpenStack's 409: a security group a port still uses, say.
var errConflict = errors.New("refused by OpenStack as a conflict")

// errUnanswered is a server create that Nova did not answer (a timeout, a
// cancelled context, a dropped connection): the request may have reached
// it, and Nova may make the server some time later.
var errUnanswered = errors.New("no answer from Nova")

// gophercloudAPI is openstackAPI over gophercloud's service clients.
type gophercloudAPI struct {
	clients
	secrets []string
}

var _ openstackAPI = (*gophercloudAPI)(nil)

// explain turns gophercloud's error into one of ours: 404 is errNotFound,
// credentials are redacted (a re-authentication can fail in any call), and
// a timeout says so.
func (a *gophercloudAPI) explain(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return fmt.Errorf("%w: %s", errNotFound, redact(err.Error(), a.secrets))
	case gophercloud.ResponseCodeIs(err, http.StatusConflict):
		return fmt.Errorf("%w: %s", errConflict, redact(err.Error(), a.secrets))
	case gophercloud.ResponseCodeIs(err, http.StatusUnauthorized):
		return classify(ErrUnauthorized, nil, "%s", redact(err.Error(), a.secrets))
	case isUnreachable(err):
		return classify(ErrUnreachable, nil, "%s", redact(err.Error(), a.secrets))
	}
	return errors.New(redact(err.Error(), a.secrets))
}

func all[T any](ctx context.Context, a *gophercloudAPI, pager pagination.Pager, extract func(pagination.Page) ([]T, error)) ([]T, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	page, err := pager.AllPages(ctx)
	if err != nil {
		return nil, a.explain(err)
	}
	list, err := extract(page)
	return list, a.explain(err)
}

func one[T any](ctx context.Context, a *gophercloudAPI, call func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	v, err := call(ctx)
	return v, a.explain(err)
}

func (a *gophercloudAPI) Servers(ctx context.Context, pattern string) ([]servers.Server, error) {
	return all(ctx, a, servers.List(a.compute, servers.ListOpts{Name: pattern}), servers.ExtractServers)
}

func (a *gophercloudAPI) Server(ctx context.Context, id string) (*servers.Server, error) {
	return one(ctx, a, func(ctx context.Context) (*servers.Server, error) { return servers.Get(ctx, a.compute, id).Extract() })
}

func (a *gophercloudAPI) CreateServer(ctx context.Context, opts servers.CreateOpts) (*servers.Server, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	srv, err := servers.Create(ctx, a.compute, opts, nil).Extract()
	if err != nil {
		// Nova's validation errors quote the offending value, which can be
		// the user-data and so the JIT config: keep the status alone.
		var unexpected gophercloud.ErrUnexpectedResponseCode
		if errors.As(err, &unexpected) {
			return nil, a.explain(gophercloud.ErrUnexpectedResponseCode{
				Method: unexpected.Method, URL: unexpected.URL, Expected: unexpected.Expected, Actual: unexpected.Actual,
				Body: []byte(novaMessage(unexpected.Body)),
			})
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, a.explain(err) // never sent: Nova makes nothing of it
		}
		return nil, fmt.Errorf("%w: %w", errUnanswered, a.explain(err))
	}
	return srv, nil
}

// novaMessage keeps Nova's error message with anything that looks like
// base64 longer than a UUID replaced.
func novaMessage(body []byte) string {
	return longBase64.ReplaceAllString(string(body), "<redacted>")
}

var longBase64 = regexp.MustCompile(`[A-Za-z0-9+/=_-]{40,}`)

func (a *gophercloudAPI) DeleteServer(ctx context.Context, id string) error {
	_, err := one(ctx, a, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, servers.Delete(ctx, a.compute, id).ExtractErr()
	})
	return err
}

func (a *gophercloudAPI) DeleteKeypair(ctx context.Context, name string) error {
	_, err := one(ctx, a, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, keypairs.Delete(ctx, a.compute, name, nil).ExtractErr()
	})
	return err
}

func (a *gophercloudAPI) Flavors(ctx context.Context) ([]flavors.Flavor, error) {
	return all(ctx, a, flavors.ListDetail(a.compute, nil), flavors.ExtractFlavors)
}

func (a *gophercloudAPI) Image(ctx context.Context, id string) (*images.Image, error) {
	return one(ctx, a, func(ctx context.Context) (*images.Image, error) { return images.Get(ctx, a.image, id).Extract() })
}

func (a *gophercloudAPI) ImagesNamed(ctx context.Context, name string) ([]images.Image, error) {
	return all(ctx, a, images.List(a.image, images.ListOpts{Name: name}), images.ExtractImages)
}

func (a *gophercloudAPI) Networks(ctx context.Context, opts networks.ListOpts) ([]networks.Network, error) {
	return all(ctx, a, networks.List(a.network, opts), networks.ExtractNetworks)
}

func (a *gophercloudAPI) SecurityGroupsNamed(ctx context.Context, name string) ([]groups.SecGroup, error) {
	return all(ctx, a, groups.List(a.network, groups.ListOpts{Name: name}), groups.ExtractGroups)
}

func (a *gophercloudAPI) CreateSecurityGroup(ctx context.Context, name, description string) (*groups.SecGroup, error) {
	return one(ctx, a, func(ctx context.Context) (*groups.SecGroup, error) {
		return groups.Create(ctx, a.network, groups.CreateOpts{Name: name, Description: description}).Extract()
	})
}

func (a *gophercloudAPI) DeleteSecurityGroup(ctx context.Context, id string) error {
	_, err := one(ctx, a, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, groups.Delete(ctx, a.network, id).ExtractErr()
	})
	return err
}

func (a *gophercloudAPI) SecurityGroupRules(ctx context.Context, groupID string) ([]rules.SecGroupRule, error) {
	return all(ctx, a, rules.List(a.network, rules.ListOpts{SecGroupID: groupID}), rules.ExtractRules)
}

func (a *gophercloudAPI) CreateSecurityGroupRule(ctx context.Context, opts rules.CreateOpts) error {
	_, err := one(ctx, a, func(ctx context.Context) (struct{}, error) {
		_, err := rules.Create(ctx, a.network, opts).Extract()
		if gophercloud.ResponseCodeIs(err, http.StatusConflict) {
			return struct{}{}, nil // the same rule exists: what we wanted
		}
		return struct{}{}, err
	})
	return err
}

func (a *gophercloudAPI) DeleteSecurityGroupRule(ctx context.Context, id string) error {
	_, err := one(ctx, a, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, rules.Delete(ctx, a.network, id).ExtractErr()
	})
	return err
}

func (a *gophercloudAPI) PortsOf(ctx context.Context, deviceID string) ([]ports.Port, error) {
	return all(ctx, a, ports.List(a.network, ports.ListOpts{DeviceID: deviceID}), ports.ExtractPorts)
}

func (a *gophercloudAPI) DeletePort(ctx context.Context, id string) error {
	_, err := one(ctx, a, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, ports.Delete(ctx, a.network, id).ExtractErr()
	})
	return err
}

func (a *gophercloudAPI) Images(ctx context.Context) ([]images.Image, error) {
	return all(ctx, a, images.List(a.image, images.ListOpts{}), images.ExtractImages)
}

func (a *gophercloudAPI) CreateImage(ctx context.Context, serverID string, opts servers.CreateImageOpts) (string, error) {
	return one(ctx, a, func(ctx context.Context) (string, error) {
		return servers.CreateImage(ctx, a.compute, serverID, opts).ExtractImageID()
	})
}

func (a *gophercloudAPI) UpdateImage(ctx context.Context, id string, opts images.UpdateOpts) error {
	_, err := one(ctx, a, func(ctx context.Context) (*images.Image, error) {
		return images.Update(ctx, a.image, id, opts).Extract()
	})
	return err
}

func (a *gophercloudAPI) DeleteImage(ctx context.Context, id string) error {
	_, err := one(ctx, a, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, images.Delete(ctx, a.image, id).ExtractErr()
	})
	return err
}
