package db

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/npanel/npanel/internal/atomicfile"
)

// dumpTimeFormat stamps dump names in UTC, sortable as text (the account
// archives use the same).
const dumpTimeFormat = "20060102T150405Z"

// dumpCmd is a dump tool run as an argument vector.
type dumpCmd struct {
	argv []string
	env  []string // complete environment; nil: PATH only
}

// dumpDir opens BackupDir/<owner>/db, creating it 0700. The owner was
// validated (no '/', no "..") and os.Root keeps every later name inside.
func dumpDir(backupDir, owner string) (*os.Root, string, error) {
	if err := os.MkdirAll(backupDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("create backup area: %w", err)
	}
	bk, err := os.OpenRoot(backupDir)
	if err != nil {
		return nil, "", fmt.Errorf("open backup area: %w", err)
	}
	defer bk.Close()
	sub := filepath.Join(owner, "db")
	if err := bk.MkdirAll(sub, 0o700); err != nil {
		return nil, "", fmt.Errorf("create dump directory: %w", err)
	}
	r, err := bk.OpenRoot(sub)
	if err != nil {
		return nil, "", fmt.Errorf("open dump directory: %w", err)
	}
	return r, filepath.Join(backupDir, sub), nil
}

// tailBuf keeps the last bytes written through it.
type tailBuf struct {
	n    int64
	tail []byte
}

func (t *tailBuf) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	t.tail = append(t.tail, p...)
	if len(t.tail) > 512 {
		t.tail = append(t.tail[:0], t.tail[len(t.tail)-512:]...)
	}
	return len(p), nil
}

// complete says whether a dump of n bytes ending in tail is a finished
// dump: non-empty and a line near its end starts with trailer (mariadb-dump
// and pg_dump both end with such a comment, and only when they got to the
// end).
func complete(n int64, tail []byte, trailer string) bool {
	return n > 0 && bytes.Contains(tail, []byte("\n"+trailer))
}

// writeDump runs cmd, compresses its output into dir as
// <name>-<UTC time>.sql.gz and returns the path and size. The file
// appears under its final name only complete: written to a temporary file
// (0600: the dump holds the customer's data), the tool's exit status
// checked, the stream checked to end with trailer, synced, then read back
// in full (gzip checksum, same length, same ending) before the rename. Any
// failure leaves no dump and returns an error, so the caller drops nothing.
func writeDump(ctx context.Context, dir *os.Root, dirPath, name string, cmd dumpCmd, trailer string) (_ string, _ int64, err error) {
	defer dir.Close()
	final, err := freeDumpName(dir, name, time.Now())
	if err != nil {
		return "", 0, err
	}
	f, err := atomicfile.Create(dir, final, 0o600, nil)
	if err != nil {
		return "", 0, fmt.Errorf("create dump file: %w", err)
	}
	defer f.Abort()

	bw := bufio.NewWriterSize(f, 256<<10)
	gz := gzip.NewWriter(bw)
	tb := &tailBuf{}
	c := exec.CommandContext(ctx, cmd.argv[0], cmd.argv[1:]...)
	c.Env = cmd.env
	if c.Env == nil {
		c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	c.Stdout = io.MultiWriter(gz, tb)
	var stderr limitedBuf
	c.Stderr = &stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	if err := c.Run(); err != nil {
		return "", 0, fmt.Errorf("%s: %w: %s", filepath.Base(cmd.argv[0]), err, bytes.TrimSpace(stderr.b))
	}
	if !complete(tb.n, tb.tail, trailer) {
		return "", 0, fmt.Errorf("%s wrote %d bytes without its completion line %q: dump incomplete", filepath.Base(cmd.argv[0]), tb.n, trailer)
	}
	if err := gz.Close(); err != nil {
		return "", 0, fmt.Errorf("write dump: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return "", 0, fmt.Errorf("write dump: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", 0, fmt.Errorf("write dump: %w", err)
	}
	size, err := verifyDump(dir, f.TempName(), tb, trailer)
	if err != nil {
		return "", 0, fmt.Errorf("verify dump: %w", err)
	}
	if err := f.Commit(); err != nil {
		return "", 0, fmt.Errorf("write dump: %w", err)
	}
	return filepath.Join(dirPath, final), size, nil
}

// verifyDump reads the written file back: it must decompress cleanly to the
// same length and ending as what the tool produced.
func verifyDump(dir *os.Root, name string, want *tailBuf, trailer string) (int64, error) {
	f, err := dir.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		return 0, err
	}
	got := &tailBuf{}
	if _, err := io.Copy(got, zr); err != nil {
		return 0, err
	}
	if got.n != want.n || !bytes.Equal(got.tail, want.tail) || !complete(got.n, got.tail, trailer) {
		return 0, fmt.Errorf("read back %d bytes, wrote %d (or the ending differs)", got.n, want.n)
	}
	return fi.Size(), nil
}

func freeDumpName(dir *os.Root, name string, now time.Time) (string, error) {
	stamp := name + "-" + now.UTC().Format(dumpTimeFormat)
	for i := 0; i < 100; i++ {
		n := stamp + ".sql.gz"
		if i > 0 {
			n = fmt.Sprintf("%s-%d.sql.gz", stamp, i)
		}
		if _, err := dir.Lstat(n); errors.Is(err, fs.ErrNotExist) {
			return n, nil
		} else if err != nil {
			return "", fmt.Errorf("dump name: %w", err)
		}
	}
	return "", fmt.Errorf("dump name: too many dumps named %s-*", stamp)
}

// limitedBuf keeps the first 4 KiB of a tool's stderr for error messages.
type limitedBuf struct{ b []byte }

func (l *limitedBuf) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}
