package cpanel

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/internal/sshdtest"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// sshServer is a real OpenSSH sshd the test started (sshdtest).
type sshServer struct{ *sshdtest.Server }

func startSSHD(t *testing.T) *sshServer { return &sshServer{sshdtest.Start(t)} }

// server is how the node is told to reach s, the key sealed to the test
// node key; fp "" leaves the host key unpinned.
func (s *sshServer) server(t *testing.T, fp string) *agentpb.CpanelServer {
	sealed, err := pki.Seal(&testKey.PublicKey, s.ClientKey, agentpb.CpanelServerKeySealContext("root", "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	return &agentpb.CpanelServer{Host: "127.0.0.1", Port: uint32(s.Port), User: "root", HostKeyFingerprint: fp, SealedPrivateKey: sealed}
}

func fetchEnv(t *testing.T) *actions.Env {
	return &actions.Env{Node: "node-test", Logger: slog.New(slog.DiscardHandler), Profile: platform.Debian12(t.TempDir()),
		Unseal: func(b []byte, c string) ([]byte, error) { return pki.Unseal(testKey, b, c) }}
}

func run(t *testing.T, a actions.Action, env *actions.Env) (any, error) {
	t.Helper()
	if err := a.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	return a.Apply(context.Background(), env)
}

func reasonOf(err error) agentpb.ErrorReason {
	if err == nil {
		return agentpb.ErrorReason_ERROR_REASON_UNSPECIFIED
	}
	return actions.ReasonOf(err)
}

func sum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestFetchFromSSHD(t *testing.T) {
	srv := startSSHD(t)
	remote := t.TempDir()
	// The "old server": its account list and an archive built like cPanel's.
	for name, body := range map[string]string{
		"etc/trueuserdomains":        "example.com: cpuser\nother.org: gone\nbad domain: x\n",
		"var/cpanel/users/cpuser":    "DNS=example.com\nPLAN=gold\n",
		"var/cpanel/users/gone":      "DNS=other.org\nSUSPENDED=1\n",
		"home/.keep":                 "",
		"scripts/.keep":              "",
		"backups/.keep":              "",
		"var/cpanel/users/.ignored":  "",
		"etc/.keep":                  "",
		"home/other-dir/.keep":       "",
		"backups/not-an-archive.txt": "x",
	} {
		p := filepath.Join(remote, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	arch := cpaneltest.Build(t, filepath.Join(remote, "backups"), cpaneltest.Default(cpaneltest.LayoutCpmove))

	m := NewModule(nil, nil)
	m.PublicKey = func(*actions.Env) (crypto.PublicKey, error) { return &testKey.PublicKey, nil }
	m.Fetch.ServerRoot = remote
	env := fetchEnv(t)
	area := env.Profile.Cpanel().ImportDir

	t.Run("scan without a pinned key names the key", func(t *testing.T) {
		out, err := run(t, m.NewScan(&agentpb.ScanCpanelServerAction{Server: srv.server(t, "")}), env)
		if err != nil {
			t.Fatal(err)
		}
		res := out.(*agentpb.ScanCpanelServerResult)
		if !res.GetHostKeyUnknown() || res.GetHostKeyFingerprint() != srv.Fingerprint || len(res.GetAccounts()) != 0 {
			t.Fatalf("got %v, want unknown key %s and no accounts", res, srv.Fingerprint)
		}
	})
	wrong := "SHA256:" + strings.Repeat("A", 43)
	t.Run("scan with a wrong key is refused", func(t *testing.T) {
		_, err := run(t, m.NewScan(&agentpb.ScanCpanelServerAction{Server: srv.server(t, wrong)}), env)
		if err == nil || reasonOf(err) != agentpb.ErrorReason_ERROR_REASON_CONFLICT || !strings.Contains(err.Error(), srv.Fingerprint) {
			t.Fatalf("err %v, want CONFLICT naming %s", err, srv.Fingerprint)
		}
	})
	t.Run("scan lists the accounts", func(t *testing.T) {
		out, err := run(t, m.NewScan(&agentpb.ScanCpanelServerAction{Server: srv.server(t, srv.Fingerprint)}), env)
		if err != nil {
			t.Fatal(err)
		}
		got := out.(*agentpb.ScanCpanelServerResult).GetAccounts()
		if len(got) != 2 || got[0].GetUsername() != "cpuser" || got[0].GetDomain() != "example.com" || got[0].GetSuspended() ||
			got[1].GetUsername() != "gone" || !got[1].GetSuspended() {
			t.Fatalf("accounts %v", got)
		}
	})
	t.Run("a scan over the byte bound is truncated", func(t *testing.T) {
		scanByteLimit = 40 // the first account fits, not the second
		defer func() { scanByteLimit = maxScanBytes }()
		out, err := run(t, m.NewScan(&agentpb.ScanCpanelServerAction{Server: srv.server(t, srv.Fingerprint)}), env)
		if err != nil {
			t.Fatal(err)
		}
		res := out.(*agentpb.ScanCpanelServerResult)
		if !res.GetTruncated() || len(res.GetAccounts()) != 1 || res.GetAccounts()[0].GetUsername() != "cpuser" {
			t.Fatalf("got %v, want cpuser only, truncated", res)
		}
	})
	t.Run("fetch by remote path is byte-identical, then idempotent", func(t *testing.T) {
		req := &agentpb.FetchCpanelBackupAction{Server: srv.server(t, srv.Fingerprint), RemotePath: arch, Path: "fetched/F1/cpmove-cpuser.tar.gz"}
		var reports []*agentpb.BackupProgress
		m.Fetch.Progress = func(p *agentpb.BackupProgress) { reports = append(reports, p) }
		defer func() { m.Fetch.Progress = nil }()
		act := m.NewFetch(req)
		act.SetTaskID("T1")
		out, err := run(t, act, env)
		if err != nil {
			t.Fatal(err)
		}
		res := out.(*agentpb.FetchCpanelBackupResult)
		local := filepath.Join(area, res.GetPath())
		if sum(t, local) != sum(t, arch) || res.GetSha256() != sum(t, arch) {
			t.Fatalf("fetched %s differs from %s", local, arch)
		}
		if len(reports) == 0 || reports[0].GetTaskId() != "T1" || reports[0].GetTotalBytes() != res.GetBytes() || reports[0].GetBytesDone() > res.GetBytes() {
			t.Errorf("progress reports %v", reports)
		}
		if ents, _ := os.ReadDir(filepath.Dir(local)); len(ents) != 1 {
			t.Fatalf("import dir holds %v, want the archive alone", ents)
		}
		// Again, with a wrong key: the finished work is reported, nothing dialled.
		req.Server = srv.server(t, wrong)
		out2, err := run(t, m.NewFetch(req), env)
		if err != nil || out2.(*agentpb.FetchCpanelBackupResult).GetSha256() != res.GetSha256() {
			t.Fatalf("repeat: %v %v", out2, err)
		}
		// The fetched archive is importable: the analysis reads it.
		a, err := run(t, m.NewAnalyze(&agentpb.AnalyzeCpanelBackupAction{Path: res.GetPath()}), env)
		if err != nil || a.(*agentpb.AnalyzeCpanelBackupResult).GetReport().GetUsername() != "cpuser" {
			t.Fatalf("analyze fetched: %v %v", a, err)
		}
	})
	t.Run("a retried fetch restarts over what a crash left", func(t *testing.T) {
		dir := filepath.Join(area, "fetched/F6")
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
		stale := filepath.Join(dir, ".cpmove-cpuser.tar.gz.part")
		if err := os.WriteFile(stale, bytes.Repeat([]byte("x"), 100_000), 0o640); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv.server(t, srv.Fingerprint), RemotePath: arch, Path: "fetched/F6/cpmove-cpuser.tar.gz"}), env)
		if err != nil {
			t.Fatal(err)
		}
		if sum(t, filepath.Join(area, out.(*agentpb.FetchCpanelBackupResult).GetPath())) != sum(t, arch) {
			t.Fatal("the restarted fetch differs from the archive")
		}
		if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("temporary file left: %v", err)
		}
	})
	t.Run("a .tar is gzipped on the way", func(t *testing.T) {
		tarPath := filepath.Join(remote, "backups", "plain.tar")
		f, _ := os.Open(arch)
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := io.ReadAll(zr)
		f.Close()
		if err := os.WriteFile(tarPath, plain, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv.server(t, srv.Fingerprint), RemotePath: tarPath, Path: "fetched/F2/plain.tar.gz"}), env)
		if err != nil {
			t.Fatal(err)
		}
		g, _ := os.Open(filepath.Join(area, "fetched/F2/plain.tar.gz"))
		defer g.Close()
		zr2, err := gzip.NewReader(g)
		if err != nil {
			t.Fatal(err)
		}
		back, _ := io.ReadAll(zr2)
		if !bytes.Equal(back, plain) || out.(*agentpb.FetchCpanelBackupResult).GetBytes() != uint64(len(plain)) {
			t.Fatal("gunzipped fetch differs from the remote .tar")
		}
	})
	t.Run("pkgacct runs remotely and its archive is fetched", func(t *testing.T) {
		// A stand-in for cPanel's pkgacct: copies the built archive to
		// DIR/cpmove-USER.tar.gz and says so, as pkgacct does.
		bin := filepath.Join(remote, "scripts", "pkgacct")
		script := "#!/bin/sh\nset -e\ncp " + arch + " \"$2/cpmove-$1.tar.gz\"\necho \"pkgacctfile is: $2/cpmove-$1.tar.gz\"\n"
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		m.Fetch.PkgacctPath, m.Fetch.PkgacctDir = bin, filepath.Join(remote, "home")
		out, err := run(t, m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv.server(t, srv.Fingerprint), Account: "cpuser", Path: "fetched/F3/cpmove-cpuser.tar.gz"}), env)
		if err != nil {
			t.Fatal(err)
		}
		res := out.(*agentpb.FetchCpanelBackupResult)
		if res.GetSha256() != sum(t, arch) || res.GetRemotePath() != filepath.Join(remote, "home", "cpmove-cpuser.tar.gz") {
			t.Fatalf("pkgacct fetch: %v", res)
		}
		if _, err := os.Stat(res.GetRemotePath()); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("pkgacct's archive left on the server: %v", err)
		}
	})
	t.Run("over the size limit nothing is written", func(t *testing.T) {
		_, err := run(t, m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv.server(t, srv.Fingerprint), RemotePath: arch, Path: "fetched/F4/x.tar.gz", MaxBytes: 100}), env)
		if err == nil || reasonOf(err) != agentpb.ErrorReason_ERROR_REASON_INVALID {
			t.Fatalf("err %v, want INVALID", err)
		}
		if ents, _ := os.ReadDir(filepath.Join(area, "fetched/F4")); len(ents) != 0 {
			t.Fatalf("left %v", ents)
		}
	})
	t.Run("a wrong key fetches nothing", func(t *testing.T) {
		_, err := run(t, m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv.server(t, wrong), RemotePath: arch, Path: "fetched/F5/x.tar.gz"}), env)
		if reasonOf(err) != agentpb.ErrorReason_ERROR_REASON_CONFLICT {
			t.Fatalf("err %v, want CONFLICT", err)
		}
		if _, err := os.Stat(filepath.Join(area, "fetched/F5")); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("a refused fetch wrote to the import area")
		}
	})
}

