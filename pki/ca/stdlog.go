package ca

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// smallstep's authority writes a few diagnostics with the standard library's
// global logger (log.Printf) even with WithQuietInit: a provisioner that fails
// to initialise, key-manager close errors, CRL and SCEP messages. On the
// configuration New builds, only the first is reachable, and New reports that
// condition as an error anyway; but the global logger belongs to the whole
// process, so what happens to those lines is decided here, once, on purpose:
//
//   - If the process already configured the standard logger (log.SetOutput,
//     log.SetFlags, log.SetPrefix, or slog.SetDefault, which redirects it into
//     slog), it is left alone: its owner has chosen where such lines go.
//   - If Options.Logger is nil, it is left alone too: we have nowhere better to
//     send the lines, and discarding them would also silence every other
//     library in the process.
//   - Otherwise the standard logger is pointed at the first CA's slog handler,
//     at WARN with logger=stdlog, so nothing reaches stderr unstructured. This
//     affects every user of the standard logger in the process, which is the
//     point: a process that embeds nPanel's CA logs through slog.
//
// A handler that itself writes through the standard logger (slog's default
// handler, before any slog.SetDefault) would loop, so it is never installed.
var stdlogOnce sync.Once

func routeStdLog(l *slog.Logger) {
	if l == nil {
		return
	}
	stdlogOnce.Do(func() {
		if !shouldRouteStdLog(log.Writer(), log.Flags(), log.Prefix(), l.Handler()) {
			return
		}
		log.SetFlags(0) // slog stamps the time
		log.SetOutput(stdlogWriter{h: l.Handler()})
	})
}

// shouldRouteStdLog is the decision of routeStdLog, separated so it can be
// tested without touching the process-wide logger.
func shouldRouteStdLog(w io.Writer, flags int, prefix string, h slog.Handler) bool {
	untouched := w == io.Writer(os.Stderr) && flags == log.LstdFlags && prefix == ""
	return untouched && !writesToStdLog(h)
}

// writesToStdLog detects slog's unexported default handler, which formats
// records and hands them to the standard logger.
func writesToStdLog(h slog.Handler) bool {
	return fmt.Sprintf("%T", h) == "*slog.defaultHandler"
}

// stdlogWriter turns each line the standard logger emits into a slog record.
type stdlogWriter struct{ h slog.Handler }

func (w stdlogWriter) Write(p []byte) (int, error) {
	ctx := context.Background()
	if !w.h.Enabled(ctx, slog.LevelWarn) {
		return len(p), nil
	}
	r := slog.NewRecord(time.Now(), slog.LevelWarn, strings.TrimRight(string(p), "\n"), 0)
	r.AddAttrs(slog.String("logger", "stdlog"))
	// A failing handler must not make a library's log call fail: the standard
	// logger ignores write errors anyway.
	_ = w.h.Handle(ctx, r)
	return len(p), nil
}
