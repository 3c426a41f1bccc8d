package services

import (
	"strings"
	"sync"
	"unicode/utf8"
)

// tailSize bounds the daemon output kept for error reports: enough for the
// last few lines a daemon prints before it dies, small enough to carry in
// a status report.
const tailSize = 4 << 10

// tailBuffer is an io.Writer that keeps only the last tailSize bytes
// written to it. The daemon's stdout and stderr both write to it, from
// exec's copying goroutines, while Status reads it.
type tailBuffer struct {
	mu   sync.Mutex
	buf  [tailSize]byte
	n    int // bytes held, ≤ tailSize
	head int // index of the oldest byte when full
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	written := len(p)
	if len(p) >= tailSize {
		copy(b.buf[:], p[len(p)-tailSize:])
		b.n, b.head = tailSize, 0
		return written, nil
	}
	for len(p) > 0 {
		if b.n < tailSize {
			// Not full yet, so head is still 0: append.
			c := copy(b.buf[b.n:], p)
			b.n += c
			p = p[c:]
			continue
		}
		// Full: overwrite the oldest bytes.
		c := copy(b.buf[b.head:], p)
		b.head = (b.head + c) % tailSize
		p = p[c:]
	}
	return written, nil
}

// String returns the kept output, trimmed of surrounding white space and
// of a partial line or rune cut off at the start.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	out := make([]byte, 0, b.n)
	if b.n < tailSize {
		out = append(out, b.buf[b.head:b.head+b.n]...)
	} else {
		out = append(out, b.buf[b.head:]...)
		out = append(out, b.buf[:b.head]...)
	}
	full := b.n == tailSize
	b.mu.Unlock()

	s := string(out)
	if full {
		// The first line is probably cut: drop its rest, unless it is
		// long, when a cut line says more than none.
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < 512 {
			s = s[i+1:]
		}
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
	}
	return strings.TrimSpace(s)
}
