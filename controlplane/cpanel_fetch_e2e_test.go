package controlplane_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/internal/sshdtest"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/platform"
)

// Pulling an archive from an "old server" (a real sshd the test started)
// through the API and a real agent: the host key is named when unknown
// and refused when wrong, the archive lands byte-identical in the node's
// import area at the path the fetch reports, the analysis reads it from
// there, and the fetch's task (the sealed key with it) is gone after.
func TestCpanelFetchE2E(t *testing.T) {
	srv := sshdtest.Start(t)
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "fetch-1")
	ctx := testenv.Context(t)
	prof, err := platform.DetectProfile(ag.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	area := prof.Cpanel().ImportDir
	arch := cpaneltest.Build(t, t.TempDir(), cpaneltest.Default(cpaneltest.LayoutCpmove))
	key := string(srv.ClientKey)
	in := client.CpanelServerInput{Node: "fetch-1", Host: "127.0.0.1", Port: &srv.Port, User: "root", PrivateKey: &key}

	_, err = s.Admin.ScanCpanelServer(ctx, in)
	if client.CodeOf(err) != "HOST_KEY_UNKNOWN" || !strings.Contains(err.Error(), srv.Fingerprint) {
		t.Fatalf("scan without a key: %v, want HOST_KEY_UNKNOWN naming %s", err, srv.Fingerprint)
	}
	wrong := "SHA256:" + strings.Repeat("B", 43)
	in.HostKeyFingerprint = &wrong
	if _, err := s.Admin.ScanCpanelServer(ctx, in); client.CodeOf(err) != "CONFLICT" {
		t.Fatalf("scan with a wrong key: %v, want CONFLICT", err)
	}
	in.HostKeyFingerprint = &srv.Fingerprint
	if _, err := os.Stat("/etc/trueuserdomains"); errors.Is(err, fs.ErrNotExist) {
		// Logged in, read over SFTP: this machine is no cPanel server.
		if _, err := s.Admin.ScanCpanelServer(ctx, in); client.CodeOf(err) != "NOT_FOUND" || !strings.Contains(err.Error(), "trueuserdomains") {
			t.Fatalf("scan of a non-cPanel server: %v, want NOT_FOUND", err)
		}
	}

	f, err := s.Admin.FetchCpanelBackup(ctx, in, "", arch)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Minute, "fetch "+f.ID+" finished", func() bool {
		cur, err := s.Admin.CpanelFetch(ctx, f.ID)
		if err == nil && cur != nil {
			f = cur
		}
		return f.Finished()
	})
	want, _ := os.ReadFile(arch)
	got, err := os.ReadFile(filepath.Join(area, f.Path))
	if f.Status != "DONE" || err != nil || string(got) != string(want) || f.Bytes != int64(len(want)) {
		t.Fatalf("fetch %+v: read %d bytes (%v), want %d identical", f, len(got), err, len(want))
	}
	sum := sha256.Sum256(want)
	if f.Sha256 == nil || *f.Sha256 != hex.EncodeToString(sum[:]) {
		t.Errorf("sha256 %v", f.Sha256)
	}
	rep, err := s.Admin.AnalyzeCpanelBackup(ctx, "fetch-1", f.Path)
	if err != nil || rep.Username != "cpuser" {
		t.Fatalf("analysis of the fetched archive: %+v %v", rep, err)
	}
	testenv.WaitFor(t, 10*time.Second, "the fetch's task forgotten", func() bool {
		rec, err := s.Store().GetFetch(ctx, f.ID)
		return err == nil && rec.TaskID == ""
	})

	// A server showing another key gets nothing from the node.
	in.HostKeyFingerprint = &wrong
	bad, err := s.Admin.FetchCpanelBackup(ctx, in, "", arch)
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Minute, "fetch "+bad.ID+" finished", func() bool {
		cur, err := s.Admin.CpanelFetch(ctx, bad.ID)
		if err == nil && cur != nil {
			bad = cur
		}
		return bad.Finished()
	})
	if bad.Status != "FAILED" || bad.Error == nil || !strings.Contains(*bad.Error, srv.Fingerprint) {
		t.Fatalf("fetch from a wrong key: %+v", bad)
	}
	if _, err := os.Stat(filepath.Join(area, filepath.Dir(bad.Path))); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a refused fetch wrote to the import area: %v", err)
	}
}
