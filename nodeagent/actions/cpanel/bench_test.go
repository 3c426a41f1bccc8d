package cpanel_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/nodeagent/actions/cpanel"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// benchMB is the size of the incompressible file in the benchmark's
// archive: NPANEL_CPANEL_BENCH_MB, default 64 (1024 for the figure the
// issue asks for: a 1 GB archive).
func benchMB(b *testing.B) int64 {
	if v := os.Getenv("NPANEL_CPANEL_BENCH_MB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("NPANEL_CPANEL_BENCH_MB=%q", v)
		}
		return n
	}
	return 64
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux:
// writing 5 to clear_refs), so that building the archive does not count.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSSMB is the process's peak resident set (VmHWM) in MB.
func peakRSSMB(b *testing.B) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

func benchArchive(b *testing.B, dir, layout string) (string, int64) {
	o := cpaneltest.Default(layout)
	o.BigFileBytes = benchMB(b) << 20
	o.BigFileText = layout == "text"
	if o.BigFileText {
		o.Layout = cpaneltest.LayoutBackup
	}
	p := cpaneltest.Build(b, dir, o)
	st, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	return p, st.Size()
}

// BenchmarkAnalyze reads a whole archive (one pass, every byte inflated).
// "text" is the backup layout with compressible content (real inflating
// work); the others hold incompressible data (I/O bound).
func BenchmarkAnalyze(b *testing.B) {
	for _, layout := range []string{cpaneltest.LayoutCpmove, cpaneltest.LayoutBackup, "text"} {
		b.Run(layout, func(b *testing.B) {
			p, size := benchArchive(b, b.TempDir(), layout)
			seal := func(plain []byte, c string) ([]byte, error) { return pki.Seal(&importKey.PublicKey, plain, c) }
			b.SetBytes(size)
			resetPeakRSS()
			b.ResetTimer()
			for b.Loop() {
				f, err := os.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := cpanel.AnalyzeArchive(f, size, cpanel.Limits{}, seal, ""); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
			b.ReportMetric(peakRSSMB(b), "peak-RSS-MB")
			b.ReportMetric(float64(size)/(1<<20), "archive-MB")
		})
	}
}

// BenchmarkImport imports the files and maildirs of an archive into a
// real account's home (two passes: check, then extract).
func BenchmarkImport(b *testing.B) {
	for _, layout := range []string{cpaneltest.LayoutCpmove, cpaneltest.LayoutBackup} {
		b.Run(layout, func(b *testing.B) {
			f := newFixture(b, nil)
			p, size := benchArchive(b, f.p.Cpanel().ImportDir, layout)
			f.addMailbox(b, "info@example.com")
			req := &agentpb.ImportCpanelBackupAction{Path: filepath.Base(p), Username: f.user, Files: true, Cron: true, Mailboxes: []string{"info@example.com"}}
			b.SetBytes(size)
			resetPeakRSS()
			b.ResetTimer()
			for b.Loop() {
				a := f.mod.NewImport(req)
				a.AllowTestUsernames()
				if err := a.Validate(); err != nil {
					b.Fatal(err)
				}
				out, err := a.Apply(context.Background(), f.env)
				if err != nil {
					b.Fatal(err)
				}
				if r := out.(*agentpb.ImportCpanelBackupResult); len(r.Failed) > 0 {
					b.Fatal(r.Failed)
				}
			}
			b.ReportMetric(peakRSSMB(b), "peak-RSS-MB")
			b.ReportMetric(float64(size)/(1<<20), "archive-MB")
		})
	}
}
