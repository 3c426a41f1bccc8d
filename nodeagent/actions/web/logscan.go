package web

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"time"
)

// Backward log scanning for read_domain_log and read_service_log: the
// newest lines are at the end, so a read starts there and goes back in
// blocks until it holds enough matching lines, meets a line older than
// asked for, or has looked at scanLimit bytes. A 1 GB log costs a read of
// the blocks that hold the answer, never the whole file.

// LogScan says what a backward scan looks for.
type LogScan struct {
	// Lines is the most lines returned.
	Lines int
	// Grep, when not empty, keeps only lines that contain it (a fixed,
	// case-sensitive substring).
	Grep []byte
	// Since, when not zero, stops the scan at the first line whose
	// LineTime is before it.
	Since    time.Time
	LineTime func(line []byte) (time.Time, bool)
	// Limit bounds the bytes returned (maxLogRead when 0); ScanLimit the
	// bytes looked at (DefaultScanLimit when 0).
	Limit     int
	ScanLimit int64
}

// DefaultScanLimit bounds the bytes one scan reads.
const DefaultScanLimit = 256 << 20

const (
	scanBlock = 64 << 10
	// maxPending is how much of one line the scan holds while looking for
	// its start; a longer line keeps only its first maxLogLine bytes.
	maxPending = 64 << 10
)

// ScanBack returns the lines of r (size bytes) that s asks for, oldest
// first, each cut to maxLogLine bytes and made valid UTF-8. truncated says
// that lines were left out for a bound (lines, bytes, scan limit, a line
// cut), not because the log had no more or since stopped the scan.
func ScanBack(r io.ReaderAt, size int64, s LogScan) (lines []string, truncated bool, err error) {
	lines, truncated, _, err = scanBack(r, size, s)
	return lines, truncated, err
}

// scanBack is ScanBack that also says whether it read the whole file with
// room for more lines (an older file may then hold the rest).
func scanBack(r io.ReaderAt, size int64, s LogScan) (lines []string, truncated, exhausted bool, err error) {
	limit := s.Limit
	if limit <= 0 {
		limit = maxLogRead
	}
	scanLimit := s.ScanLimit
	if scanLimit <= 0 {
		scanLimit = DefaultScanLimit
	}
	since := !s.Since.IsZero() && s.LineTime != nil
	// Without since, a grep (no newline in it) finds its lines faster
	// than the lines find it.
	fast := len(s.Grep) > 0 && !since && bytes.IndexByte(s.Grep, '\n') < 0
	var hits []int
	var (
		bufs    [2][]byte
		which   int
		pending []byte // the start of the file up to the first newline seen
		chunk   = make([]byte, scanBlock)
		total   int
		off     = size
		atEnd   = true // the next line seen is the file's last
	)
	// take handles one complete line; it says whether the scan is over.
	take := func(line []byte) (done bool) {
		if atEnd {
			atEnd = false
			if len(line) == 0 {
				return false // the newline ending the file
			}
		}
		if since {
			if t, ok := s.LineTime(line); ok && t.Before(s.Since) {
				return true
			}
		}
		if len(s.Grep) > 0 && !bytes.Contains(line, s.Grep) {
			return false
		}
		if len(line) > maxLogLine {
			line, truncated = line[:maxLogLine], true
		}
		if total+len(line) > limit {
			truncated = true
			return true
		}
		total += len(line)
		lines = append(lines, strings.ToValidUTF8(string(line), "\uFFFD"))
		return len(lines) >= s.Lines
	}
	done := false
	for !done {
		if off == 0 {
			exhausted = true
			if len(pending) > 0 || !atEnd {
				exhausted = !take(pending) // the file's first line
			}
			break
		}
		if size-off >= scanLimit {
			truncated = true
			break
		}
		step := min(int64(scanBlock), off)
		off -= step
		if _, err := r.ReadAt(chunk[:step], off); err != nil && !errors.Is(err, io.EOF) {
			return nil, false, false, err
		}
		which ^= 1
		buf := append(append(bufs[which][:0], chunk[:step]...), pending...)
		bufs[which] = buf
		end := len(buf)
		stop := 0 // where the last line taken starts, less one
		if fast {
			// Look for grep in the whole block (a vectorised search)
			// rather than in each line, then take the lines it is in.
			end = bytes.IndexByte(buf, '\n')
			if end >= 0 {
				hits = hits[:0]
				for from := end + 1; from < len(buf); {
					k := bytes.Index(buf[from:], s.Grep)
					if k < 0 {
						break
					}
					hits = append(hits, from+k)
					from += k + len(s.Grep)
				}
				atEnd = false    // grep matches no empty line: nothing to skip
				next := len(buf) // lines before next are not taken yet
				for h := len(hits) - 1; h >= 0 && !done; h-- {
					if hits[h] >= next {
						continue // a second hit in a line already taken
					}
					ls := bytes.LastIndexByte(buf[:hits[h]], '\n') + 1
					le := ls + bytes.IndexByte(buf[ls:next], '\n')
					if le < ls {
						le = next
					}
					done = take(buf[ls:le])
					next = ls
				}
				stop = next - 1
			} else {
				end = len(buf)
			}
		} else {
			for !done {
				i := bytes.LastIndexByte(buf[:end], '\n')
				if i < 0 {
					break
				}
				done = take(buf[i+1 : end])
				end = i
			}
			stop = end
		}
		pending = buf[:end]
		if len(pending) > maxPending {
			// Keep the line's start (the bytes read next go before it).
			pending, truncated = pending[:maxLogLine], true
		}
		if done && len(lines) >= s.Lines && (stop > 0 || off > 0) {
			truncated = true // stopped at n lines with more before them
		}
	}
	for i, j := 0, len(lines)-1; i < j; i, j = i+1, j-1 {
		lines[i], lines[j] = lines[j], lines[i]
	}
	return lines, truncated, exhausted, nil
}

// accessLineTime reads the "time" of an npanel_json line, which nginx
// writes first.
func accessLineTime(line []byte) (time.Time, bool) {
	const prefix = `{"time":"`
	if len(line) < len(prefix)+25 || !bytes.HasPrefix(line, []byte(prefix)) {
		return time.Time{}, false
	}
	u := parseISOTime(line[len(prefix) : len(prefix)+25])
	return time.Unix(u, 0), u != 0
}

// errorLineTime reads the "2026/12/06 12:29:11" an nginx (or PHP-FPM
// pool) error line starts with, in the node's local time as nginx writes
// it.
func errorLineTime(line []byte) (time.Time, bool) {
	if len(line) < 19 || line[4] != '/' || line[13] != ':' {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("2006/01/02 15:04:05", string(line[:19]), time.Local)
	return t, err == nil
}
