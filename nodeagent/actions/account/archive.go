package account

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/npanel/npanel/internal/atomicfile"
)

// archiveTimeFormat stamps archive names in UTC, sortable as text.
const archiveTimeFormat = "20060102T150405Z"

// archiveSum is what both sides of the verification compute: the writer
// over what it put in the archive, the reader over what it got back out.
type archiveSum struct {
	entries int
	bytes   int64
	h       hash.Hash
}

func newArchiveSum() *archiveSum { return &archiveSum{h: sha256.New()} }

// header mixes an entry's identity into the digest; its content follows
// through the hash's Write.
func (s *archiveSum) header(h *tar.Header) {
	s.entries++
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(h.Size))
	s.h.Write([]byte{h.Typeflag})
	s.h.Write(b[:])
	s.h.Write([]byte(h.Name + "\x00" + h.Linkname + "\x00"))
}

func (s *archiveSum) equal(o *archiveSum) bool {
	return s.entries == o.entries && s.bytes == o.bytes && string(s.h.Sum(nil)) == string(o.h.Sum(nil))
}

// archiveHome writes the tree of home (a directory, opened as a root by the
// caller) into backupDir as <user>-<UTC time>.tar.gz and returns the
// archive's path. The archive appears under its final name only complete,
// synced and verified: it is written to a temporary file, read back in full
// (gzip checksum, entry count, content bytes and a digest of names and
// contents must match what was written), then renamed, and the rename is
// synced. Any failure leaves no archive and returns an error, so that the
// caller deletes nothing.
func archiveHome(ctx context.Context, home *os.Root, backupDir, user string, uid, gid uint32, now time.Time, log *slog.Logger) (_ string, err error) {
	if err := os.MkdirAll(backupDir, 0o700); err != nil {
		return "", fmt.Errorf("create backup area: %w", err)
	}
	bk, err := os.OpenRoot(backupDir)
	if err != nil {
		return "", fmt.Errorf("open backup area: %w", err)
	}
	defer bk.Close()

	final, err := freeArchiveName(bk, user, now)
	if err != nil {
		return "", err
	}
	// 0600: the archive holds the account's files, whatever their modes.
	f, err := atomicfile.Create(bk, final, 0o600, nil)
	if err != nil {
		return "", fmt.Errorf("create archive: %w", err)
	}
	defer f.Abort()

	a := &archiver{ctx: ctx, home: home, prefix: user, uid: uid, gid: gid, user: user, sum: newArchiveSum(), log: log}
	bw := bufio.NewWriterSize(f, 256<<10)
	gz := gzip.NewWriter(bw)
	a.tw = tar.NewWriter(gz)
	if err := a.dir("."); err != nil {
		return "", fmt.Errorf("archive home: %w", err)
	}
	if err := a.tw.Close(); err != nil {
		return "", fmt.Errorf("archive home: %w", err)
	}
	if err := gz.Close(); err != nil {
		return "", fmt.Errorf("archive home: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return "", fmt.Errorf("archive home: %w", err)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("archive home: %w", err)
	}

	if err := verifyArchive(bk, f.TempName(), a.sum); err != nil {
		return "", fmt.Errorf("verify archive: %w", err)
	}
	if err := f.Commit(); err != nil {
		return "", fmt.Errorf("archive home: %w", err)
	}
	return filepath.Join(backupDir, final), nil
}

// freeArchiveName picks an archive name not taken yet. Taken happens only
// when the same account is archived twice within a second (a delete retried
// after it failed past the archive), and both archives are kept.
func freeArchiveName(bk *os.Root, user string, now time.Time) (string, error) {
	stamp := user + "-" + now.UTC().Format(archiveTimeFormat)
	for i := 0; i < 100; i++ {
		name := stamp + ".tar.gz"
		if i > 0 {
			name = fmt.Sprintf("%s-%d.tar.gz", stamp, i)
		}
		if _, err := bk.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			return name, nil
		} else if err != nil {
			return "", fmt.Errorf("archive name: %w", err)
		}
	}
	return "", fmt.Errorf("archive name: too many archives named %s-*", stamp)
}

// archiver walks a home through os.Root and writes it to tw.
//
// Symlinks are stored as symlinks and never followed: every entry is looked
// at with Lstat, and only regular files and directories are opened. os.Root
// keeps every open inside the home, and the descriptor opened is checked
// (os.SameFile) to be the inode that Lstat saw, so an entry the account
// swaps for a symlink between the two steps fails the archive instead of
// being read through. Regular files are opened O_NONBLOCK so that a FIFO
// swapped in cannot hang the walk.
type archiver struct {
	ctx      context.Context
	home     *os.Root
	tw       *tar.Writer
	prefix   string // every entry's name starts with it: the archive unpacks into <user>/
	user     string
	uid, gid uint32
	sum      *archiveSum
	log      *slog.Logger
}

