package web

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/platform"
)

func TestScanBack(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var log bytes.Buffer
	for i := range 1000 {
		status := 200
		if i%10 == 0 {
			status = 404
		}
		fmt.Fprintln(&log, accessLine(t0.Add(time.Duration(i)*time.Second), status, i, "0.001"))
	}
	data := log.Bytes()
	scan := func(s LogScan) ([]string, bool) {
		t.Helper()
		s.LineTime = accessLineTime
		lines, trunc, err := ScanBack(bytes.NewReader(data), int64(len(data)), s)
		if err != nil {
			t.Fatal(err)
		}
		return lines, trunc
	}
	// grep: the last 5 of the 100 404s, oldest first.
	lines, trunc := scan(LogScan{Lines: 5, Grep: []byte(`"status":404`)})
	if len(lines) != 5 || !trunc || !strings.Contains(lines[0], `"bytes":950,`) || !strings.Contains(lines[4], `"bytes":990,`) {
		t.Errorf("grep: %v %v", lines, trunc)
	}
	// since: the lines of the last 10 seconds, not truncated.
	lines, trunc = scan(LogScan{Lines: 1000, Since: t0.Add(990 * time.Second)})
	if len(lines) != 10 || trunc || !strings.Contains(lines[0], `"bytes":990,`) {
		t.Errorf("since: %d lines %v", len(lines), trunc)
	}
	// since and grep together.
	lines, _ = scan(LogScan{Lines: 1000, Since: t0.Add(900 * time.Second), Grep: []byte(`"status":404`)})
	if len(lines) != 10 {
		t.Errorf("since+grep: %d lines", len(lines))
	}
	// A scan bound: a grep that never matches gives up, truncated.
	lines, trunc = scan(LogScan{Lines: 10, Grep: []byte("nothing"), ScanLimit: 64 << 10})
	if len(lines) != 0 || !trunc {
		t.Errorf("scan bound: %v %v", lines, trunc)
	}
	// No match in the whole file: not truncated.
	if lines, trunc = scan(LogScan{Lines: 10, Grep: []byte("nothing")}); len(lines) != 0 || trunc {
		t.Errorf("no match: %v %v", lines, trunc)
	}
	// Error log times.
	if tm, ok := errorLineTime([]byte("2026/12/06 12:29:11 [error] 12#12: *1 open() failed")); !ok || !tm.Equal(time.Date(2026, 12, 6, 12, 29, 11, 0, time.Local)) {
		t.Errorf("errorLineTime: %v %v", tm, ok)
	}
}

// TestReadDomainLogSinceGrep reads through the action's file access: the
// account's own directory only, so another account's log of the same
// domain name is never read.
func TestReadDomainLogSinceGrep(t *testing.T) {
	dir := t.TempDir()
	w := platform.WebPaths{DomainLogDir: dir}
	now := time.Now().Truncate(time.Second)
	for user, body := range map[string]string{
		"alice": accessLine(now.Add(-time.Hour), 200, 1, "0.1") + "\n" + accessLine(now, 200, 2, "0.1") + "\n",
		"bob":   accessLine(now, 200, 99, "0.1") + "\n",
	} {
		os.MkdirAll(filepath.Join(dir, user), 0o750)
		if err := os.WriteFile(filepath.Join(dir, user, "example.com.access.log"), []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	lines, _, err := readLogTail(w, "alice", "example.com.access.log", LogScan{Lines: 10, Since: now.Add(-time.Minute), LineTime: accessLineTime})
	if err != nil || len(lines) != 1 || !strings.Contains(lines[0], `"bytes":2,`) {
		t.Errorf("since: %v %v", lines, err)
	}
	lines, _, _ = readLogTail(w, "alice", "example.com.access.log", LogScan{Lines: 10, Grep: []byte(`"bytes":99`)})
	if len(lines) != 0 {
		t.Errorf("alice read bob's line: %v", lines)
	}
	// Since reaches into the rotated generation; without since it does not.
	rotated := accessLine(now.Add(-2*time.Hour), 200, 7, "0.1") + "\n" + accessLine(now.Add(-90*time.Minute), 200, 8, "0.1") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "alice", "example.com.access.log.1"), []byte(rotated), 0o640); err != nil {
		t.Fatal(err)
	}
	lines, _, _ = readLogTail(w, "alice", "example.com.access.log", LogScan{Lines: 10, Since: now.Add(-100 * time.Minute), LineTime: accessLineTime})
	if len(lines) != 3 || !strings.Contains(lines[0], `"bytes":8,`) || !strings.Contains(lines[2], `"bytes":2,`) {
		t.Errorf("since into .1: %q", lines)
	}
	if lines, _, _ = readLogTail(w, "alice", "example.com.access.log", LogScan{Lines: 10}); len(lines) != 2 {
		t.Errorf("no since: %q", lines)
	}
	for _, g := range []string{strings.Repeat("x", MaxGrep+1), "a\nb", "\x00", "\xff"} {
		if ValidateGrep(g) == nil {
			t.Errorf("grep %q accepted", g)
		}
	}
	if ValidateGrep(`"status":404 ünïcode`) != nil {
		t.Error("grep refused")
	}
}

