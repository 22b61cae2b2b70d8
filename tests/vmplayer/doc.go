// Package vmplayer plays the servers of the loopback OpenStack test bed (tests/openstack/setup.sh)
// as LXD containers. Nova's fake virt driver boots nothing: a server goes ACTIVE and no guest
// ever runs its user-data. The player watches Nova and, for each server it is told to play,
// boots the server's user-data in a container of the Debian test image (real systemd, real
// cloud-init; tests/lxd/debian.sh), so the runner it starts registers at the fake GitHub, runs
// its job and powers off, as on a real cloud.
//
// # What is played
//
// A Player plays the servers whose names start with Options.Prefix (listed as admin, all
// projects) once they are ACTIVE and only if their Glance image carries the property
// LXDImageProperty: its value is the LXD image (alias or fingerprint) the container is made of.
// A server of an image without it is left as the fake driver has it (never played). The choice
// is made once, when the player first sees the server ACTIVE.
//
// A played server's container is named ContainerPrefix + the server ID. It is made with:
//   - user.user-data: the server's OS-EXT-SRV-ATTR:user_data (admin, microversion >= 2.3),
//     base64-decoded: what the config drive gives cloud-init;
//   - user.meta-data: "instance-id: <server ID>" and "local-hostname: <server name>", as
//     the config drive's meta_data.json (uuid, name) gives them to cloud-init;
//   - the default profile's NIC (the LXD bridge) and security.nesting=true.
//
// # The guest's life, as Nova would see it
//
//   - The container stops by itself (the guest powered off): the player stops the Nova server
//     (os-stop), which then goes SHUTOFF, as a real guest's poweroff would make it.
//   - The Nova server is deleted: the container is deleted.
//   - Nova snapshots a played server (createImage: a new Glance image whose instance_uuid
//     property is the server's ID): the player publishes the (stopped) container as an LXD
//     image, aliased ContainerPrefix+"snap-"+<Glance image ID>, and sets LXDImageProperty on
//     the new Glance image to that alias, so servers booted from the snapshot are played from
//     it.
//
// On t.Cleanup the player stops watching and deletes its containers and the LXD images it
// published. Containers of servers Nova no longer has, made by a player process that is gone
// (an earlier, killed run), are deleted when a player starts; a live player's containers are
// never touched, whether its server still exists or not (players of test binaries run at the
// same time, and one may still publish a builder Nova has just deleted).
//
// # Images
//
// RunnerImage makes the bed's runner image (openstacktest.ImageName, "runner-image")
// playable: it builds, once per recipe (cached in LXD by a recipe hash), a runner image on the
// Debian image (the fake runner application of fakegithub.RunnerTarball installed by
// boot.InstallScript, boot.StartScript at boot.StartScriptPath) and sets LXDImageProperty on
// the Glance image to it. Other tests are not disturbed: only players read the property.
//
// BaseImage makes sure the bed has a public Glance image BaseImageName ("ubuntu-base") that
// plays as the Debian image itself (lxdtest.DebianImageAlias): the stand-in for a stock Ubuntu
// cloud image as a base for OpenStack image builds (charm option openstack-base-image).
//
// # Use
//
//	vmplayer.RunnerImage(t)                       // before the charm creates servers
//	player := vmplayer.Start(t, vmplayer.Options{Prefix: prefix})
//	...
//	name := player.WaitPlayed(t, serverID, 2*time.Minute) // the server's container
//	out := player.Exec(t, serverID, "cat", "/etc/github-runner/runner-version") // running
//	data := player.ReadFile(t, serverID, "/var/log/github-runner.log") // running or stopped
//	ok := player.HasFile(t, serverID, "/usr/bin/git")
//	player.WaitStopped(t, serverID, time.Minute)  // the guest powered off, the server stopped
//	alias := player.WaitSnapshot(t, glanceImageID, time.Minute) // a createImage published
//	player.WaitGone(t, serverID, time.Minute)     // the server was deleted, so is its container
//
// Container, Played and Snapshot answer at once what the Wait functions wait for; LXD is the
// player's LXD client.
//
// Runners in the containers reach the host on the LXD bridge (lxdtest.BridgeIP), not on
// loopback: serve the fake GitHub with an AdvertiseURL on the bridge (see tests/e2eopenstack's
// fake GitHub), as tests/stack does for LXD.
//
// When a test fails, the player logs, for each server it played, the tail of cloud-init's
// output and of the start script's log (/var/log/cloud-init-output.log,
// /var/log/github-runner.log). When LXD, the OpenStack bed or (for RunnerImage and BaseImage)
// the Debian image is missing, the test fails under CI=true and is skipped otherwise
// (tests/lxdtest's and tests/openstacktest's rule).
package vmplayer
