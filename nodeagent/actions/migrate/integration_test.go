package migrate

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/npanel/npanel/protos/agentpb"
)

// A home with files, a hard link, a symlink and xattrs arrives identical
// (owners, modes, times, links); a second pass sends little; a final pass
// with --delete removes what the source deleted.
func TestSyncFiles(t *testing.T) {
	p := newPair(t, pairOpts{})
	s := p.src.home
	writeFile(t, filepath.Join(s, "public_html/index.php"), []byte("<?php echo 'hi';"), p.uid, p.gid)
	writeFile(t, filepath.Join(s, "public_html/big.bin"), bytes.Repeat([]byte("0123456789abcdef"), 64<<10), p.uid, p.gid)
	writeFile(t, filepath.Join(s, "Maildir/cur/1.mail"), []byte("Subject: x\n\nbody\n"), p.uid, p.gid)
	writeFile(t, filepath.Join(s, "gone.txt"), []byte("to be deleted"), p.uid, p.gid)
	if err := os.Link(filepath.Join(s, "public_html/index.php"), filepath.Join(s, "hardlink.php")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("public_html/index.php", filepath.Join(s, "symlink.php")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(s, "symlink.php"), int(p.uid), int(p.gid)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(s, "public_html/index.php"), 0o640); err != nil {
		t.Fatal(err)
	}
	xattr := unix.Setxattr(filepath.Join(s, "public_html/big.bin"), "user.npanel", []byte("kept"), 0)
	if xattr != nil {
		t.Logf("no user xattrs on this filesystem (%v): not checked", xattr)
	}
	acl := unix.Lsetxattr(filepath.Join(s, "Maildir/cur/1.mail"), "system.posix_acl_access", posixACL(33), 0)
	if acl != nil {
		t.Logf("no POSIX ACLs on this filesystem (%v): not checked", acl)
	}
	// A file owned by another id (the web server's group) becomes the
	// account's on the target, like every other (compareTrees).
	writeFile(t, filepath.Join(s, "public_html/web.txt"), []byte("w"), p.uid, 33)

	r := p.sync(t, true, false)
	if len(r.GetFailed()) > 0 {
		t.Fatalf("failed: %v\nsource log: %s\ntarget log: %s", r.GetFailed(), p.src.log, p.dst.log)
	}
	if r.GetFiles() != 6 || r.GetFileBytes() < 64<<10 || r.GetUid() != p.uid || r.GetGid() != p.gid {
		t.Errorf("first pass: %v", r)
	}
	compareTrees(t, s, p.dst.home, p.uid, p.gid)
	if xattr == nil && xattrs(filepath.Join(p.dst.home, "public_html/big.bin")) == "" {
		t.Error("xattr lost")
	}
	if acl == nil && !strings.Contains(xattrs(filepath.Join(p.dst.home, "Maildir/cur/1.mail")), "posix_acl_access") {
		t.Error("ACL lost")
	}
	first := r.GetFileBytes()

	r = p.sync(t, true, false)
	if len(r.GetFailed()) > 0 {
		t.Fatal(r.GetFailed())
	}
	if r.GetFileBytes() >= first/10 {
		t.Errorf("second pass sent %d bytes (first %d): not incremental", r.GetFileBytes(), first)
	}
	t.Logf("first pass %d bytes, second %d bytes", first, r.GetFileBytes())

	if err := os.Remove(filepath.Join(s, "gone.txt")); err != nil {
		t.Fatal(err)
	}
	if r = p.sync(t, true, false); len(r.GetFailed()) > 0 {
		t.Fatal(r.GetFailed())
	}
	if _, err := os.Lstat(filepath.Join(p.dst.home, "gone.txt")); err != nil {
		t.Error("a non-final pass deleted on the target")
	}
	r = p.sync(t, true, true)
	if len(r.GetFailed()) > 0 {
		t.Fatal(r.GetFailed())
	}
	if _, err := os.Lstat(filepath.Join(p.dst.home, "gone.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("final pass kept the deleted file: %v", err)
	}
	compareTrees(t, s, p.dst.home, p.uid, p.gid)
}

// The receiver runs as the account: whatever the source's tree holds
// (setuid-root files, other owners, device nodes, fifos, a symlink to
// "/" followed in the next pass by a file "under" it), the target's home
// holds only the account's files and nothing outside it is written.
func TestSyncReceiverIsTheAccount(t *testing.T) {
	p := newPair(t, pairOpts{})
	s, d := p.src.home, p.dst.home
	outside := t.TempDir()
	if err := os.Chmod(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s, "suid"), []byte("#!/bin/sh\n"), 0, 0)
	if err := os.Chmod(filepath.Join(s, "suid"), 0o4755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s, "other.txt"), []byte("y"), 61234, 33)
	if err := unix.Mkfifo(filepath.Join(s, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := unix.Mknod(filepath.Join(s, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
	if dev != nil {
		t.Logf("no device node on the source (%v): not checked", dev)
	}
	if err := os.Symlink(outside, filepath.Join(s, "x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(s, "x"), int(p.uid), int(p.gid)); err != nil {
		t.Fatal(err)
	}
	if r := p.sync(t, true, false); len(r.GetFailed()) > 0 {
		t.Fatalf("%v\n%s", r.GetFailed(), p.dst.log)
	}
	// Second pass: x is a directory holding "evil" now.
	if err := os.Remove(filepath.Join(s, "x")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s, "x/evil"), []byte("evil"), p.uid, p.gid)
	if err := os.Chown(filepath.Join(s, "x"), int(p.uid), int(p.gid)); err != nil {
		t.Fatal(err)
	}
	if r := p.sync(t, true, false); len(r.GetFailed()) > 0 {
		t.Fatalf("%v\n%s", r.GetFailed(), p.dst.log)
	}
	// A directory of root's in the target's home is root's: the
	// receiver cannot write in it (it would as root).
	locked := filepath.Join(d, "locked")
	if err := os.Mkdir(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s, "locked/evil"), []byte("evil"), p.uid, p.gid)
	if err := os.Chown(filepath.Join(s, "locked"), int(p.uid), int(p.gid)); err != nil {
		t.Fatal(err)
	}
	if r := p.sync(t, true, false); len(r.GetFailed()) != 1 || r.GetFailed()[0].GetItem() != "files" {
		t.Errorf("writing in root's directory: failed %v, want the files item", r.GetFailed())
	}
	if _, err := os.Lstat(filepath.Join(locked, "evil")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the receiver wrote in a directory of root's: %v", err)
	}

	if ents, err := os.ReadDir(outside); err != nil || len(ents) > 0 {
		t.Errorf("written outside the home: %v %v", ents, err)
	}
	got := tree(t, d)
	for rel, e := range got {
		if rel == "locked" {
			continue
		}
		if e.uid != p.uid || e.gid != p.gid {
			t.Errorf("%s owned by %d:%d, want the account's %d:%d", rel, e.uid, e.gid, p.uid, p.gid)
		}
		if e.mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
			t.Errorf("%s: special file %v created", rel, e.mode)
		}
	}
	for _, rel := range []string{"suid", "other.txt", "x/evil"} {
		if _, ok := got[rel]; !ok {
			t.Errorf("%s not copied", rel)
		}
	}
	if e := got["x"]; !e.mode.IsDir() {
		t.Errorf("x on the target: %v, want the directory", e.mode)
	}
}

// clientFor dials the target's endpoint with the pair's key from local
// (an address of this machine; "" picks one).
func (p *pair) client(t testing.TB, local string, user string) (*ssh.Client, error) {
	t.Helper()
	signer, err := p.src.m.migrationKey(p.src.env.DataDir, p.id, false)
	if err != nil {
		t.Fatal(err)
	}
	return dialFrom(p.endpoint, local, user, signer, p.hostKey)
}

func dialFrom(endpoint, local, user string, signer ssh.Signer, hostKey string) (*ssh.Client, error) {
	hk, err := publicKey("host key", hostKey)
	if err != nil {
		return nil, err
	}
	cfg := &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hk), Timeout: 10 * time.Second}
	if local == "" {
		return ssh.Dial("tcp", endpoint, cfg)
	}
	d := netDialer(local)
	nc, err := d.Dial("tcp", endpoint)
	if err != nil {
		return nil, err
	}
	cc, chans, reqs, err := ssh.NewClientConn(nc, endpoint, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return ssh.NewClient(cc, chans, reqs), nil
}

// run execs cmd in a new session and returns the exec error.
func run(c *ssh.Client, cmd string) error {
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	var stderr bytes.Buffer
	s.Stderr = &stderr
	s.Stdin = strings.NewReader("")
	err = s.Run(cmd)
	if err != nil {
		return errors.Join(err, errors.New(stderr.String()))
	}
	return nil
}

func TestEndpointRefuses(t *testing.T) {
	p := newPair(t, pairOpts{dbs: nil})

	t.Run("unknown key", func(t *testing.T) {
		other, err := p.src.m.migrationKey(p.src.env.DataDir, "someother", true)
		if err != nil {
			t.Fatal(err)
		}
		if c, err := dialFrom(p.endpoint, "", p.user, other, p.hostKey); err == nil {
			c.Close()
			t.Fatal("unknown key let in")
		}
		if !strings.Contains(p.dst.log.String(), "unknown key") {
			t.Error("refusal not logged")
		}
	})
	t.Run("wrong user", func(t *testing.T) {
		if c, err := p.client(t, "", "root"); err == nil {
			c.Close()
			t.Fatal("another user name let in")
		}
	})
	t.Run("wrong host key pinned", func(t *testing.T) {
		signer, _ := p.src.m.migrationKey(p.src.env.DataDir, p.id, false)
		if c, err := dialFrom(p.endpoint, "", p.user, signer, p.pub); err == nil {
			c.Close()
			t.Fatal("client accepted a host key it did not pin")
		}
	})

	c, err := p.client(t, "", p.user)
	if err != nil {
		t.Fatalf("authorized key refused: %v\n%s", err, p.dst.log)
	}
	defer c.Close()
	for _, cmd := range []string{
		"sh",
		"sh -c id",
		"/bin/sh",
		"rsync --server --sender -lHogDtpAXre.iLsfxCIvu --numeric-ids . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --rsync-path=sh . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids -e ssh . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . /etc",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . ../other",
		"rsync --server -lHogDtpAXre.iLsfxCIvu . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids --temp-dir=/tmp . .",
		"rsync --server -lHogDtpAXre.iLsfxCIvu --numeric-ids . . ; sh",
		"restore-database mariadb " + p.user + "_notours",
		"restore-database mariadb mysql",
	} {
		if err := run(c, cmd); err == nil {
			t.Errorf("%q ran", cmd)
		}
	}
	for _, typ := range []string{"shell", "pty-req", "subsystem", "env"} {
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		ok, err := s.SendRequest(typ, true, nil)
		if ok {
			t.Errorf("%s request accepted", typ)
		}
		_ = err
		s.Close()
	}
	if _, err := c.Dial("tcp", p.endpoint); err == nil {
		t.Error("port forwarding allowed")
	}
	if !strings.Contains(p.dst.log.String(), "exec refused") {
		t.Error("refused commands not logged")
	}
}

func TestEndpointRefusesAddressAndExpiry(t *testing.T) {
	// Authorized only from 127.0.0.2: a connection from 127.0.0.1 fails.
	p := newPair(t, pairOpts{from: []string{"127.0.0.2"}})
	if c, err := p.client(t, "127.0.0.1", p.user); err == nil {
		c.Close()
		t.Fatal("connection from an address not authorized let in")
	}
	if !strings.Contains(p.dst.log.String(), "source address not authorized") {
		t.Errorf("refusal not logged:\n%s", p.dst.log)
	}
	c, err := p.client(t, "127.0.0.2", p.user)
	if err != nil {
		t.Fatalf("authorized address refused: %v", err)
	}
	c.Close()

	// Expired: rewrite the stored authorization's expiry into the past
	// (the action refuses to store one).
	auths, err := authorizations(p.dst.env.DataDir)
	if err != nil || len(auths) != 1 {
		t.Fatal(auths, err)
	}
	auths[0].ExpiresUnix = time.Now().Add(-time.Second).Unix()
	if err := p.dst.m.saveAuthorization(p.dst.env.DataDir, auths[0]); err != nil {
		t.Fatal(err)
	}
	if c, err := p.client(t, "127.0.0.2", p.user); err == nil {
		c.Close()
		t.Fatal("expired authorization let in")
	}
	if !strings.Contains(p.dst.log.String(), "authorization expired") {
		t.Error("expiry refusal not logged")
	}
	// The next start of the endpoint removes it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := NewModule(nil).Listen(ctx, p.dst.env, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if auths, err := authorizations(p.dst.env.DataDir); err != nil || len(auths) != 0 {
		t.Errorf("expired authorization kept: %v %v", auths, err)
	}
}

