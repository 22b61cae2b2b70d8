#!/usr/bin/python3
"""Idempotent Keystone catalog and test fixtures for the OpenStack test bed.

Called by setup.sh with Debian's /usr/bin/python3 (openstacksdk comes from
python3-openstacksdk). One Python process per step, because every start-up of
openstacksdk/openstackclient costs about 2 s of CPU on a 2-core machine.

  bed.py identity   services, endpoints, test project, test user, role
  bed.py fixtures   quotas, flavors, image, network + subnet, app credential;
                    prints the application credential ID on stdout

Every object is looked up by name first and only created when missing, so a
re-run changes nothing. Settings come from the environment (set by setup.sh);
nothing secret is ever printed.
"""

import os
import sys

import openstack

ENV = os.environ
REGION = "RegionOne"


def log(msg):
    # stdout is reserved for machine-readable output (the app credential ID).
    print("bed.py: " + msg, file=sys.stderr, flush=True)


def connect(cloud):
    # OS_CLIENT_CONFIG_FILE (set by setup.sh) points at the bed's clouds.yaml.
    conn = openstack.connect(cloud=cloud)
    conn.authorize()
    return conn


def identity():
    conn = connect(ENV["BED_ADMIN_CLOUD"])
    idn = conn.identity
    endpoints = {
        ("glance", "image"): "http://127.0.0.1:9292",
        ("nova", "compute"): "http://127.0.0.1:8774/v2.1",
        ("placement", "placement"): "http://127.0.0.1:8778",
        ("neutron", "network"): "http://127.0.0.1:9696",
    }
    for (name, stype), url in endpoints.items():
        svc = idn.find_service(name)
        if svc is None:
            svc = idn.create_service(name=name, type=stype)
            log("created service " + name)
        have = [e for e in idn.endpoints(service_id=svc.id, interface="public")]
        if not have:
            idn.create_endpoint(service_id=svc.id, interface="public", url=url, region_id=REGION)
            log("created endpoint " + url)

    domain = idn.find_domain("default")
    project = idn.find_project(ENV["BED_PROJECT"], domain_id=domain.id)
    if project is None:
        project = idn.create_project(name=ENV["BED_PROJECT"], domain_id=domain.id,
                                     description="github-runner charm tests")
        log("created project " + project.name)
    user = idn.find_user(ENV["BED_USER"], domain_id=domain.id)
    if user is None:
        user = idn.create_user(name=ENV["BED_USER"], password=ENV["BED_PASSWORD"],
                               domain_id=domain.id, default_project_id=project.id)
        log("created user " + user.name)
    else:
        # Keep the password in step with the bed's secret file (cheap: bcrypt cost 4).
        idn.update_user(user, password=ENV["BED_PASSWORD"])
    for role_name in ("member", "reader"):
        role = idn.find_role(role_name)
        if role is not None:
            idn.assign_project_role_to_user(project, user, role)


def fixtures():
    admin = connect(ENV["BED_ADMIN_CLOUD"])
    project = admin.identity.find_project(ENV["BED_PROJECT"], domain_id="default")

    # Tests create many servers in parallel; the fake driver has room for them.
    admin.set_compute_quotas(project.id, instances=-1, cores=-1, ram=-1)
    admin.set_network_quotas(project.id, port=-1, network=-1, subnet=-1,
                             security_group=-1, security_group_rule=-1)

    # name -> (vcpus, ram MiB, disk GiB). disk must be >0: non-admins cannot boot
    # zero-disk flavors from an image. The unschedulable flavor asks for more than
    # the fake hypervisor has, so the scheduler puts the server into ERROR
    # (NoValidHost): a natural way for tests to get an ERROR server without admin.
    flavors = {
        ENV["BED_FLAVOR"]: (2, 2048, 10),
        ENV["BED_FLAVOR_UNSCHEDULABLE"]: (100000, 1024, 1),
    }
    for name, (vcpus, ram, disk) in flavors.items():
        if admin.compute.find_flavor(name, ignore_missing=True) is None:
            admin.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)
            log("created flavor " + name)

    image_name = ENV["BED_IMAGE"]
    images = [i for i in admin.image.images(name=image_name)]
    active = [i for i in images if i.status == "active"]
    for i in images:
        # A half-uploaded image (interrupted earlier run) would shadow the good one.
        if i.status != "active" and active:
            admin.image.delete_image(i)
    if not active:
        for i in images:
            admin.image.delete_image(i)
        # Nova's fake driver never reads the image: any bytes will do.
        admin.image.create_image(name=image_name, data=b"\0" * 65536, disk_format="raw",
                                 container_format="bare", visibility="public",
                                 allow_duplicates=True)
        log("created image " + image_name)

    net_name = ENV["BED_NETWORK"]
    net = admin.network.find_network(net_name, project_id=project.id)
    if net is None:
        net = admin.network.create_network(name=net_name, project_id=project.id)
        log("created network " + net_name)
    subnet_name = net_name + "-subnet"
    if admin.network.find_subnet(subnet_name, network_id=net.id) is None:
        admin.network.create_subnet(name=subnet_name, network_id=net.id, project_id=project.id,
                                    ip_version=4, cidr=ENV["BED_CIDR"])
        log("created subnet " + subnet_name)

    # The application credential is created by the user itself (Keystone requires
    # that) with a secret we choose, so clouds.yaml can be rewritten at any time.
    user_conn = connect(ENV["BED_CLOUD"])
    user_id = user_conn.current_user_id
    ac_name = ENV["BED_APPCRED"]
    ac = user_conn.identity.find_application_credential(user_id, ac_name)
    if ac is None:
        ac = user_conn.identity.create_application_credential(
            user_id, ac_name, secret=ENV["BED_PASSWORD"],
            description="github-runner charm tests", unrestricted=False)
        log("created application credential " + ac_name)
    print(ac.id)


if __name__ == "__main__":
    {"identity": identity, "fixtures": fixtures}[sys.argv[1]]()
