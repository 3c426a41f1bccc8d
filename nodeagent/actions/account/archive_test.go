package account

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type archived struct {
	hdr  *tar.Header
	data []byte
}

func readArchive(t testing.TB, path string) map[string]archived {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := make(map[string]archived)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := out[h.Name]; dup {
			t.Fatalf("entry %s twice", h.Name)
		}
		out[h.Name] = archived{h, data}
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// archiveTree archives dir as the home of user "u" with UID uid.
func archiveTree(t *testing.T, dir string, uid uint32) (string, error) {
	t.Helper()
	home, err := os.OpenRoot(dir)
	mustDo(t, err)
	defer home.Close()
	return archiveHome(context.Background(), home, filepath.Join(t.TempDir(), "backups"), "u", uid, uid, time.Date(2026, 8, 1, 10, 11, 12, 0, time.UTC), slog.New(slog.DiscardHandler))
}

func TestArchiveHome(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, os.Mkdir(filepath.Join(dir, "public_html"), 0o755))
	mustDo(t, os.WriteFile(filepath.Join(dir, "public_html", "index.html"), []byte("<h1>hi</h1>"), 0o640))
	mustDo(t, os.Chmod(filepath.Join(dir, "public_html", "index.html"), 0o640|os.ModeSetgid))
	mustDo(t, os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	mustDo(t, os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644))
	mustDo(t, os.Chown(filepath.Join(dir, "big.bin"), 4242, 4343))
	mtime := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	mustDo(t, os.Chtimes(filepath.Join(dir, "big.bin"), mtime, mtime))
	long := strings.Repeat("d", 120) + "/" + strings.Repeat("f", 120)
	mustDo(t, os.Mkdir(filepath.Join(dir, strings.Repeat("d", 120)), 0o700))
	mustDo(t, os.WriteFile(filepath.Join(dir, long), []byte("long"), 0o600))
	mustDo(t, os.Symlink("/etc/shadow", filepath.Join(dir, "abs-link")))
	mustDo(t, os.Symlink("/etc", filepath.Join(dir, "etc-dir-link")))
	mustDo(t, os.Symlink("../../../../../../etc/passwd", filepath.Join(dir, "rel-escape")))
	mustDo(t, os.Symlink("public_html", filepath.Join(dir, "www")))
	mustDo(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))

	path, err := archiveTree(t, dir, uint32(os.Getuid()))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "u-20260801T101112Z.tar.gz" {
		t.Fatalf("archive name %s", path)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v, %v", fi, err)
	}
	ents := readArchive(t, path)

	want := map[string]byte{
		"u/": tar.TypeDir, "u/public_html/": tar.TypeDir, "u/public_html/index.html": tar.TypeReg,
		"u/empty": tar.TypeReg, "u/big.bin": tar.TypeReg, "u/" + strings.Repeat("d", 120) + "/": tar.TypeDir,
		"u/" + long: tar.TypeReg, "u/abs-link": tar.TypeSymlink, "u/etc-dir-link": tar.TypeSymlink,
		"u/rel-escape": tar.TypeSymlink, "u/www": tar.TypeSymlink, "u/fifo": tar.TypeFifo,
	}
	for name, typ := range want {
		e, ok := ents[name]
		if !ok {
			t.Errorf("missing %s", name)
			continue
		}
		if e.hdr.Typeflag != typ {
			t.Errorf("%s: type %q, want %q", name, e.hdr.Typeflag, typ)
		}
	}
	if len(ents) != len(want) {
		for n := range ents {
			if _, ok := want[n]; !ok {
				t.Errorf("unexpected entry %s", n)
			}
		}
	}
	idx := ents["u/public_html/index.html"]
	if string(idx.data) != "<h1>hi</h1>" || idx.hdr.Mode != 0o2640 {
		t.Errorf("index.html: %q mode %o", idx.data, idx.hdr.Mode)
	}
	b := ents["u/big.bin"]
	if !bytes.Equal(b.data, big) || b.hdr.Uid != 4242 || b.hdr.Gid != 4343 || !b.hdr.ModTime.Equal(mtime) || b.hdr.Uname != "" {
		t.Errorf("big.bin: %d bytes uid %d gid %d mtime %v uname %q", len(b.data), b.hdr.Uid, b.hdr.Gid, b.hdr.ModTime, b.hdr.Uname)
	}
	if ents["u/empty"].hdr.Uname != "u" {
		t.Errorf("own file without user name: %+v", ents["u/empty"].hdr)
	}
	// Links are kept as links, never read through.
	if l := ents["u/abs-link"]; l.hdr.Linkname != "/etc/shadow" || len(l.data) != 0 {
		t.Errorf("abs-link: %+v", l.hdr)
	}
	if l := ents["u/etc-dir-link"]; l.hdr.Linkname != "/etc" {
		t.Errorf("etc-dir-link: %+v", l.hdr)
	}
	for name := range ents {
		if strings.HasPrefix(name, "u/etc-dir-link/") || strings.HasPrefix(name, "u/www/") {
			t.Errorf("archive followed a link: %s", name)
		}
	}
	// Nothing else is left in the backup area: the temporary file was renamed.
	left, err := os.ReadDir(filepath.Dir(path))
	mustDo(t, err)
	if len(left) != 1 {
		t.Errorf("backup area holds %v", left)
	}
}

