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

// A segment dropped for room while it is being pushed is the push's to
// count: shipped if Loki took it, lost only if the push failed.
func TestDroppedWhilePushing(t *testing.T) {
	body := bytes.Repeat([]byte("x"), 100)
	segSize := int64(len(encodeSegment(1, body)))
	for _, tc := range []struct {
		name      string
		settled   bool
		wantCount bool
	}{
		{"shipped", true, true},
		{"retried", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := openBuffer(t.TempDir(), 2*segSize)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, err := b.add(5, body); err != nil {
					t.Fatal(err)
				}
			}
			seg, _ := b.oldest()
			b.startPush(seg.seq)
			// Room for a third takes the oldest, the one in flight: not
			// counted as dropped here.
			dropped, err := b.add(7, body)
			if err != nil || dropped != 0 {
				t.Fatalf("add: dropped %d, err %v; want 0 dropped while its push is open", dropped, err)
			}
			if got := b.endPush(seg.seq, tc.settled); got != tc.wantCount {
				t.Fatalf("endPush(settled %v) = %v, want %v", tc.settled, got, tc.wantCount)
			}
			if next, _ := b.oldest(); next.seq == seg.seq {
				t.Fatal("the dropped segment is still the oldest")
			}
			// Without a push open, room is made as before, and counted.
			if dropped, _ := b.add(9, body); dropped != 5 {
				t.Fatalf("dropped %d lines, want the 5 of the next oldest", dropped)
			}
		})
	}
	t.Run("not dropped", func(t *testing.T) {
		b, _ := openBuffer(t.TempDir(), 4*segSize)
		b.add(5, body)
		seg, _ := b.oldest()
		b.startPush(seg.seq)
		if b.endPush(seg.seq, false) {
			t.Fatal("a failed push of a segment still buffered counted as lost")
		}
		if !b.endPush(seg.seq, true) || b.endPush(seg.seq, true) {
			t.Fatal("a settled segment must be counted exactly once")
		}
	})
}
