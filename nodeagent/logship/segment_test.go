package logship

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func FuzzDecodeSegment(f *testing.F) {
	f.Add(encodeSegment(3, []byte("body")))
	f.Add(encodeSegment(0, nil))
	f.Add([]byte("NPLK\x01\x00\x00\x00\x01\xff\xff\xff\xff\x00\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		lines, body, err := decodeSegment(b)
		if err != nil {
			return
		}
		// Whatever decodes is exactly what encodeSegment makes of it.
		if again := encodeSegment(lines, body); !bytes.Equal(again, b) {
			t.Fatalf("decode/encode changed %x to %x", b, again)
		}
	})
}

func TestDamagedSegmentsDiscardedAtOpen(t *testing.T) {
	dir := t.TempDir()
	good := encodeSegment(2, []byte("ok"))
	os.WriteFile(filepath.Join(dir, segName(4)), good, 0o600)
	os.WriteFile(filepath.Join(dir, segName(5)), good[:len(good)-1], 0o600)
	os.WriteFile(filepath.Join(dir, segName(6)), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(dir, "other"), []byte("junk"), 0o600)
	b, err := openBuffer(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.segs) != 1 || b.segs[0].seq != 4 || b.segs[0].lines != 2 || b.next != 5 || b.total != int64(len(good)) {
		t.Fatalf("segments %+v next %d total %d", b.segs, b.next, b.total)
	}
	if _, err := os.Stat(filepath.Join(dir, segName(5))); err == nil {
		t.Fatal("truncated segment kept")
	}
}