// A hard link to someone else's file is left out; the account's own hard
// links and others' single-link files are kept.
func TestArchiveHardLinks(t *testing.T) {
	src := t.TempDir()
	dir := t.TempDir()
	foreign := filepath.Join(src, "foreign")
	mustDo(t, os.WriteFile(foreign, []byte("not the account's"), 0o600))
	mustDo(t, os.Link(foreign, filepath.Join(dir, "smuggled")))
	mustDo(t, os.WriteFile(filepath.Join(dir, "own"), []byte("mine"), 0o600))
	mustDo(t, os.Chown(filepath.Join(dir, "own"), 5000, 5000))
	mustDo(t, os.Link(filepath.Join(dir, "own"), filepath.Join(dir, "own2")))
	mustDo(t, os.WriteFile(filepath.Join(dir, "root-owned"), []byte("log"), 0o600))

	path, err := archiveTree(t, dir, 5000)
	if err != nil {
		t.Fatal(err)
	}
	ents := readArchive(t, path)
	if _, ok := ents["u/smuggled"]; ok {
		t.Error("hard link to a foreign file archived")
	}
	for _, n := range []string{"u/own", "u/own2", "u/root-owned"} {
		if _, ok := ents[n]; !ok {
			t.Errorf("%s missing", n)
		}
	}
}

func TestArchiveNameTaken(t *testing.T) {
	dir := t.TempDir()
	home, err := os.OpenRoot(dir)
	mustDo(t, err)
	defer home.Close()
	bk := filepath.Join(t.TempDir(), "b")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var names []string
	for range 3 {
		p, err := archiveHome(context.Background(), home, bk, "u", 0, 0, now, slog.New(slog.DiscardHandler))
		mustDo(t, err)
		names = append(names, filepath.Base(p))
	}
	want := []string{"u-20260101T000000Z.tar.gz", "u-20260101T000000Z-1.tar.gz", "u-20260101T000000Z-2.tar.gz"}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("names = %v, want %v", names, want)
		}
	}
	if fi, err := os.Stat(bk); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("backup area: %v, %v", fi, err)
	}
}

func TestArchiveCancelled(t *testing.T) {
	dir := t.TempDir()
	home, err := os.OpenRoot(dir)
	mustDo(t, err)
	defer home.Close()
	bk := filepath.Join(t.TempDir(), "b")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := archiveHome(ctx, home, bk, "u", 0, 0, time.Now(), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("cancelled archive succeeded")
	}
	if left, _ := os.ReadDir(bk); len(left) != 0 {
		t.Fatalf("cancelled archive left %v", left)
	}
}

func TestVerifyArchiveMismatch(t *testing.T) {
	dir := t.TempDir()
	mustDo(t, os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o600))
	path, err := archiveTree(t, dir, 0)
	mustDo(t, err)
	bk, err := os.OpenRoot(filepath.Dir(path))
	mustDo(t, err)
	defer bk.Close()
	wrong := newArchiveSum()
	wrong.entries, wrong.bytes = 2, 4
	if err := verifyArchive(bk, filepath.Base(path), wrong); err == nil || !strings.Contains(err.Error(), "2 entries, 4 bytes were written") {
		t.Fatalf("verify = %v", err)
	}
	// A damaged archive fails on read.
	data, err := os.ReadFile(path)
	mustDo(t, err)
	data[len(data)-6] ^= 0xff // inside gzip's CRC/size trailer
	mustDo(t, os.WriteFile(path, data, 0o600))
	if err := verifyArchive(bk, filepath.Base(path), wrong); err == nil {
		t.Fatal("damaged archive verified")
	}
}
