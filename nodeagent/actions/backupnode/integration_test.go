package backupnode_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/backupnode"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestMain(m *testing.M) { testenv.MainRemovingTestUsers(m) }

const (
	sshPath    = "/usr/bin/ssh"
	resticPath = "/usr/bin/restic"
	sftpPath   = "/usr/bin/sftp"
)

// backupNode is a backup node's module and supervised sshd under a
// prefix of its own.
type backupNode struct {
	env    *actions.Env
	mod    *backupnode.Module
	mgr    *services.Supervisor
	prefix string
	user   string
	port   string
}

// startBackupNode sets the module up the way the agent does and starts
// its sshd. Everything is undone at cleanup: the sshd (by the supervisor,
// which waits for it), the prefix and the test's backup user.
func startBackupNode(t *testing.T) *backupNode {
	t.Helper()
	testenv.RequireDaemon(t, "/usr/sbin/sshd")
	testenv.RequireDaemon(t, resticPath)
	testenv.RequireDaemon(t, sshPath)
	if os.Geteuid() != 0 {
		t.Skip("needs root: the sshd runs as root and chroots")
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	// Not under /tmp: sshd refuses a chroot below a world-writable
	// directory.
	prefix, err := os.MkdirTemp("/var/lib", "npanel-backup-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(prefix) })
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	p := platform.Debian12(prefix)
	p.SFTPListen = testenv.FreeAddr(t)
	p.BackupUser = user
	_, port, _ := net.SplitHostPort(p.SFTPListen)
	n := &backupNode{prefix: prefix, user: user, port: port}
	n.env = &actions.Env{Node: "backup1", Logger: testenv.Logger(), Profile: p, DataDir: t.TempDir(), Modules: []string{"backup"}}
	n.start(t)
	return n
}

// start runs the module's Setup and its sshd as a freshly started agent
// would; stop ends them as a stopping agent does.
func (n *backupNode) start(t *testing.T) {
	t.Helper()
	n.mgr = services.NewSupervisor(testenv.Logger())
	n.env.Services = n.mgr
	mgr := n.mgr
	t.Cleanup(func() { _ = mgr.Close() })
	n.mod = backupnode.NewModule()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	specs, err := n.mod.Setup(ctx, n.env)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	if len(specs) != 1 {
		t.Fatalf("setup returned %d specs", len(specs))
	}
	specs[0].LogFile = filepath.Join(n.prefix, "sftpd.log")
	if err := n.mgr.Ensure(ctx, specs[0]); err != nil {
		log, _ := os.ReadFile(specs[0].LogFile)
		t.Fatalf("start sshd: %v\n%s", err, log)
	}
}

func (n *backupNode) stop(t *testing.T) {
	t.Helper()
	if err := n.mgr.Close(); err != nil {
		t.Fatal(err)
	}
}

func (n *backupNode) ensure(t *testing.T, keys ...*agentpb.BackupAccessKey) *agentpb.BackupAccessResult {
	t.Helper()
	a := n.mod.NewEnsureAccess(&agentpb.EnsureBackupAccessAction{Keys: keys})
	if err := a.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := a.Apply(ctx, n.env)
	if err != nil {
		t.Fatalf("ensure backup access: %v", err)
	}
	return out.(*agentpb.BackupAccessResult)
}

func (n *backupNode) log() string {
	b, _ := os.ReadFile(filepath.Join(n.prefix, "sftpd.log"))
	return string(b)
}

// sourceNode is one source node: its key and the known_hosts pinning the
// backup node's host key, as the backup agent's sftp.command uses them.
type sourceNode struct {
	node       string
	keyFile    string
	knownHosts string
	signer     ssh.Signer
	pub        string
}

func newClient(t *testing.T, node string) *sourceNode {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, node)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &sourceNode{node: node, keyFile: filepath.Join(dir, "id_ed25519"), knownHosts: filepath.Join(dir, "known_hosts")}
	if err := os.WriteFile(c.keyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	if c.signer, err = ssh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	c.pub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.signer.PublicKey()))) + " root@" + node
	return c
}

func (c *sourceNode) key() *agentpb.BackupAccessKey {
	return &agentpb.BackupAccessKey{Node: c.node, PublicKey: c.pub}
}

