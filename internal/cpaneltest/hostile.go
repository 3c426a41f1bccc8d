package cpaneltest

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Hostile archive kinds.
const (
	HostileDotDot    = "dotdot"     // an entry with ../ leaving the tree
	HostileAbsolute  = "absolute"   // an entry with an absolute path
	HostileSymlink   = "symlink"    // a symlink pointing out of the tree
	HostileHardlink  = "hardlink"   // a hard link to a path out of the tree
	HostileDevice    = "device"     // a character device
	HostileFIFO      = "fifo"       // a named pipe
	HostileHuge      = "huge"       // a 10 GB file (header only: the data is never written)
	HostileBomb      = "bomb"       // highly compressible entries far beyond any sane ratio
	HostileNestedOut = "nested-out" // a ../ entry inside homedir.tar
)

// HostileKinds lists every kind.
var HostileKinds = []string{HostileDotDot, HostileAbsolute, HostileSymlink, HostileHardlink, HostileDevice, HostileFIFO, HostileHuge, HostileBomb, HostileNestedOut}

// BombBytes is how much a bomb archive inflates to: its entries are each
// below any per-entry limit, the total is not.
const BombBytes = 512 << 20

// Hostile writes an archive of kind into dir: a plausible cpmove archive
// (cp/USER first) with one bad entry. It returns the archive's path and
// the name of the entry the reader must name when it refuses it.
func Hostile(t testing.TB, dir, kind string) (archivePath, entry string) {
	t.Helper()
	p := filepath.Join(dir, "cpmove-evil.tar.gz")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	mt := time.Date(2026, 6, 12, 10, 0, 0, 0, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(name, data string) {
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mt}))
		_, err := io.WriteString(tw, data)
		must(err)
	}
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "cpmove-evil/", Mode: 0o755, ModTime: mt}))
	file("cpmove-evil/cp/evil", "USER=evil\nDNS=evil.example\n")
	truncated := false
	switch kind {
	case HostileDotDot:
		entry = "cpmove-evil/../../escaped.txt"
		file(entry, "escaped\n")
	case HostileAbsolute:
		entry = "/tmp/npanel-cpanel-escaped.txt"
		file(entry, "escaped\n")
	case HostileSymlink:
		entry = "cpmove-evil/homedir/public_html/out"
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: entry, Linkname: "../../../../etc", Mode: 0o777, ModTime: mt}))
		// The classic follow-up: write through the link.
		file(entry+"/escaped.txt", "escaped\n")
	case HostileHardlink:
		entry = "cpmove-evil/homedir/passwd"
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: entry, Linkname: "../../etc/passwd", ModTime: mt}))
	case HostileDevice:
		entry = "cpmove-evil/homedir/sda"
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeBlock, Name: entry, Devmajor: 8, Devminor: 0, Mode: 0o660, ModTime: mt}))
	case HostileFIFO:
		entry = "cpmove-evil/homedir/pipe"
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeFifo, Name: entry, Mode: 0o660, ModTime: mt}))
	case HostileHuge:
		// 10 GB in the header (PAX size record); the data is not written,
		// the archive ends early: a reader must refuse on the header.
		entry = "cpmove-evil/homedir/public_html/huge.iso"
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: entry, Mode: 0o644, Size: 10 << 30, ModTime: mt}))
		_, err := tw.Write(make([]byte, 1<<20))
		must(err)
		truncated = true
	case HostileBomb:
		// 64 MB of zeros per entry: gzip shrinks each to ~64 KB.
		const per = 64 << 20
		zeros := make([]byte, 1<<20)
		for i := range BombBytes / per {
			name := fmt.Sprintf("cpmove-evil/homedir/zero%02d", i)
			if i == 0 {
				entry = name
			}
			must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: per, ModTime: mt}))
			for range per / len(zeros) {
				_, err := tw.Write(zeros)
				must(err)
			}
		}
		// The reader names the entry during which the bound is passed,
		// which depends on its limits: callers check the prefix.
		entry = "cpmove-evil/homedir/zero"
	case HostileNestedOut:
		r, w := io.Pipe()
		go func() {
			htw := tar.NewWriter(w)
			data := "escaped\n"
			_ = htw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "public_html/../../escaped.txt", Mode: 0o644, Size: int64(len(data)), ModTime: mt})
			_, _ = io.WriteString(htw, data)
			_ = htw.Close()
			w.Close()
		}()
		b, err := io.ReadAll(r)
		must(err)
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "cpmove-evil/homedir.tar", Mode: 0o600, Size: int64(len(b)), ModTime: mt}))
		_, err = tw.Write(b)
		must(err)
		entry = "cpmove-evil/homedir.tar:public_html/../../escaped.txt"
	default:
		t.Fatalf("unknown hostile kind %q", kind)
	}
	if !truncated {
		must(tw.Close())
	}
	must(zw.Close())
	must(f.Close())
	return p, entry
}
