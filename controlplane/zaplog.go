package controlplane

import (
	"context"
	"log/slog"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapToSlog routes etcd's zap logging into our slog logger, so the server
// writes one log format. Messages etcd logs at error level while it shuts
// down ("mux: server closed", "use of closed network connection", upstream
// etcd-io/etcd#17424) are demoted to debug: they are expected, not faults.
func zapToSlog(log *slog.Logger, min zapcore.Level) *zap.Logger {
	return zap.New(&slogCore{log: log, min: min})
}

type slogCore struct {
	log    *slog.Logger
	min    zapcore.Level
	fields []zapcore.Field
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.min }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, min: c.min, fields: append(append([]zapcore.Field(nil), c.fields...), fs...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(c.fields, fs...) {
		f.AddTo(enc)
	}
	attrs := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, k, v)
	}
	lvl := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		lvl = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		lvl = slog.LevelWarn
	case e.Level <= zapcore.DebugLevel:
		lvl = slog.LevelDebug
	}
	if err, _ := enc.Fields["error"].(string); strings.Contains(err, "closed") && lvl >= slog.LevelWarn {
		lvl = slog.LevelDebug
	}
	// Start-up notes that are true of every embedded single-member etcd and
	// that an operator can do nothing about.
	if e.Message == "Running http and grpc server on single port. This is not recommended for production." ||
		e.Message == "simple token is not cryptographically signed" {
		lvl = slog.LevelDebug
	}
	c.log.Log(context.Background(), lvl, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
