package cpanel

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// The password login, against an in-process SSH server (the test's real
// sshd takes keys only: a password there would need PAM or a shadow
// entry). Only the dial logic is under test: the sealed password opens for
// this user and host, logs in, and never shows in an error.
func TestDialPassword(t *testing.T) {
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(hostPriv)
	cfg := &ssh.ServerConfig{PasswordCallback: func(c ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
		if c.User() == "root" && string(pw) == "correct horse" {
			return nil, nil
		}
		return nil, ssh.ErrNoAuth
	}}
	cfg.AddHostKey(signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if sc, chans, reqs, err := ssh.NewServerConn(c, cfg); err == nil {
					go ssh.DiscardRequests(reqs)
					for ch := range chans {
						_ = ch.Reject(ssh.Prohibited, "no")
					}
					sc.Close()
				}
			}()
		}
	}()
	port := uint32(l.Addr().(*net.TCPAddr).Port)
	fp := ssh.FingerprintSHA256(signer.PublicKey())
	env := fetchEnv(t)
	server := func(pw string) *agentpb.CpanelServer {
		sealed, err := pki.Seal(&testKey.PublicKey, []byte(pw), agentpb.CpanelServerPasswordSealContext("root", "127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		return &agentpb.CpanelServer{Host: "127.0.0.1", Port: port, User: "root", HostKeyFingerprint: fp, SealedPassword: sealed}
	}
	c, seen, err := dial(context.Background(), env, server("correct horse"), FetchOptions{})
	if err != nil || seen != fp {
		t.Fatalf("password login: %v (key %s)", err, seen)
	}
	c.Close()
	_, _, err = dial(context.Background(), env, server("wrong-secret-77"), FetchOptions{})
	if err == nil || strings.Contains(err.Error(), "wrong-secret-77") {
		t.Fatalf("wrong password: %v", err)
	}
	// Sealed for another host: the node refuses to open it.
	s := server("correct horse")
	s.Host = "localhost"
	if _, _, err := dial(context.Background(), env, s, FetchOptions{}); err == nil || !strings.Contains(err.Error(), "not sealed") {
		t.Fatalf("password sealed for another host: %v", err)
	}
}
