package main

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/etcdtls"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
)

// tlsServer is an `npanel server` serving the API over HTTPS with a
// certificate from its cluster CA, the default.
type tlsServer struct {
	api, dataDir string
	fingerprint  string // what its first start printed
	cmd          *exec.Cmd
	out          *syncBuffer
}

func startTLSServer(t *testing.T, api string) *tlsServer {
	t.Helper()
	s := &tlsServer{api: api, dataDir: t.TempDir(), out: &syncBuffer{}}
	s.cmd = exec.Command(binary, "server", "--data-dir", s.dataDir, "--api-listen", api,
		"--agent-listen", testenv.FreeAddr(t), "--gossip-listen", "127.0.0.1:0")
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("server output:\n%s", s.out.String())
		}
	})
	testenv.WaitFor(t, 60*time.Second, "the fingerprint notice", func() bool {
		return strings.Contains(s.out.String(), "Log in pinning it")
	})
	s.fingerprint = strings.TrimSpace(between(s.out.String(), "SHA-256 fingerprint:\n\n", "\n\n"))
	if !pki.ValidFingerprint(s.fingerprint) {
		t.Fatalf("the notice's fingerprint %q", s.fingerprint)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.PinnedTLSConfig("127.0.0.1", s.fingerprint)}}
	testenv.WaitFor(t, 60*time.Second, "server /readyz over HTTPS", func() bool {
		resp, err := hc.Get("https://" + api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

func (s *tlsServer) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func (s *tlsServer) password(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ctl against an HTTPS API: login pins the CA's root (--ca-fingerprint,
// required without a terminal), later calls use the pin, and a server at
// the same address with another CA is refused with exit 3 — by every call
// and by a new login, until the operator pins the new CA explicitly.
func TestCtlPinsAPICA(t *testing.T) {
	api := testenv.FreeAddr(t)
	a := startTLSServer(t, api)
	conf := t.TempDir()
	env := []string{"XDG_CONFIG_HOME=" + conf, "NPANEL_SERVER=https://" + api, "NPANEL_TOKEN=", "NPANEL_CA_FINGERPRINT="}

	if out, code := run(t, env, a.password(t), "ctl", "login", "--password-stdin"); code != 2 || !strings.Contains(out, "--ca-fingerprint") {
		t.Fatalf("login without a pin and without a terminal: exit %d: %s", code, out)
	}
	if out, code := run(t, env, a.password(t), "ctl", "login", "--password-stdin", "--ca-fingerprint", "xyz"); code != 2 || !strings.Contains(out, "64 hex") {
		t.Fatalf("login with a malformed pin: exit %d: %s", code, out)
	}
	wrong := strings.Repeat("0", 64)
	if out, code := run(t, env, a.password(t), "ctl", "login", "--password-stdin", "--ca-fingerprint", wrong); code != exitTrust || !strings.Contains(out, "pinned") {
		t.Fatalf("login with another pin: exit %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(conf, "npanel", "credentials.json")); err == nil {
		t.Fatal("a refused login saved a token")
	}
	// The fingerprint as some tools print it (upper case, colons) is the same pin.
	colons := strings.ToUpper(a.fingerprint[:2]) + ":" + strings.ToUpper(a.fingerprint[2:])
	if out, code := run(t, env, a.password(t), "ctl", "login", "--password-stdin", "--ca-fingerprint", colons); code != 0 || !strings.Contains(out, "Logged in") {
		t.Fatalf("login with the pin: exit %d: %s", code, out)
	}
	trust, err := os.ReadFile(filepath.Join(conf, "npanel", "servers.json"))
	if err != nil || !strings.Contains(string(trust), a.fingerprint) {
		t.Fatalf("saved pin: %s, %v", trust, err)
	}
	if out, code := run(t, env, "", "ctl", "whoami"); code != 0 || !strings.Contains(out, "admin") {
		t.Fatalf("whoami with the saved pin: exit %d: %s", code, out)
	}

	// Another cluster takes the address (a replaced or impersonating
	// server): its certificate does not chain to the pinned root.
	a.stop()
	b := startTLSServer(t, api)
	if b.fingerprint == a.fingerprint {
		t.Fatal("two clusters with one CA")
	}
	out, code := run(t, env, "", "ctl", "node", "list")
	if code != exitTrust || !strings.Contains(out, "does not chain to the CA pinned") {
		t.Fatalf("node list against another CA: exit %d: %s", code, out)
	}
	t.Logf("node list against another CA: exit %d: %s", code, out)
	// Plain HTTP to the HTTPS API says what to do.
	plain := append([]string{"NPANEL_SERVER=http://" + api, "NPANEL_TOKEN=x"}, env[0])
	if out, code := run(t, plain, "", "ctl", "node", "list"); code != 1 || !strings.Contains(out, "--server https://") {
		t.Fatalf("node list in plain HTTP to the HTTPS API: exit %d: %s", code, out)
	}
	if out, code := run(t, env, b.password(t), "ctl", "login", "--password-stdin"); code != exitTrust || !strings.Contains(out, "pinned") {
		t.Fatalf("a new login keeps the pin: exit %d: %s", code, out)
	}
	// An explicit new pin is the way to accept the new CA.
	if out, code := run(t, env, b.password(t), "ctl", "login", "--password-stdin", "--ca-fingerprint", b.fingerprint); code != 0 {
		t.Fatalf("login pinning the new CA: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "whoami"); code != 0 || !strings.Contains(out, "admin") {
		t.Fatalf("whoami after re-pinning: exit %d: %s", code, out)
	}

	// Without any pin (a token from the environment, a fresh config) the
	// cluster CA is unknown to the system roots: refused, with the way out.
	fresh := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=https://" + api, "NPANEL_TOKEN=some-token", "NPANEL_CA_FINGERPRINT="}
	if out, code := run(t, fresh, "", "ctl", "node", "list"); code != exitTrust || !strings.Contains(out, "ctl login") {
		t.Fatalf("node list without a pin: exit %d: %s", code, out)
	}
	// --system-roots is for a public CA's certificate: the cluster CA's
	// fails verification.
	if out, code := run(t, fresh, b.password(t), "ctl", "login", "--password-stdin", "--system-roots"); code != exitTrust {
		t.Fatalf("login with --system-roots to a cluster-CA server: exit %d: %s", code, out)
	}
}

// On a terminal login shows the CA's fingerprint and pins it once the user
// confirms; "no" pins nothing.
func TestCtlLoginConfirmsPinOnTerminal(t *testing.T) {
	s := startTLSServer(t, testenv.FreeAddr(t))
	conf := t.TempDir()
	login := func(answer string) (string, int) {
		t.Helper()
		ctl, term := openPTY(t)
		cmd := exec.Command(binary, "ctl", "login")
		cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+conf, "NPANEL_SERVER=https://"+s.api, "NPANEL_TOKEN=", "NPANEL_CA_FINGERPRINT=")
		var out syncBuffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = term, &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 10*time.Second, "the trust question", func() bool { return strings.Contains(out.String(), "[y/N]") })
		if _, err := ctl.Write([]byte(answer + "\n")); err != nil {
			t.Fatal(err)
		}
		if answer == "y" {
			testenv.WaitFor(t, 10*time.Second, "the password prompt", func() bool { return strings.Contains(out.String(), "Password:") })
			if _, err := ctl.Write([]byte(strings.TrimSpace(s.password(t)) + "\n")); err != nil {
				t.Fatal(err)
			}
		}
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), code
	}
	if out, code := login("n"); code != 2 || !strings.Contains(out, s.fingerprint) {
		t.Fatalf("login answered no: exit %d: %s", code, out)
	}
	if _, err := os.Stat(filepath.Join(conf, "npanel", "servers.json")); err == nil {
		t.Fatal("a declined login saved a pin")
	}
	if out, code := login("y"); code != 0 || !strings.Contains(out, "Logged in") {
		t.Fatalf("login answered yes: exit %d: %s", code, out)
	}
	env := []string{"XDG_CONFIG_HOME=" + conf, "NPANEL_SERVER=https://" + s.api, "NPANEL_TOKEN=", "NPANEL_CA_FINGERPRINT="}
	if out, code := run(t, env, "", "ctl", "whoami"); code != 0 || !strings.Contains(out, "admin") {
		t.Fatalf("whoami with the confirmed pin: exit %d: %s", code, out)
	}
}

// --api-cert/--api-key whose key is not the certificate's: the server does
// not start, and says why without showing the key.
func TestServerAPICertKeyMismatch(t *testing.T) {
	a, err := etcdtls.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcdtls.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out, code := run(t, nil, "", "server", "--data-dir", t.TempDir(), "--api-listen", testenv.FreeAddr(t),
		"--agent-listen", testenv.FreeAddr(t), "--gossip-listen", "127.0.0.1:0", "--api-cert", a.ServerCert, "--api-key", b.ServerKey)
	if code == 0 || !strings.Contains(out, "private key does not match") || strings.Contains(out, "PRIVATE KEY") {
		t.Fatalf("server with a mismatched --api-key: exit %d: %s", code, out)
	}
	if out, code := run(t, nil, "", "server", "--data-dir", t.TempDir(), "--api-cert", a.ServerCert); code != 2 || !strings.Contains(out, "--api-key") {
		t.Fatalf("--api-cert without --api-key: exit %d: %s", code, out)
	}
}

// --api-cert/--api-key are read again on SIGHUP: the next handshake has the
// new certificate.
func TestServerAPICertReloadOnSIGHUP(t *testing.T) {
	a, err := etcdtls.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcdtls.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "api.pem"), filepath.Join(dir, "api-key.pem")
	install := func(f etcdtls.Files) {
		t.Helper()
		for from, to := range map[string]string{f.ServerCert: certFile, f.ServerKey: keyFile} {
			data, err := os.ReadFile(from)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(to, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	install(a)
	api := testenv.FreeAddr(t)
	p := start(t, nil, "server", "--data-dir", t.TempDir(), "--api-listen", api, "--api-cert", certFile, "--api-key", keyFile,
		"--agent-listen", testenv.FreeAddr(t), "--gossip-listen", "127.0.0.1:0")
	testenv.WaitFor(t, 60*time.Second, "the files' certificate", func() bool {
		c, err := tls.Dial("tcp", api, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	if got, want := pki.Fingerprint(servedLeaf(t, api)), fingerprintPEM(t, a.ServerCert); got != want {
		t.Fatalf("served certificate %s, want the files' %s", got, want)
	}
	install(b)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// (Served by the same process: SIGHUP's default would have ended it.)
	testenv.WaitFor(t, 5*time.Second, "the new certificate after SIGHUP", func() bool {
		return pki.Fingerprint(servedLeaf(t, api)) == fingerprintPEM(t, b.ServerCert)
	})
}

func servedLeaf(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

func fingerprintPEM(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return pki.Fingerprint(certs[0])
}