// Revoke closes open sessions and keeps the key out; it is idempotent on
// both sides and removes the source's key.
func TestRevoke(t *testing.T) {
	p := newPair(t, pairOpts{})
	c, err := p.client(t, "", p.user)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	for range 2 {
		mustApply(t, p.dst.env, p.dst.m.NewRevokeMigration(&agentpb.RevokeMigrationAction{MigrationId: p.id}))
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("open connection survived the revoke")
	}
	if c, err := p.client(t, "", p.user); err == nil {
		c.Close()
		t.Fatal("revoked key let in")
	}
	for range 2 {
		mustApply(t, p.src.env, p.src.m.NewRevokeMigration(&agentpb.RevokeMigrationAction{MigrationId: p.id}))
	}
	if _, err := os.Stat(keyPath(p.src.env.DataDir, p.id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source key kept: %v", err)
	}
	_, err = apply(t, p.src.env, p.src.m.NewSyncMigration(&agentpb.SyncMigrationAction{
		MigrationId: p.id, Username: p.user, TargetEndpoint: p.endpoint, TargetHostKey: p.hostKey, Files: true}))
	if err == nil {
		t.Error("sync without a key succeeded")
	}
}

// The key and the authorization survive a restart of the agent (a new
// module on the same data dir), as does the host key.
func TestStateSurvivesRestart(t *testing.T) {
	p := newPair(t, pairOpts{})
	m2 := NewModule(p.dst.dbm)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := m2.Listen(ctx, p.dst.env, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, hk, _ := m2.endpoint()
	if got := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hk.PublicKey()))); got != p.hostKey {
		t.Fatalf("host key changed across restart")
	}
	p.endpoint = addr
	c, err := p.client(t, "", p.user)
	if err != nil {
		t.Fatalf("authorization lost across restart: %v", err)
	}
	c.Close()
	k := mustApply(t, p.src.env, NewModule(nil).NewMigrationKey(&agentpb.MigrationKeyAction{MigrationId: p.id, Username: p.user})).(*agentpb.MigrationKeyResult)
	if k.GetPublicKey() != p.pub {
		t.Error("migration_key is not idempotent")
	}
	fi, err := os.Stat(keyPath(p.src.env.DataDir, p.id))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key file: %v %v", fi, err)
	}
}

