package ca

import (
	"bytes"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"
	"testing"
)

func TestShouldRouteStdLog(t *testing.T) {
	ours := slog.NewTextHandler(io.Discard, nil)
	tests := []struct {
		desc   string
		w      io.Writer
		flags  int
		prefix string
		h      slog.Handler
		want   bool
	}{
		{"untouched standard logger", os.Stderr, log.LstdFlags, "", ours, true},
		{"output redirected", io.Discard, log.LstdFlags, "", ours, false},
		{"flags changed", os.Stderr, log.LstdFlags | log.Lshortfile, "", ours, false},
		{"prefix set", os.Stderr, log.LstdFlags, "app: ", ours, false},
		// slog's default handler writes through the standard logger: routing
		// the standard logger into it would loop.
		{"slog default handler", os.Stderr, log.LstdFlags, "", slog.Default().Handler(), false},
	}
	if !writesToStdLog(slog.Default().Handler()) {
		t.Skip("slog.SetDefault was called in this process; the default handler is not slog's own")
	}
	for _, tt := range tests {
		if got := shouldRouteStdLog(tt.w, tt.flags, tt.prefix, tt.h); got != tt.want {
			t.Errorf("%s: shouldRouteStdLog = %v, want %v", tt.desc, got, tt.want)
		}
	}
}

func TestStdLogWriter(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})
	l := log.New(stdlogWriter{h: h}, "", 0)
	l.Printf("failed to initialize %s provisioner %q: %v", "JWK", "x", "boom")
	out := buf.String()
	for _, want := range []string{"level=WARN", "logger=stdlog", `failed to initialize JWK provisioner \"x\": boom"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("output %q is not one record", out)
	}

	buf.Reset()
	quiet := log.New(stdlogWriter{h: slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})}, "", 0)
	quiet.Print("dropped")
	if buf.Len() != 0 {
		t.Errorf("a handler above WARN received %q", buf.String())
	}
}