// pin writes the known_hosts line the agent derives from the result.
func (c *sourceNode) pin(t *testing.T, res *agentpb.BackupAccessResult) {
	t.Helper()
	host, port, err := net.SplitHostPort(res.SftpAddress)
	if err != nil {
		t.Fatal(err)
	}
	line := "[" + host + "]:" + port + " " + res.HostKey + "\n"
	if err := os.WriteFile(c.knownHosts, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *sourceNode) sshOpts(n *backupNode) []string {
	return []string{"-i", c.keyFile, "-p", n.port, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + c.knownHosts}
}

// restic runs restic against the account repository acct of the source node's
// node on n, exactly as the backup agent does: sftp.command and the
// password on fd 3.
func (c *sourceNode) restic(t *testing.T, n *backupNode, acct string, args ...string) (string, error) {
	t.Helper()
	sftpCmd := strings.Join(append(append([]string{sshPath}, c.sshOpts(n)...), n.user+"@127.0.0.1", "-s", "sftp"), " ")
	argv := append([]string{"-r", "sftp:" + n.user + "@127.0.0.1:/" + c.node + "/" + acct,
		"-o", "sftp.command=" + sftpCmd, "--password-file", "/dev/fd/3", "--no-cache"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, resticPath, argv...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{r}
	go func() {
		_, _ = w.Write([]byte("repository password of " + acct + "\n"))
		w.Close()
	}()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// sftpBatch runs /usr/bin/sftp with commands as its batch, each line's
// failure tolerated ("-" prefix) so the output shows every answer.
func (c *sourceNode) sftpBatch(t *testing.T, n *backupNode, commands ...string) string {
	t.Helper()
	batch := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batch, []byte(strings.Join(commands, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-b", batch, "-i", c.keyFile, "-P", n.port, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + c.knownHosts, n.user + "@127.0.0.1"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sftpPath, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("sftp: %v\n%s", err, out)
	}
	return string(out)
}

// login tries auth against n with the Go SSH client: nil means the server
// let the key (or password) in.
func login(n *backupNode, hostKey string, auth ...ssh.AuthMethod) error {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hostKey))
	if err != nil {
		return err
	}
	cfg := &ssh.ClientConfig{User: n.user, Auth: auth, HostKeyCallback: ssh.FixedHostKey(pk), Timeout: 10 * time.Second}
	c, err := ssh.Dial("tcp", "127.0.0.1:"+n.port, cfg)
	if err != nil {
		return err
	}
	return c.Close()
}

// A source node stores, lists and restores a restic repository on the
// backup node over SFTP with exactly the command the backup agent uses.
func TestResticOverSFTP(t *testing.T) {
	n := startBackupNode(t)
	a, b := newClient(t, "web1"), newClient(t, "web2")
	res := n.ensure(t, a.key(), b.key())
	if res.SftpUser != n.user || res.SftpAddress != "127.0.0.1:"+n.port || !strings.HasPrefix(res.HostKey, "ssh-ed25519 AAAA") {
		t.Fatalf("result = %v", res)
	}
	a.pin(t, res)
	b.pin(t, res)

	src := t.TempDir()
	for name, body := range map[string]string{"index.php": "<?php echo 1;", "sub/data.txt": strings.Repeat("backup ", 1000)} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*sourceNode{a, b} {
		if out, err := c.restic(t, n, "acct1", "init"); err != nil {
			t.Fatalf("%s: restic init: %v\n%s\nsshd: %s", c.node, err, out, n.log())
		}
		if out, err := c.restic(t, n, "acct1", "backup", "--host", c.node, src); err != nil {
			t.Fatalf("%s: restic backup: %v\n%s", c.node, err, out)
		}
		dst := t.TempDir()
		if out, err := c.restic(t, n, "acct1", "restore", "latest", "--target", dst); err != nil {
			t.Fatalf("%s: restic restore: %v\n%s", c.node, err, out)
		}
		got, err := os.ReadFile(filepath.Join(dst, src, "sub/data.txt"))
		if err != nil || string(got) != strings.Repeat("backup ", 1000) {
			t.Fatalf("%s: restored file: %v %q", c.node, err, got)
		}
	}
	// The repositories are where the nodes' directories are, owned by the
	// backup user, and nowhere else.
	for _, c := range []*sourceNode{a, b} {
		fi, err := os.Stat(filepath.Join(n.prefix, "var/lib/npanel/backup-node", c.node, "acct1", "config"))
		if err != nil {
			t.Fatalf("%s: repository config: %v", c.node, err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) == 0 {
			t.Errorf("%s: repository written as root", c.node)
		}
	}
}

// Only SFTP, only with a listed key, never with a password; a key taken
// off the list stops working at the next login.
func TestAccessIsSFTPOnlyAndByListedKeys(t *testing.T) {
	n := startBackupNode(t)
	a, b, stranger := newClient(t, "web1"), newClient(t, "web2"), newClient(t, "web3")
	res := n.ensure(t, a.key(), b.key())
	for _, c := range []*sourceNode{a, b, stranger} {
		c.pin(t, res)
	}
	if err := login(n, res.HostKey, ssh.PublicKeys(a.signer)); err != nil {
		t.Fatalf("listed key refused: %v\n%s", err, n.log())
	}
	if err := login(n, res.HostKey, ssh.PublicKeys(stranger.signer)); err == nil {
		t.Fatal("a key not listed logged in")
	}
	if err := login(n, res.HostKey, ssh.Password("anything"), ssh.KeyboardInteractive(
		func(string, string, []string, []bool) ([]string, error) { return []string{"anything"}, nil })); err == nil ||
		!strings.Contains(err.Error(), "[none]") && !strings.Contains(err.Error(), "no supported methods remain") {
		t.Fatalf("password login: %v", err)
	}

	// A command is refused, the key's forced command being SFTP.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, sshPath, append(a.sshOpts(n), n.user+"@127.0.0.1", "/bin/true")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "sftp connections only") {
		t.Fatalf("ssh true: %v\n%s", err, out)
	}
	// So are a pty, a shell, a TCP forwarding and any subsystem but sftp.
	if err := refusedSession(n, res.HostKey, a.signer); err != nil {
		t.Fatal(err)
	}

	// Remove b: its next login fails, a's still works.
	n.ensure(t, a.key())
	if err := login(n, res.HostKey, ssh.PublicKeys(b.signer)); err == nil {
		t.Fatal("a removed key still logs in")
	}
	if err := login(n, res.HostKey, ssh.PublicKeys(a.signer)); err != nil {
		t.Fatalf("remaining key refused: %v", err)
	}
	// Its directory, with whatever backups it holds, stays.
	if _, err := os.Stat(filepath.Join(n.prefix, "var/lib/npanel/backup-node", b.node)); err != nil {
		t.Fatalf("removed node's directory: %v", err)
	}
}

// On a node where the module is not running the action fails as
// UNAVAILABLE, before touching anything.
func TestEnsureWithoutModule(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/sshd")
	p := platform.Debian12(t.TempDir())
	env := &actions.Env{Node: "web1", Logger: testenv.Logger(), Profile: p, DataDir: t.TempDir()}
	a := backupnode.NewModule().NewEnsureAccess(&agentpb.EnsureBackupAccessAction{Keys: []*agentpb.BackupAccessKey{newClient(t, "web2").key()}})
	_, err := a.Apply(context.Background(), env)
	if actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE {
		t.Fatalf("Apply = %v, want UNAVAILABLE", err)
	}
	if _, err := os.Stat(p.BackupNode().AuthorizedKeys); err == nil {
		t.Fatal("authorized_keys written without the module")
	}
}

// What a node's key reaches: its session starts in its own directory,
// inside the chroot, and the chroot's root cannot be listed. Every node
// logs in as the one backup user and sshd cannot chroot per key, so a
// node that knows another's name reaches that node's directory: this
// test pins that documented limit (see the package comment).
func TestConfinement(t *testing.T) {
	n := startBackupNode(t)
	a, b := newClient(t, "web1"), newClient(t, "web2")
	res := n.ensure(t, a.key(), b.key())
	a.pin(t, res)
	b.pin(t, res)
	if out, err := a.restic(t, n, "acct1", "init"); err != nil {
		t.Fatalf("restic init: %v\n%s", err, out)
	}
	out := b.sftpBatch(t, n, "pwd", "-ls /", "-ls /etc", "-cd ..", "pwd", "-ls /web1")
	if !strings.Contains(out, `Remote working directory: /web2`) {
		t.Errorf("b's session does not start in /web2:\n%s", out)
	}
	if !strings.Contains(out, `Remote working directory: /`+"\n") {
		t.Errorf("cd .. from /web2 did not stop at the chroot's root:\n%s", out)
	}
	if !strings.Contains(out, `remote readdir("/"): Permission denied`) {
		t.Errorf("the chroot's root can be listed (nodes would see each other's names):\n%s", out)
	}
	if strings.Contains(out, "passwd") {
		t.Errorf("the host's /etc is reachable:\n%s", out)
	}
	// The documented limit: the other node's directory is reachable.
	if !strings.Contains(out, "acct1") {
		t.Errorf("web2 could not list /web1: confinement is better than documented, update the package comment:\n%s", out)
	}
	t.Logf("sftp session of web2:\n%s", out)
}

// Ensuring the same set again writes nothing and answers the same; the
// host key outlives an agent restart.
func TestIdempotentAndHostKeyKept(t *testing.T) {
	n := startBackupNode(t)
	a, b := newClient(t, "web1"), newClient(t, "web2")
	res1 := n.ensure(t, a.key(), b.key())
	ak := filepath.Join(n.prefix, "etc/npanel/backup/authorized_keys")
	fi1, err := os.Stat(ak)
	if err != nil {
		t.Fatal(err)
	}
	body1, _ := os.ReadFile(ak)
	// The order of the list does not matter either.
	res2 := n.ensure(t, b.key(), a.key())
	fi2, _ := os.Stat(ak)
	body2, _ := os.ReadFile(ak)
	if !fi2.ModTime().Equal(fi1.ModTime()) || !bytes.Equal(body1, body2) || !os.SameFile(fi1, fi2) {
		t.Error("ensuring the same keys rewrote authorized_keys")
	}
	if res1.HostKey != res2.HostKey || res1.SftpAddress != res2.SftpAddress || res1.SftpUser != res2.SftpUser {
		t.Errorf("results differ: %v, %v", res1, res2)
	}
	if fi1.Mode().Perm() != 0o644 || fi1.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("authorized_keys mode %v uid %d", fi1.Mode(), fi1.Sys().(*syscall.Stat_t).Uid)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(body1)), "\n")[1:] {
		if !strings.HasPrefix(line, `restrict,command="internal-sftp -d /web`) {
			t.Errorf("authorized_keys line %q", line)
		}
	}

	a.pin(t, res1)
	if out, err := a.restic(t, n, "acct1", "init"); err != nil {
		t.Fatalf("restic init: %v\n%s", err, out)
	}
	conf := filepath.Join(n.prefix, "etc/npanel/backup/sshd_config")
	before, err := os.Stat(conf)
	if err != nil {
		t.Fatal(err)
	}
	n.stop(t)
	n.start(t)
	if after, err := os.Stat(conf); err != nil || !after.ModTime().Equal(before.ModTime()) || !os.SameFile(before, after) {
		t.Errorf("setting up again rewrote sshd_config (%v)", err)
	}
	res3 := n.ensure(t, a.key(), b.key())
	if res3.HostKey != res1.HostKey {
		t.Fatalf("host key changed across a restart: %s, then %s", res1.HostKey, res3.HostKey)
	}
	// The pinned key still verifies, and the repository is still there.
	if out, err := a.restic(t, n, "acct1", "snapshots"); err != nil {
		t.Fatalf("restic snapshots after restart: %v\n%s", err, out)
	}
}

// The sshd is reported like the other daemons and brought back when it
// dies.
func TestServiceSupervised(t *testing.T) {
	n := startBackupNode(t)
	// The version is fetched in the background once Status is asked.
	testenv.WaitFor(t, 10*time.Second, "sshd version", func() bool {
		s := status(n, backupnode.ServiceName)
		return s != nil && s.Version != ""
	})
	st := status(n, backupnode.ServiceName)
	if st == nil || st.State != services.Running || !strings.HasPrefix(st.Version, "OpenSSH_") ||
		!slices.Contains(st.Listen, "127.0.0.1:"+n.port) || st.PID == 0 {
		t.Fatalf("status = %+v", st)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "sshd restarted", func() bool {
		s := status(n, backupnode.ServiceName)
		return s != nil && s.State == services.Running && s.PID != st.PID && s.Restarts >= 1
	})
	a := newClient(t, "web1")
	res := n.ensure(t, a.key())
	if err := login(n, res.HostKey, ssh.PublicKeys(a.signer)); err != nil {
		t.Fatalf("login after restart: %v", err)
	}
}

// refusedSession logs in with key and checks that everything but the
// sftp subsystem is refused.
func refusedSession(n *backupNode, hostKey string, key ssh.Signer) error {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hostKey))
	if err != nil {
		return err
	}
	c, err := ssh.Dial("tcp", "127.0.0.1:"+n.port, &ssh.ClientConfig{User: n.user, Auth: []ssh.AuthMethod{ssh.PublicKeys(key)},
		HostKeyCallback: ssh.FixedHostKey(pk), Timeout: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	defer c.Close()
	if fc, err := c.Dial("tcp", "127.0.0.1:"+n.port); err == nil {
		fc.Close()
		return errors.New("a TCP forwarding was accepted")
	}
	s, err := c.NewSession()
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer s.Close()
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err == nil {
		return errors.New("a pty was granted")
	}
	if err := s.RequestSubsystem("netconf"); err == nil {
		return errors.New("a subsystem other than sftp was started")
	}
	s2, err := c.NewSession()
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer s2.Close()
	if out, err := s2.CombinedOutput("cat /etc/passwd"); err == nil || strings.Contains(string(out), "root:") {
		return fmt.Errorf("a command ran: %v: %s", err, out)
	}
	return nil
}

func status(n *backupNode, name string) *services.Status {
	for _, s := range n.mgr.Status() {
		if s.Name == name {
			return &s
		}
	}
	return nil
}
