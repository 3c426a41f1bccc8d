package cpanel

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// frozenConn is the server side of a connection that, once frozen, reads
// nothing and swallows what it would write: a server that accepted the
// login and then went silent with the TCP connection open.
type frozenConn struct {
	net.Conn
	frozen atomic.Bool
	done   chan struct{}
}

func (c *frozenConn) Read(p []byte) (int, error) {
	if c.frozen.Load() {
		<-c.done
		return 0, net.ErrClosed
	}
	return c.Conn.Read(p)
}

func (c *frozenConn) Write(p []byte) (int, error) {
	if c.frozen.Load() {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// startStalledServer accepts any key, completes the handshake and then
// never answers; it returns how the node reaches it.
func startStalledServer(t *testing.T) *agentpb.CpanelServer {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(hostPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fc := &frozenConn{Conn: c, done: done}
				if _, _, _, err := ssh.NewServerConn(fc, cfg); err == nil {
					fc.frozen.Store(true)
					<-done
				}
			}()
		}
	}()
	_, cliPriv, _ := ed25519.GenerateKey(rand.Reader)
	blk, err := ssh.MarshalPrivateKey(crypto.PrivateKey(cliPriv), "")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := pki.Seal(&testKey.PublicKey, pem.EncodeToMemory(blk), agentpb.CpanelServerKeySealContext("root", "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	return &agentpb.CpanelServer{Host: "127.0.0.1", Port: uint32(l.Addr().(*net.TCPAddr).Port), User: "root",
		HostKeyFingerprint: ssh.FingerprintSHA256(signer.PublicKey()), SealedPrivateKey: sealed}
}

// A server that logs the node in and then says nothing more does not hold
// a task: the idle deadline and the keepalives drop it.
func TestFetchStalledServer(t *testing.T) {
	srv := startStalledServer(t)
	m := NewModule(nil, nil)
	m.Fetch.IdleTimeout = time.Second
	m.Fetch.Keepalive = 300 * time.Millisecond
	env := fetchEnv(t)
	area := env.Profile.Cpanel().ImportDir
	for name, a := range map[string]actions.Action{
		"scan":            m.NewScan(&agentpb.ScanCpanelServerAction{Server: srv}),
		"fetch (pkgacct)": m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv, Account: "cpuser", Path: "fetched/S1/cpmove-cpuser.tar.gz"}),
		"fetch (path)":    m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv, RemotePath: "/home/cpmove-cpuser.tar.gz", Path: "fetched/S2/cpmove-cpuser.tar.gz"}),
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := a.Validate(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err := a.Apply(ctx, env)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("err %v after %s (context: %v), want a failure within the idle timeout", err, time.Since(start), ctx.Err())
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("took %s", d)
			}
		})
	}
	var left []string
	_ = filepath.WalkDir(area, func(p string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("left in the import area: %v", left)
	}
}

// pkgacct's overall bound: a server that answers keepalives but whose
// pkgacct never ends.
func TestFetchPkgacctTimeout(t *testing.T) {
	srv := startSSHD(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "pkgacct")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := NewModule(nil, nil)
	m.Fetch.PkgacctPath, m.Fetch.PkgacctDir = bin, dir
	m.Fetch.PkgacctTimeout = time.Second
	start := time.Now()
	_, err := run(t, m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv.server(t, srv.Fingerprint), Account: "cpuser", Path: "fetched/P1/cpmove-cpuser.tar.gz"}), fetchEnv(t))
	if err == nil || !strings.Contains(err.Error(), "did not finish within") || time.Since(start) > 20*time.Second {
		t.Fatalf("err %v after %s, want pkgacct's time bound", err, time.Since(start))
	}
}

func TestPrintable(t *testing.T) {
	if got := Printable("ok \x1b[31mred\n\xff"); got != "ok ?[31mred??" {
		t.Fatalf("got %q", got)
	}
}

// A server whose file grows after the Stat the checks used: what is
// written is capped all the same, at the limit and at the free space, and
// nothing is left in the import area.
func TestFetchFileGrowsAfterStat(t *testing.T) {
	srv := startSSHD(t)
	remote := filepath.Join(t.TempDir(), "cpmove-grow.tar.gz")
	grow := func() {
		f, err := os.OpenFile(remote, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if _, err := f.Write(make([]byte, 4<<20)); err != nil {
			t.Error(err)
		}
	}
	for _, c := range []struct {
		name     string
		maxBytes uint64
		free     uint64
		want     string
	}{
		{"over the limit", 1 << 20, 0, "over the limit"},
		{"over the free space", 0, freeMargin + 64<<10, "free space"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(remote, make([]byte, 1000), 0o644); err != nil {
				t.Fatal(err)
			}
			m := NewModule(nil, nil)
			m.Fetch.afterStat = grow
			if c.free != 0 {
				m.Fetch.free = func(string) (uint64, error) { return c.free, nil }
			}
			env := fetchEnv(t)
			_, err := run(t, m.NewFetch(&agentpb.FetchCpanelBackupAction{Server: srv.server(t, srv.Fingerprint), RemotePath: remote,
				Path: "fetched/G1/cpmove-grow.tar.gz", MaxBytes: c.maxBytes}), env)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
			var left []string
			_ = filepath.WalkDir(env.Profile.Cpanel().ImportDir, func(p string, d os.DirEntry, _ error) error {
				if d != nil && !d.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			if len(left) != 0 {
				t.Fatalf("left in the import area: %v", left)
			}
		})
	}
}

// The free space is asked again as the download goes: a disk that fills
// from elsewhere stops the download though the room measured at its start
// was enough.
func TestCapWriterRechecksFreeSpace(t *testing.T) {
	free := uint64(freeMargin + 4*freeRecheck)
	asked := 0
	cw := &capWriter{w: io.Discard, limit: 8 * freeRecheck, room: 4 * freeRecheck, dir: "d",
		freeBytes: func(dir string) (uint64, error) {
			asked++
			return free, nil
		}}
	chunk := make([]byte, 1<<20)
	write := func(n int) error {
		for range n {
			if _, err := cw.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	}
	if err := write(freeRecheck >> 20); err != nil {
		t.Fatalf("first %d MiB: %v", freeRecheck>>20, err)
	}
	if asked != 1 {
		t.Fatalf("free space asked %d times after %d bytes, want 1", asked, cw.n)
	}
	free = freeMargin + 1<<19 // someone else filled the disk
	err := write(freeRecheck >> 20)
	if !errors.Is(err, errNoRoom) {
		t.Fatalf("err %v, want errNoRoom", err)
	}
	if cw.n >= 2*freeRecheck {
		t.Fatalf("%d bytes passed after the disk filled", cw.n)
	}
}