// A source that pins another host key sends nothing and reports the
// files as failed (partial), not an error of the whole action.
func TestSyncRefusesWrongHostKey(t *testing.T) {
	p := newPair(t, pairOpts{})
	writeFile(t, filepath.Join(p.src.home, "a.txt"), []byte("a"), p.uid, p.gid)
	other, err := p.src.m.migrationKey(p.src.env.DataDir, "other", true)
	if err != nil {
		t.Fatal(err)
	}
	p.hostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(other.PublicKey())))
	r := p.sync(t, true, false)
	if len(r.GetFailed()) != 1 || r.GetFailed()[0].GetItem() != "files" ||
		!strings.Contains(r.GetFailed()[0].GetError(), "Host key verification failed") {
		t.Fatalf("result %v", r)
	}
	if _, err := os.Lstat(filepath.Join(p.dst.home, "a.txt")); err == nil {
		t.Error("file sent to an unpinned host")
	}
}

// An IPv6 endpoint: rsync is given user@[::1]:. and the address check
// takes the v6 source.
func TestSyncIPv6(t *testing.T) {
	requireTools(t)
	p := &pair{id: "mig-v6"}
	p.user, p.uid, p.gid = testUser(t)
	p.src = newNode(t, "src", p.user, p.uid, p.gid, nodeOpts{})
	p.dst = newNode(t, "dst", p.user, p.uid, p.gid, nodeOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := p.dst.m.Listen(ctx, p.dst.env, "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	key := mustApply(t, p.src.env, p.src.m.NewMigrationKey(&agentpb.MigrationKeyAction{MigrationId: p.id, Username: p.user})).(*agentpb.MigrationKeyResult)
	az := mustApply(t, p.dst.env, p.dst.m.NewAuthorizeMigration(&agentpb.AuthorizeMigrationAction{
		MigrationId: p.id, Username: p.user, PublicKey: key.GetPublicKey(), FromAddresses: []string{"::1"},
		ExpiresUnix: time.Now().Add(time.Hour).Unix(), SourceUid: p.uid, SourceGid: p.gid,
	})).(*agentpb.AuthorizeMigrationResult)
	p.hostKey, p.endpoint = az.GetHostKey(), az.GetEndpoint()
	writeFile(t, filepath.Join(p.src.home, "v6.txt"), []byte("six"), p.uid, p.gid)
	if r := p.sync(t, true, false); len(r.GetFailed()) > 0 {
		t.Fatalf("%v\n%s", r.GetFailed(), p.dst.log)
	}
	compareTrees(t, p.src.home, p.dst.home, p.uid, p.gid)
}

// The source's rsync runs as the account: a file of the home the account
// cannot read fails the files item instead of being copied by root; the
// others still go; the run's key copy is gone afterwards.
func TestSyncSenderIsTheAccount(t *testing.T) {
	p := newPair(t, pairOpts{})
	s := p.src.home
	writeFile(t, filepath.Join(s, "ok.txt"), []byte("ok"), p.uid, p.gid)
	writeFile(t, filepath.Join(s, "secret"), []byte("root's"), 0, 0)
	if err := os.Chmod(filepath.Join(s, "secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := p.sync(t, true, false)
	if len(r.GetFailed()) != 1 || r.GetFailed()[0].GetItem() != "files" || !strings.Contains(r.GetFailed()[0].GetError(), "secret") {
		t.Errorf("failed %v, want the files item naming the unreadable file", r.GetFailed())
	}
	if _, err := os.Lstat(filepath.Join(p.dst.home, "secret")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file the account cannot read was copied: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(p.dst.home, "ok.txt")); err != nil || string(b) != "ok" {
		t.Errorf("ok.txt: %q %v", b, err)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), "npanel-migrate-"+p.id+"-*")); len(left) > 0 {
		t.Errorf("key copies left behind: %v", left)
	}
}

// The run's key copy is the account's alone: 0400 in a 0700 directory of
// its own, and gone after cleanup.
func TestAccountSSHFiles(t *testing.T) {
	p := newPair(t, pairOpts{})
	hk, err := publicKey("host key", p.hostKey)
	if err != nil {
		t.Fatal(err)
	}
	dir, key, kh, cleanup, err := accountSSHFiles(p.src.env.DataDir, p.id, hk, p.uid, p.gid)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(keyPath(p.src.env.DataDir, p.id))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p    string
		mode fs.FileMode
	}{{dir, fs.ModeDir | 0o700}, {key, 0o400}, {kh, 0o400}} {
		fi, err := os.Lstat(c.p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != c.mode || st.Uid != p.uid || st.Gid != p.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", c.p, fi.Mode(), st.Uid, st.Gid, c.mode, p.uid, p.gid)
		}
	}
	if b, _ := os.ReadFile(key); !bytes.Equal(b, want) {
		t.Error("key copy differs")
	}
	cleanup()
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cleanup left %s: %v", dir, err)
	}
}
