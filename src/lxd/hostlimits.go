package lxd

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// inotifyLimits are LXD's production-setup values for the host's inotify
// limits. Every unprivileged container's root maps to the same host uid,
// so all runners share that one user's limits: with the kernel's default
// of 128 instances, about a dozen systemd guests boot and the next ones
// stall ("Too many open files"), their runners never coming online.
var inotifyLimits = []struct {
	name string
	min  int64
}{
	{"fs/inotify/max_user_instances", 1024},
	{"fs/inotify/max_user_watches", 1048576},
}

// procSys is where the kernel's settings are; tests point it elsewhere.
var procSys = "/proc/sys"

// raiseHostLimits raises the host's inotify limits to inotifyLimits where
// they are lower; it never lowers one. A host where they cannot be written
// (the manager in a container of its own) keeps its values, with a
// warning: runners still start, fewer of them at once.
func raiseHostLimits(log *slog.Logger) {
	for _, limit := range inotifyLimits {
		path := filepath.Join(procSys, limit.name)
		data, err := os.ReadFile(path)
		if err != nil {
			log.Warn("cannot read a host limit runners need", "setting", limit.name, "error", err)
			continue
		}
		have, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil || have >= limit.min {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.FormatInt(limit.min, 10)), 0o644); err != nil {
			log.Warn("cannot raise a host limit: many runners at once may stall at boot", "setting", limit.name, "value", have, "want", limit.min, "error", err)
			continue
		}
		log.Info("raised a host limit for runners", "setting", limit.name, "from", have, "to", limit.min)
	}
}
