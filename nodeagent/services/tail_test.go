package services

import (
	"bytes"
	"strings"
	"testing"
)

func TestTailBufferKeepsTheEnd(t *testing.T) {
	line := func(i int) string { return strings.Repeat(string(rune('a'+i%26)), 99) + "\n" } // 100 bytes
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"empty", nil, ""},
		{"short", []string{"  nginx: [emerg] bad\n"}, "nginx: [emerg] bad"},
		{"two writes", []string{"abc", "def\n"}, "abcdef"},
		{"exactly full", []string{strings.Repeat("x", tailSize)}, strings.Repeat("x", tailSize)},
		{"one big write", []string{"first line\n" + strings.Repeat("y", tailSize) + "\nlast"}, strings.Repeat("y", tailSize-5) + "\nlast"},
		{"cut first line dropped", []string{strings.Repeat("z", 100) + "\n", strings.Repeat("w", tailSize-50) + "\nerror"}, strings.Repeat("w", tailSize-50) + "\nerror"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b tailBuffer
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("got %q…(%d bytes), want %d bytes", got[:min(len(got), 40)], len(got), len(tc.want))
			}
		})
	}

	// Many small writes wrapping around the ring: the result is the last
	// whole lines of everything written.
	var b tailBuffer
	var all bytes.Buffer
	for i := range 1000 {
		b.Write([]byte(line(i)))
		all.WriteString(line(i))
	}
	end := all.Bytes()[all.Len()-tailSize:]
	want := strings.TrimSpace(string(end[bytes.IndexByte(end, '\n')+1:]))
	if got := b.String(); got != want {
		t.Errorf("after wrapping: %d bytes, want %d; ends %q", len(got), len(want), got[len(got)-20:])
	}
	// A multi-byte rune cut at the start is dropped, not garbled.
	var r tailBuffer
	r.Write([]byte(strings.Repeat("é", tailSize))) // 2 bytes each
	r.Write([]byte("x"))
	if got := r.String(); !strings.HasSuffix(got, "x") || strings.ContainsRune(got, '\uFFFD') || !strings.HasPrefix(got, "é") {
		t.Errorf("cut rune not dropped: %q…", got[:10])
	}
}
