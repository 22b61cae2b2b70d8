package charm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// jujuLogHandler sends slog records to juju-log, so they show in
// `juju debug-log` at their level. If juju-log itself fails, the line goes to
// stderr, which Juju also records (as WARNING).
type jujuLogHandler struct {
	tools    *Tools
	fallback io.Writer
	level    slog.Leveler
	attrs    []slog.Attr
	group    string
}

func newJujuLogHandler(tools *Tools, fallback io.Writer, level slog.Leveler) *jujuLogHandler {
	return &jujuLogHandler{tools: tools, fallback: fallback, level: level}
}

func (h *jujuLogHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.level.Level()
}

func (h *jujuLogHandler) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		writeAttr(&b, "", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, h.group, a)
		return true
	})
	line := b.String()
	if err := h.tools.Log(ctx, jujuLevel(r.Level), line); err != nil {
		fmt.Fprintf(h.fallback, "%s %s\n", jujuLevel(r.Level), line)
	}
	return nil
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if group != "" {
		key = group + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, inner := range a.Value.Group() {
			writeAttr(b, key, inner)
		}
		return
	}
	value := a.Value.Resolve().String()
	if strings.ContainsAny(value, " \t\n\"=") || value == "" {
		value = fmt.Sprintf("%q", value)
	}
	fmt.Fprintf(b, " %s=%s", key, value)
}

func (h *jujuLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := *h
	c.attrs = make([]slog.Attr, 0, len(h.attrs)+len(attrs))
	c.attrs = append(c.attrs, h.attrs...)
	for _, a := range attrs {
		if h.group != "" {
			a.Key = h.group + "." + a.Key
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *jujuLogHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}

func jujuLevel(level slog.Level) string {
	switch {
	case level >= slog.LevelError:
		return "ERROR"
	case level >= slog.LevelWarn:
		return "WARNING"
	case level >= slog.LevelInfo:
		return "INFO"
	default:
		return "DEBUG"
	}
}
