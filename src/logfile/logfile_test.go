package logfile

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// readAll is every line of the log and its backups, oldest first, and the
// files' sizes.
func readAll(t *testing.T, path string, backups int) (lines []string, sizes map[string]int64) {
	t.Helper()
	sizes = map[string]int64{}
	files := []string{}
	for i := backups; i >= 1; i-- {
		files = append(files, fmt.Sprintf("%s.%d", path, i))
	}
	files = append(files, path)
	for _, name := range files {
		data, err := os.ReadFile(name)
		if os.IsNotExist(err) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		sizes[name] = int64(len(data))
		if len(data) > 0 && data[len(data)-1] != '\n' {
			t.Errorf("%s ends mid-line: %q", name, data[max(0, len(data)-40):])
		}
		scanner := bufio.NewScanner(strings.NewReader(string(data)))
		for scanner.Scan() {
			lines = append(lines, scanner.Text())
		}
	}
	return lines, sizes
}

// Many writers, many lines, many rotations: every line is in exactly one
// file, whole, each writer's in order, and no file is past its size.
func TestRotationLosesNoLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "github-runner-0.log")
	const maxSize, backups, writers, perWriter = 4096, 400, 8, 1000
	l, err := Open(path, maxSize, backups)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log := slog.New(slog.NewTextHandler(l, nil)) // as the manager writes: one Write a record
			for i := range perWriter {
				log.Info("line", "writer", w, "n", i, "pad", strings.Repeat("x", i%97))
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	lines, sizes := readAll(t, path, backups)
	if len(sizes) < 10 {
		t.Fatalf("%d files: the test did not rotate several times", len(sizes))
	}
	if _, ok := sizes[path+".1"]; !ok {
		t.Fatal("no first backup")
	}
	for name, size := range sizes {
		if size > maxSize {
			t.Errorf("%s has %d bytes, more than %d", name, size, maxSize)
		}
	}
	next := make([]int, writers)
	for _, line := range lines {
		var w, n int
		if _, err := fmt.Sscanf(line[strings.Index(line, "writer="):], "writer=%d n=%d", &w, &n); err != nil || !strings.HasPrefix(line, "time=") || !strings.Contains(line, " pad=") {
			t.Fatalf("a broken line: %q (%v)", line, err)
		}
		if n != next[w] {
			t.Fatalf("writer %d: line %d after %d: lost or out of order", w, n, next[w]-1)
		}
		next[w]++
	}
	for w, n := range next {
		if n != perWriter {
			t.Errorf("writer %d: %d lines read back, want %d", w, n, perWriter)
		}
	}
}

// Past its backups the oldest lines go: the files stay bounded; the
// files are 0640 whatever the file had before.
func TestRotationBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	if err := os.WriteFile(path, []byte("before\n"), 0o666); err != nil {
		t.Fatal(err)
	}
	l, err := Open(path, 1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		fmt.Fprintf(l, "line %04d %s\n", i, strings.Repeat("y", 40))
	}
	l.Close()
	lines, sizes := readAll(t, path, 5)
	if len(sizes) != 3 {
		t.Errorf("files %v, want the log and 2 backups", sizes)
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "line 0999 ") {
		t.Errorf("the last line is %q", last)
	}
	if lines[0] == "before" {
		t.Error("the oldest lines were kept past the backups")
	}
	for name := range sizes {
		info, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != Mode {
			t.Errorf("%s has mode %v, want %v", name, info.Mode().Perm(), os.FileMode(Mode))
		}
	}
	// No backup matches the COS agent's glob of /var/log/**/*log but the
	// live file.
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*log"))
	if len(matches) != 1 || matches[0] != path {
		t.Errorf("files matching *log: %v, want only %s", matches, path)
	}
}

// Appending to a log that is there already counts its size.
func TestReopenKeepsSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.log")
	os.WriteFile(path, []byte(strings.Repeat("z", 90)+"\n"), 0o640)
	l, err := Open(path, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(l, "0123456789\n")
	l.Close()
	if data, _ := os.ReadFile(path + ".1"); len(data) != 91 {
		t.Errorf("the old content was not rotated out first: backup has %d bytes", len(data))
	}
	if data, _ := os.ReadFile(path); string(data) != "0123456789\n" {
		t.Errorf("the log holds %q", data)
	}
}