func (a *archiver) name(rel string) string {
	if rel == "." {
		return a.prefix + "/"
	}
	return a.prefix + "/" + rel
}

func (a *archiver) header(fi fs.FileInfo, typ byte, rel, link string) *tar.Header {
	st := fi.Sys().(*syscall.Stat_t)
	name := a.name(rel)
	if typ == tar.TypeDir && !strings.HasSuffix(name, "/") {
		name += "/"
	}
	h := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Linkname: link,
		Mode:     int64(st.Mode & 0o7777),
		Uid:      int(st.Uid),
		Gid:      int(st.Gid),
		ModTime:  time.Unix(st.Mtim.Sec, 0),
	}
	// Names make a restore onto another node (where the UID differs) easy;
	// they are known without a lookup only for the account's own ids.
	if st.Uid == a.uid {
		h.Uname = a.user
	}
	if st.Gid == a.gid {
		h.Gname = a.user
	}
	return h
}

func (a *archiver) write(h *tar.Header) error {
	if err := a.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	a.sum.header(h)
	return nil
}

// dir archives directory rel and everything below it.
func (a *archiver) dir(rel string) error {
	if err := a.ctx.Err(); err != nil {
		return err
	}
	lfi, err := a.home.Lstat(rel)
	if err != nil {
		return err
	}
	if !lfi.IsDir() {
		return fmt.Errorf("%s changed while being archived", a.name(rel))
	}
	d, err := a.home.OpenFile(rel, os.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	dfi, err := d.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(lfi, dfi) {
		return fmt.Errorf("%s changed while being archived", a.name(rel))
	}
	if err := a.write(a.header(dfi, tar.TypeDir, rel, "")); err != nil {
		return err
	}
	ents, err := d.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("%s: %w", a.name(rel), err)
	}
	// Sorted so that the same tree makes the same archive.
	slices.SortFunc(ents, func(x, y fs.DirEntry) int { return strings.Compare(x.Name(), y.Name()) })
	for _, e := range ents {
		child := path.Join(rel, e.Name())
		if err := a.entry(child); err != nil {
			return err
		}
	}
	return nil
}

func (a *archiver) entry(rel string) error {
	fi, err := a.home.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed since the directory was read
	}
	if err != nil {
		return err
	}
	switch fi.Mode().Type() {
	case fs.ModeDir:
		return a.dir(rel)
	case 0:
		return a.file(rel, fi)
	case fs.ModeSymlink:
		target, err := a.home.Readlink(rel)
		if err != nil {
			return err
		}
		return a.write(a.header(fi, tar.TypeSymlink, rel, target))
	case fs.ModeNamedPipe:
		return a.write(a.header(fi, tar.TypeFifo, rel, ""))
	default:
		// Sockets cannot be archived, and devices the account cannot have
		// made itself; neither is data.
		a.log.Info("not archived: special file", "entry", a.name(rel), "type", fi.Mode().Type().String())
		return nil
	}
}

func (a *archiver) file(rel string, lfi fs.FileInfo) error {
	st := lfi.Sys().(*syscall.Stat_t)
	// A hard link to a file the account does not own is how a home could
	// smuggle another user's file (or /etc/shadow, where the kernel does not
	// enforce protected_hardlinks) into a root-made archive.
	if st.Nlink > 1 && st.Uid != a.uid {
		a.log.Warn("not archived: hard link to a file the account does not own", "entry", a.name(rel), "uid", st.Uid)
		return nil
	}
	f, err := a.home.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !os.SameFile(lfi, fi) || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s changed while being archived", a.name(rel))
	}
	h := a.header(fi, tar.TypeReg, rel, "")
	h.Size = fi.Size()
	if err := a.write(h); err != nil {
		return err
	}
	// Exactly Size bytes: a file that grew is cut at the size in the header,
	// one that shrank fails the archive (tar cannot represent it).
	n, err := io.CopyN(io.MultiWriter(a.tw, a.sum.h), f, h.Size)
	a.sum.bytes += n
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s shrank while being archived", h.Name)
		}
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	return nil
}

// verifyArchive reads the archive back through gzip (whose trailer checksum
// is checked at EOF) and tar, and compares with what the writer recorded.
func verifyArchive(bk *os.Root, name string, want *archiveSum) error {
	f, err := bk.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	got := newArchiveSum()
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		got.header(h)
		n, err := io.Copy(got.h, tr)
		got.bytes += n
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	// The tar end marker precedes gzip's trailer; read through it.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return err
	}
	if got.entries == 0 {
		return errors.New("archive is empty")
	}
	if !got.equal(want) {
		return fmt.Errorf("archive reads back as %d entries, %d bytes; %d entries, %d bytes were written, or contents differ",
			got.entries, got.bytes, want.entries, want.bytes)
	}
	return nil
}
