package migrate

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// BenchmarkSync10kFiles measures sync_migration of a home of 10,000
// small files (2 KiB, 100 directories) through the endpoint, full (into
// an empty home) and incremental (nothing changed), beside a bare local
// `rsync -a` of the same tree in the same run: the ratio is the cost of
// the SSH transport, the endpoint and -HAX --numeric-ids.
func BenchmarkSync10kFiles(b *testing.B) {
	p := newPair(b, pairOpts{})
	data := make([]byte, 2048)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	for i := range 10000 {
		writeFile(b, filepath.Join(p.src.home, fmt.Sprintf("d%02d/f%05d.txt", i%100, i)), data, p.uid, p.gid)
	}
	empty := func(b *testing.B, dir string) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		for _, e := range ents {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				b.Fatal(err)
			}
		}
	}
	bare := filepath.Join(filepath.Dir(p.dst.home), "bare")
	if err := os.MkdirAll(bare, 0o755); err != nil {
		b.Fatal(err)
	}
	rsync := p.src.env.Profile.Migrate().Rsync
	bareRsync := func(b *testing.B) {
		out, err := exec.Command(rsync, "-a", p.src.home+"/", bare+"/").CombinedOutput()
		if err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
	migrate := func(b *testing.B) {
		r := p.sync(b, true, false)
		if len(r.GetFailed()) > 0 {
			b.Fatal(r.GetFailed())
		}
	}
	b.Run("migrate/full", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			empty(b, p.dst.home)
			b.StartTimer()
			migrate(b)
		}
	})
	b.Run("migrate/incremental", func(b *testing.B) {
		migrate(b)
		b.ResetTimer()
		for range b.N {
			migrate(b)
		}
	})
	b.Run("bare-rsync/full", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			empty(b, bare)
			b.StartTimer()
			bareRsync(b)
		}
	})
	b.Run("bare-rsync/incremental", func(b *testing.B) {
		bareRsync(b)
		b.ResetTimer()
		for range b.N {
			bareRsync(b)
		}
	})
}
