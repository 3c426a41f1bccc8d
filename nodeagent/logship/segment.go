package logship

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/npanel/npanel/internal/atomicfile"
)

// A segment file is one push request as Loki receives it (snappy-compressed
// protobuf) behind a small header:
//
//	"NPLK" | version 1 | lines uint32 | body length uint32 | crc32c(body) uint32 | body
//
// The line count lets a dropped segment be counted without decoding it.
const (
	segMagic      = "NPLK"
	segVersion    = 1
	segHeaderSize = 4 + 1 + 4 + 4 + 4
	segSuffix     = ".seg"
	// maxSegmentBody bounds what the decoder accepts: a batch is about
	// 1 MiB before compression.
	maxSegmentBody = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errBadSegment = errors.New("logship: damaged buffer segment")

func encodeSegment(lines int, body []byte) []byte {
	b := make([]byte, segHeaderSize, segHeaderSize+len(body))
	copy(b, segMagic)
	b[4] = segVersion
	binary.BigEndian.PutUint32(b[5:], uint32(lines))
	binary.BigEndian.PutUint32(b[9:], uint32(len(body)))
	binary.BigEndian.PutUint32(b[13:], crc32.Checksum(body, castagnoli))
	return append(b, body...)
}

// decodeHeader returns the line count and body length a segment declares.
func decodeHeader(h []byte) (lines int, bodyLen int, err error) {
	if len(h) < segHeaderSize || string(h[:4]) != segMagic || h[4] != segVersion {
		return 0, 0, errBadSegment
	}
	n := binary.BigEndian.Uint32(h[9:])
	if n > maxSegmentBody {
		return 0, 0, errBadSegment
	}
	return int(binary.BigEndian.Uint32(h[5:])), int(n), nil
}

// decodeSegment checks a whole segment and returns its line count and body.
func decodeSegment(b []byte) (lines int, body []byte, err error) {
	lines, n, err := decodeHeader(b)
	if err != nil {
		return 0, nil, err
	}
	if len(b) != segHeaderSize+n {
		return 0, nil, errBadSegment
	}
	body = b[segHeaderSize:]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[13:]) {
		return 0, nil, errBadSegment
	}
	return lines, body, nil
}

// segment is one file of the buffer.
type segment struct {
	seq   uint64
	size  int64
	lines int
}

func segName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, segSuffix) }

// buffer is the directory of segments, oldest first, bounded in bytes.
type buffer struct {
	dir   string
	limit int64

	mu    sync.Mutex
	segs  []segment
	total int64
	next  uint64
	ready chan struct{} // signalled when a segment is added
	// pushing is the segment being pushed (startPush), if any; its lines
	// are the sender's to count by the push's outcome, even if add drops
	// it meanwhile (droppedPushing): Loki may still take it.
	pushing        uint64
	isPushing      bool
	droppedPushing bool
}

// openBuffer lists the segments a previous run left.
func openBuffer(dir string, limit int64) (*buffer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.RemoveTemps(dir); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	b := &buffer{dir: dir, limit: limit, next: 1, ready: make(chan struct{}, 1)}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		seq, err := strconv.ParseUint(name, 10, 64)
		if !ok || err != nil || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		lines, size, err := readHeader(path)
		if err != nil {
			// A segment that cannot be read would block the queue.
			_ = os.Remove(path)
			continue
		}
		b.segs = append(b.segs, segment{seq: seq, size: size, lines: lines})
		b.total += size
		b.next = max(b.next, seq+1)
	}
	slices.SortFunc(b.segs, func(x, y segment) int { return cmpU64(x.seq, y.seq) })
	return b, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func readHeader(path string) (lines int, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	h := make([]byte, segHeaderSize)
	if _, err := io.ReadFull(f, h); err != nil {
		return 0, 0, errBadSegment
	}
	lines, n, err := decodeHeader(h)
	if err != nil || int64(segHeaderSize+n) != fi.Size() {
		return 0, 0, errBadSegment
	}
	return lines, fi.Size(), nil
}

// add writes a segment, first dropping the oldest ones while the buffer
// would exceed its limit. It returns the lines dropped to make room.
func (b *buffer) add(lines int, body []byte) (dropped int, err error) {
	data := encodeSegment(lines, body)
	size := int64(len(data))
	if size > b.limit {
		return lines, errTooBig
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.total+size > b.limit && len(b.segs) > 0 {
		old := b.segs[0]
		b.segs = b.segs[1:]
		b.total -= old.size
		if b.isPushing && old.seq == b.pushing {
			b.droppedPushing = true
		} else {
			dropped += old.lines
		}
		_ = os.Remove(filepath.Join(b.dir, segName(old.seq)))
	}
	seq := b.next
	b.next++
	if err := atomicfile.WriteFile(filepath.Join(b.dir, segName(seq)), data, 0o600, nil); err != nil {
		return dropped, err
	}
	b.segs = append(b.segs, segment{seq: seq, size: size, lines: lines})
	b.total += size
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return dropped, nil
}

var errTooBig = errors.New("logship: batch larger than the whole buffer")

// oldest returns the oldest segment, if any.
func (b *buffer) oldest() (segment, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.segs) == 0 {
		return segment{}, false
	}
	return b.segs[0], true
}

// startPush marks seq, read for a push, as being pushed.
func (b *buffer) startPush(seq uint64) {
	b.mu.Lock()
	b.pushing, b.isPushing, b.droppedPushing = seq, true, false
	b.mu.Unlock()
}

// endPush ends the push of seq and reports whether its lines are the
// caller's to count. settled (Loki took or refused it for good): seq is
// removed, and counted if it was still buffered or add dropped it during
// the push. Not settled (to be retried): counted only if add dropped it,
// as lost.
func (b *buffer) endPush(seq uint64, settled bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	dropped := b.isPushing && b.pushing == seq && b.droppedPushing
	b.isPushing, b.droppedPushing = false, false
	if !settled {
		return dropped
	}
	return b.removeLocked(seq) || dropped
}

// remove deletes seq if it is still buffered (add may have dropped it
// meanwhile) and reports whether it was.
func (b *buffer) remove(seq uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.removeLocked(seq)
}

func (b *buffer) removeLocked(seq uint64) bool {
	i := slices.IndexFunc(b.segs, func(s segment) bool { return s.seq == seq })
	if i < 0 {
		return false
	}
	b.total -= b.segs[i].size
	b.segs = slices.Delete(b.segs, i, i+1)
	_ = os.Remove(filepath.Join(b.dir, segName(seq)))
	return true
}

func (b *buffer) read(seq uint64) ([]byte, error) {
	return os.ReadFile(filepath.Join(b.dir, segName(seq)))
}

func (b *buffer) bytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}