// BenchmarkReadDomainLog1GB reads 1,000 lines from the end of a 1 GB
// access log: the last lines, the 404s among them (one line in 100) and
// the last 10 minutes.
func BenchmarkReadDomainLog1GB(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "example.com.access.log")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	// One block of lines written again and again, with times rising
	// across the file: one line a millisecond.
	bw := bufio.NewWriterSize(f, 1<<20)
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var size int64
	for i := 0; size < 1<<30; i++ {
		status := 200
		if i%100 == 0 {
			status = 404
		}
		l := accessLine(start.Add(time.Duration(i)*time.Millisecond), status, 5120+i%1000, "0.012")
		n, _ := bw.WriteString(l + "\n")
		size += int64(n)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	end := start.Add(time.Duration(size/300) * time.Millisecond) // roughly
	for _, bc := range []struct {
		name string
		sc   LogScan
	}{
		{"last", LogScan{Lines: 1000}},
		{"grep", LogScan{Lines: 1000, Grep: []byte(`"status":404`)}},
		{"since", LogScan{Lines: 1000, Since: end.Add(-10 * time.Minute), LineTime: accessLineTime}},
		{"grep-nomatch", LogScan{Lines: 1000, Grep: []byte("no such text")}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			sc := bc.sc
			sc.Limit = 1 << 30 // the result bound is the action's; measure the scan
			var took []time.Duration
			for b.Loop() {
				t0 := time.Now()
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				fi, _ := f.Stat()
				lines, _, err := ScanBack(f, fi.Size(), sc)
				f.Close()
				if err != nil || len(lines) == 0 && bc.name != "grep-nomatch" && bc.name != "since" {
					b.Fatalf("%d lines, %v", len(lines), err)
				}
				took = append(took, time.Since(t0))
				b.ReportMetric(float64(len(lines)), "lines/op")
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[(len(took)*99)/100].Nanoseconds()), "p99-ns")
		})
	}
}

// FuzzScanBackGrep: the block search for grep returns what the line by
// line scan does (forced by a since no line is older than).
func FuzzScanBackGrep(f *testing.F) {
	f.Add([]byte("a x\nb\nx c\n\nxx\n"), "x", 2)
	f.Add([]byte("xxxx"), "xx", 5)
	f.Add([]byte(strings.Repeat("ab\n", 30000)), "b", 1000)
	f.Fuzz(func(t *testing.T, data []byte, grep string, n int) {
		if n < 1 || n > MaxLogLines || grep == "" || strings.Contains(grep, "\n") {
			return
		}
		always := func([]byte) (time.Time, bool) { return time.Now(), true }
		fast, ft, err1 := ScanBack(bytes.NewReader(data), int64(len(data)), LogScan{Lines: n, Grep: []byte(grep)})
		slow, st, err2 := ScanBack(bytes.NewReader(data), int64(len(data)), LogScan{Lines: n, Grep: []byte(grep), Since: time.Unix(1, 0), LineTime: always})
		if err1 != nil || err2 != nil || strings.Join(fast, "\n") != strings.Join(slow, "\n") || len(fast) != len(slow) || ft != st {
			t.Fatalf("fast %q %v, slow %q %v", fast, ft, slow, st)
		}
	})
}
