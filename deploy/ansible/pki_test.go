package ansible

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestEtcdPKI runs npanel_etcd's certificate tasks on the control node (as
// site.yml does, once, delegated to localhost) for three members and two
// servers, twice, and checks the result works for etcd's mutual TLS.
func TestEtcdPKI(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pki := makePKI(t, dir, "e1 npanel_etcd_address=127.0.0.1\ne2 npanel_etcd_address=192.0.2.2\ne3 npanel_etcd_address=192.0.2.3\n", "c1\nc2\n")

	for _, name := range []string{"ca", "etcd-e1", "etcd-e2", "etcd-e3", "npanel-server-c1", "npanel-server-c2"} {
		fi, err := os.Stat(filepath.Join(pki, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s.key: mode %04o, want 0600", name, fi.Mode().Perm())
		}
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(pki, "ca.crt"))
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("ca.crt: %v", err)
	}
	load := func(name string) tls.Certificate {
		c, err := tls.LoadX509KeyPair(filepath.Join(pki, name+".crt"), filepath.Join(pki, name+".key"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return c
	}
	e2 := load("etcd-e2")
	if !slices.Equal(e2.Leaf.DNSNames, []string{"e2", "localhost"}) || len(e2.Leaf.IPAddresses) != 2 ||
		e2.Leaf.IPAddresses[0].String() != "192.0.2.2" || e2.Leaf.IPAddresses[1].String() != "127.0.0.1" {
		t.Errorf("etcd-e2 SANs: %v %v", e2.Leaf.DNSNames, e2.Leaf.IPAddresses)
	}
	if _, err := load("npanel-server-c1").Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Errorf("a server's client certificate is accepted as a TLS server's")
	}

	writeStranger(t, pki)
	// etcd's client and peer listeners: the member's certificate serves,
	// and only certificates from the CA are let in (client-cert-auth).
	mutual := func(server, client string) error {
		l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
			Certificates: []tls.Certificate{load(server)},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
		})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			_, _ = c.Write([]byte("ok"))
			c.Close()
		}()
		c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{
			Certificates: []tls.Certificate{load(client)},
			RootCAs:      pool,
			ServerName:   "127.0.0.1",
		})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.ReadAll(c)
		return err
	}
	if err := mutual("etcd-e1", "npanel-server-c2"); err != nil {
		t.Errorf("npanel server to etcd member: %v", err)
	}
	if err := mutual("etcd-e1", "etcd-e3"); err != nil {
		t.Errorf("etcd peer to peer: %v", err)
	}
	if err := mutual("etcd-e1", "stranger"); err == nil {
		t.Errorf("a client certificate from another CA was let in")
	}
}

// makePKI runs npanel_etcd's certificate tasks for these etcd members and
// control plane servers (inventory lines) twice and returns the directory:
// the first run makes everything, the second must change nothing.
func makePKI(t *testing.T, dir, members, servers string) string {
	t.Helper()
	pki := filepath.Join(dir, "pki")
	inv := filepath.Join(dir, "pki-inventory.ini")
	if err := os.WriteFile(inv, []byte("[etcd]\n"+members+"[control_plane]\n"+servers+
		"[all:vars]\nansible_connection=local\nansible_python_interpreter=/usr/bin/python3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	play := filepath.Join(dir, "pki.yml")
	if err := os.WriteFile(play, []byte(`---
- name: Etcd PKI
  hosts: etcd
  gather_facts: false
  tasks:
    - name: Certificates
      ansible.builtin.include_role:
        name: npanel_etcd
        tasks_from: pki.yml
        apply:
          run_once: true
          delegate_to: localhost
      vars:
        npanel_etcd_pki_dir: `+pki+`
`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(ansibleEnv(t), "ANSIBLE_ROLES_PATH="+filepath.Join(playbookDir(t), "roles"))
	for n, wantChanged := range []bool{true, false} {
		out, err := run(t, dir, env, ansiblePlaybook, "-i", inv, play)
		if err != nil {
			t.Fatalf("PKI run %d: %v\n%s", n+1, err, tail(out, 40))
		}
		// The tasks run once, on the first member.
		r, ok := parseRecap(out)["e1"]
		if !ok || r.failed != 0 || (r.changed > 0) != wantChanged {
			t.Fatalf("PKI run %d: recap %+v, want changed>0 %v\n%s", n+1, r, wantChanged, tail(out, 40))
		}
	}
	return pki
}

// writeStranger writes a self-signed client certificate, from no CA of
// the cluster, as pki/stranger.crt and .key.
func writeStranger(t *testing.T, pki string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "npanel-server-c1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pki, "stranger.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pki, "stranger.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
}
