package db

import (
	"bufio"
	"io"
	"strings"
	"testing"
)

func TestDropLine(t *testing.T) {
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
		d := &dropLine{r: bufio.NewReaderSize(strings.NewReader(c.in), 16), line: []byte(`\unrestrict K`), atStart: true}
		got, err := io.ReadAll(d)
		if err != nil || string(got) != c.want {
			t.Errorf("%q: %q %v, want %q", c.in, got, err, c.want)
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
