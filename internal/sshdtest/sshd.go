// Package sshdtest starts a real OpenSSH sshd for tests: its own config,
// an ed25519 host key and an authorized client key, on a free loopback
// port, logging in as root with the key only. Password logins would need
// PAM or a shadow entry a test must not write, so they are not offered.
package sshdtest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	sshdBin       = "/usr/sbin/sshd"
	sftpServerBin = "/usr/lib/openssh/sftp-server"
)

// Server is a running sshd.
type Server struct {
	Port int
	// Fingerprint is the host key's, SHA256:... as ssh-keygen -l prints it.
	Fingerprint string
	// ClientKey is the authorized private key, OpenSSH PEM.
	ClientKey []byte
}

// Start starts sshd and stops it when t ends. Without sshd (or root) it
// skips, except in CI (CI=true) where that is a failure.
func Start(t testing.TB) *Server {
	t.Helper()
	why := ""
	if _, err := os.Stat(sshdBin); err != nil {
		why = sshdBin + " missing: install openssh-server"
	} else if os.Geteuid() != 0 {
		why = "sshd needs root to start"
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	dir := t.TempDir()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostPEM, err := ssh.MarshalPrivateKey(hostPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	hostPub, _ := ssh.NewPublicKey(hostPriv.Public())
	_, cliPriv, _ := ed25519.GenerateKey(rand.Reader)
	cliPEM, _ := ssh.MarshalPrivateKey(cliPriv, "")
	cliPub, _ := ssh.NewPublicKey(cliPriv.Public())
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hostKey := write("host_key", pem.EncodeToMemory(hostPEM))
	auth := write("authorized_keys", ssh.MarshalAuthorizedKey(cliPub))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// StrictModes off: the test's files live under /tmp, which sshd
	// would refuse as a world-writable parent.
	conf := write("sshd_config", fmt.Appendf(nil, `Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile %s
AuthorizedKeysFile %s
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp %s
LogLevel ERROR
`, port, hostKey, filepath.Join(dir, "sshd.pid"), auth, sftpServerBin))
	// Privilege separation wants its empty directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshdBin, "-D", "-e", "-f", conf)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("sshd: %s", logs.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return &Server{Port: port, Fingerprint: ssh.FingerprintSHA256(hostPub), ClientKey: pem.EncodeToMemory(cliPEM)}
}
