package config

import (
	"log/slog"
	"testing"
)

// The log level takes the Python charm's runner-manager-log-level values;
// the metrics port is a TCP port or none; the log files are absolute paths.
func TestObservabilityValues(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(f *File)
		problem string // the field with a problem; "" for none
		level   slog.Level
	}{
		{"defaults", func(f *File) {}, "", slog.LevelInfo},
		{"DEBUG", func(f *File) { f.LogLevel = "DEBUG" }, "", slog.LevelDebug},
		{"lower case", func(f *File) { f.LogLevel = "debug" }, "", slog.LevelDebug},
		{"WARNING", func(f *File) { f.LogLevel = "WARNING" }, "", slog.LevelWarn},
		{"CRITICAL", func(f *File) { f.LogLevel = "CRITICAL" }, "", slog.LevelError},
		{"FATAL", func(f *File) { f.LogLevel = "FATAL" }, "", slog.LevelError},
		{"unknown level", func(f *File) { f.LogLevel = "VERBOSE" }, "log-level", slog.LevelInfo},
		{"a port", func(f *File) { f.MetricsPort = 55555 }, "", slog.LevelInfo},
		{"a negative port", func(f *File) { f.MetricsPort = -1 }, "metrics-port", slog.LevelInfo},
		{"a port too high", func(f *File) { f.MetricsPort = 70000 }, "metrics-port", slog.LevelInfo},
		{"log files", func(f *File) { f.LogFile, f.EventsLog = "/var/log/github-runner-manager/a-0.log", "/var/log/m.log" }, "", slog.LevelInfo},
		{"a relative log file", func(f *File) { f.LogFile = "a-0.log" }, "log-file", slog.LevelInfo},
		{"a relative events log", func(f *File) { f.EventsLog = "m.log" }, "events-log", slog.LevelInfo},
	}
	for _, test := range tests {
		t.Run(test.name, func(t *testing.T) {
			f := validFile()
			test.edit(f)
			var fields []string
			for _, p := range f.Problems() {
				fields = append(fields, p.Field)
			}
			switch {
			case test.problem == "" && len(fields) != 0:
				t.Errorf("problems with %v, want none", fields)
			case test.problem != "" && (len(fields) != 1 || fields[0] != test.problem):
				t.Errorf("problems with %v, want one with %s", fields, test.problem)
			}
			if test.problem == "" && f.Level() != test.level {
				t.Errorf("level %v, want %v", f.Level(), test.level)
			}
		})
	}
}

func TestEventsLogPath(t *testing.T) {
	f := validFile()
	if got, want := f.EventsLogPath(), f.StateDir+"/events.log"; got != want {
		t.Errorf("events log without a path: %s, want %s", got, want)
	}
	f.EventsLog = "/var/log/github-runner-metrics/a-0.log"
	if got := f.EventsLogPath(); got != f.EventsLog {
		t.Errorf("events log %s, want %s", got, f.EventsLog)
	}
}
