package config

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
)

// LogLevels are the runner-manager-log-level option's values, the Python
// charm's (Python's logging levels), and the manager's slog level for each:
// slog has no level above ERROR, so CRITICAL and FATAL log errors.
var LogLevels = map[string]slog.Level{
	"DEBUG":    slog.LevelDebug,
	"INFO":     slog.LevelInfo,
	"WARNING":  slog.LevelWarn,
	"ERROR":    slog.LevelError,
	"CRITICAL": slog.LevelError,
	"FATAL":    slog.LevelError,
}

// logLevelNames lists LogLevels' keys in order, for the problem's text.
const logLevelNames = "DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL"

// ParseLogLevel is a log-level's slog level; "" is INFO. Case does not
// matter (the Python charm upper-cases the option too).
func ParseLogLevel(s string) (slog.Level, error) {
	if s == "" {
		return slog.LevelInfo, nil
	}
	level, ok := LogLevels[strings.ToUpper(strings.TrimSpace(s))]
	if !ok {
		return slog.LevelInfo, fmt.Errorf("must be %s", logLevelNames)
	}
	return level, nil
}

// Level is the file's log level as slog's (INFO if unset; Validate
// refuses one ParseLogLevel does not read).
func (f *File) Level() slog.Level {
	level, _ := ParseLogLevel(f.LogLevel)
	return level
}

// observabilityProblems are the log level's, the metrics port's and the
// log files' problems.
func (f *File) observabilityProblems() []Problem {
	var problems []Problem
	if _, err := ParseLogLevel(f.LogLevel); err != nil {
		problems = append(problems, Problem{"log-level", err.Error()})
	}
	if f.MetricsPort < 0 || f.MetricsPort > 65535 {
		problems = append(problems, Problem{"metrics-port", fmt.Sprintf("must be a TCP port (1 to 65535), or 0 for none, not %d", f.MetricsPort)})
	}
	for _, file := range []struct{ field, path string }{{"log-file", f.LogFile}, {"events-log", f.EventsLog}} {
		if file.path != "" && (!filepath.IsAbs(file.path) || strings.ContainsFunc(file.path, func(r rune) bool { return r < ' ' })) {
			problems = append(problems, Problem{file.field, "must be an absolute path"})
		}
	}
	return problems
}

// EventsLogPath is where the events log is: EventsLog, or events.log in
// the state directory.
func (f *File) EventsLogPath() string {
	if f.EventsLog != "" {
		return f.EventsLog
	}
	return filepath.Join(f.StateDir, "events.log")
}