func TestFetchValidate(t *testing.T) {
	m := NewModule(nil, nil)
	fp := "SHA256:" + strings.Repeat("A", 43)
	ok := func() *agentpb.FetchCpanelBackupAction {
		return &agentpb.FetchCpanelBackupAction{Server: &agentpb.CpanelServer{Host: "old.example.com", User: "root", HostKeyFingerprint: fp, SealedPassword: []byte{1}},
			RemotePath: "/home/cpmove-bob.tar.gz", Path: "fetched/X/cpmove-bob.tar.gz"}
	}
	if err := m.NewFetch(ok()).Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(r *agentpb.FetchCpanelBackupAction){
		"host with spaces": func(r *agentpb.FetchCpanelBackupAction) { r.Server.Host = "old example.com" },
		"host upper":       func(r *agentpb.FetchCpanelBackupAction) { r.Server.Host = "OLD.example.com" },
		"user ../x":        func(r *agentpb.FetchCpanelBackupAction) { r.Server.User = "../x" },
		"relative remote":  func(r *agentpb.FetchCpanelBackupAction) { r.RemotePath = "home/x.tar.gz" },
		"remote ..":        func(r *agentpb.FetchCpanelBackupAction) { r.RemotePath = "/home/../etc/x.tar.gz" },
		"no pin":           func(r *agentpb.FetchCpanelBackupAction) { r.Server.HostKeyFingerprint = "" },
		"no credential":    func(r *agentpb.FetchCpanelBackupAction) { r.Server.SealedPassword = nil },
		"both sources":     func(r *agentpb.FetchCpanelBackupAction) { r.Account = "bob" },
		"account shell":    func(r *agentpb.FetchCpanelBackupAction) { r.RemotePath, r.Account = "", "bob;id" },
		"path absolute":    func(r *agentpb.FetchCpanelBackupAction) { r.Path = "/etc/x.tar.gz" },
		"path hidden":      func(r *agentpb.FetchCpanelBackupAction) { r.Path = ".x.tar.gz" },
	} {
		r := ok()
		mut(r)
		if err := m.NewFetch(r).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := m.NewScan(&agentpb.ScanCpanelServerAction{Server: &agentpb.CpanelServer{Host: "1.2.3.4", User: "root", SealedPassword: []byte{1}}}).Validate(); err != nil {
		t.Errorf("scan without pin refused: %v", err)
	}
}

func TestPkgacctArchive(t *testing.T) {
	for out, want := range map[string]string{
		"...\npkgacctfile is: /home/cpmove-bob.tar.gz\n": "/home/cpmove-bob.tar.gz",
		"no line\n":                             "/home/cpmove-bob.tar.gz",
		"pkgacctfile is: /etc/shadow.tar.gz\n":  "",
		"pkgacctfile is: /home/a b.tar.gz\n":    "",
		"pkgacctfile is: /home/../x/a.tar.gz\n": "",
		"pkgacctfile is: /home/sub/a.tar.gz\n":  "",
	} {
		got, err := PkgacctArchive([]byte(out), "bob", "/home")
		if want == "" && err == nil || want != "" && got != want {
			t.Errorf("%q: %q %v, want %q", out, got, err, want)
		}
	}
}

// FuzzParseTrueUserDomains: every account a scan reports has a name
// that is safe in a remote path and as a pkgacct token.
func FuzzParseTrueUserDomains(f *testing.F) {
	f.Add([]byte("example.com: cpuser\nx: ../../etc\n"))
	f.Add([]byte("a.b: c\n\n:::\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, u := range ParseTrueUserDomains(b) {
			if strings.ContainsAny(u.User, "/. ;") || u.User == "" || len(u.User) > 16 {
				t.Fatalf("user %q", u.User)
			}
		}
		var a agentpb.CpanelServerAccount
		ParseCpanelUserFile(b, &a)
	})
}
