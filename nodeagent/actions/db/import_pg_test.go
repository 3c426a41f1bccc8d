package db

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

// The dump's own \unrestrict line is left out, and only that line.
func TestPlainFilterUnrestrict(t *testing.T) {
	long := strings.Repeat("x", 100)
	for _, c := range []struct{ in, want string }{
		{"a\n\\unrestrict K\nb\n", "a\nb\n"},
		{"a\n\\unrestrict K", "a\n"},
		{"a\n\\unrestrict K \r\n", "a\n"},
		{"a\n\\unrestrict KK\n\\unrestrict L\n", "a\n\\unrestrict KK\n\\unrestrict L\n"},
		{"x\\unrestrict K\n", "x\\unrestrict K\n"},
		// A line longer than the buffer that ends in the line is kept.
		{long + "\\unrestrict K\nend", long + "\\unrestrict K\nend"},
	} {
		f := &plainFilter{r: bufio.NewReaderSize(strings.NewReader(c.in), 16), unrestrict: "K", atStart: true, done: func() error { return nil }}
		got, err := io.ReadAll(f)
		if want := c.want + "\nCOMMIT;\n"; err != nil || string(got) != want {
			t.Errorf("%q: %q %v, want %q", c.in, got, err, c.want+"\nCOMMIT;\n")
		}
	}
}

func TestCutLastLine(t *testing.T) {
	head, last := cutLastLine([]byte("--\n-- dump\n\n\\restrict abc \r\n"))
	if string(head) != "--\n-- dump\n\n" || last != `\restrict abc` {
		t.Errorf("%q %q", head, last)
	}
	head, last = cutLastLine([]byte("\\restrict abc\n"))
	if string(head) != "" || last != `\restrict abc` {
		t.Errorf("%q %q", head, last)
	}
}
