// Package logfile is a log file that bounds its own size: the manager's
// log and the events log, which the COS agent tails (/var/log/**/*log).
//
// Why not gopkg.in/natefinch/lumberjack.v2: its backups are named
// <name>-<time>.log, which the agent's *log glob matches, so every rotation
// would be ingested by Loki a second time; and why not logrotate: its
// copytruncate loses the lines written between the copy and the truncate
// and can cut one in half, and its create needs the service to reopen the
// file. Here the backups are <name>.1 … <name>.N, as logrotate names them
// (no glob of *log matches them), and rotation happens between two writes
// under the writer's lock, so a line, written in one Write, is never split
// and never lost.
package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
)

// Mode is every log file's mode: the manager never logs a secret, but its
// log tells about the unit's runners and repositories, which other users
// of the machine have no business reading. The COS agent runs as root.
const Mode = 0o640

// Defaults: a file and its backups are at most (Backups+1)*MaxSize.
const (
	MaxSize = 10 << 20 // bytes
	Backups = 4
)

// File is a log file that, when a write would take it past MaxSize,
// renames itself to <path>.1 (shifting older backups up to
// <path>.<Backups>, the oldest dropped) and starts anew. It is safe for
// concurrent writes.
type File struct {
	path    string
	maxSize int64
	backups int

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens path for appending, creating it and its directory; maxSize
// and backups of 0 take the defaults.
func Open(path string, maxSize int64, backups int) (*File, error) {
	if maxSize <= 0 {
		maxSize = MaxSize
	}
	if backups <= 0 {
		backups = Backups
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("cannot create the log directory: %w", err)
	}
	l := &File{path: path, maxSize: maxSize, backups: backups}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *File) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, Mode)
	if err != nil {
		return fmt.Errorf("cannot open the log file: %w", err)
	}
	// A file made before, or by someone else, gets the mode too.
	if err := f.Chmod(Mode); err != nil {
		f.Close()
		return fmt.Errorf("cannot open the log file: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("cannot open the log file: %w", err)
	}
	l.f, l.size = f, info.Size()
	return nil
}

// Write writes p, whole, to the file: it rotates first if p would take
// the file past its size (unless the file is empty: a line longer than
// the size is written alone). A rotation that fails leaves the lines in
// the current file, past its size, rather than lose them.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	if l.size > 0 && l.size+int64(len(p)) > l.maxSize {
		l.rotate()
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

// rotate shifts the backups up and starts a new file; l.mu is held.
func (l *File) rotate() {
	for i := l.backups - 1; i >= 1; i-- {
		os.Rename(l.backup(i), l.backup(i+1)) // a missing one is no matter
	}
	if err := os.Rename(l.path, l.backup(1)); err != nil {
		return // keep writing where we are
	}
	old := l.f
	if err := l.open(); err != nil {
		// The renamed file is still open: the lines go on there.
		l.size = 0
		return
	}
	old.Close()
}

func (l *File) backup(i int) string { return l.path + "." + strconv.Itoa(i) }

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
