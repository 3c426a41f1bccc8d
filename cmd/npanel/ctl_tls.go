package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/pki"
)

// How ctl trusts an https API. A server whose certificate the cluster's own
// CA issued (the default) is trusted by pinning that CA's root: `ctl login`
// stores the root's SHA-256 fingerprint for the server URL (given with
// --ca-fingerprint, or shown and confirmed on a terminal), and every later
// call accepts only a chain that verifies to a presented root with exactly
// that fingerprint. A server with a certificate from a public CA is logged
// in with --system-roots instead. A call to a pinned server never falls
// back to anything else: a mismatch is exitTrust.

// exitTrust is the exit status when the server's certificate is not the
// one trusted for it (a pin mismatch, an unknown CA).
const exitTrust = 3

// serverTrust is what login saved about one server's certificate.
type serverTrust struct {
	// CAFingerprint is the pinned root's SHA-256 fingerprint (hex).
	CAFingerprint string `json:"ca_fingerprint,omitempty"`
	// SystemRoots: the server's certificate verifies to the system roots.
	SystemRoots bool `json:"system_roots,omitempty"`
}

// trustPath is where login keeps the pins, one per server URL, beside the
// saved tokens.
func trustPath() (string, error) {
	p, err := credentialsPath()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(p), "servers.json"), nil
}

// serverKey is the key of --server in the saved pins and tokens: the URL
// with scheme and host lower-cased, the scheme's default port dropped and
// no trailing slash, so that https://cp:8080/ and HTTPS://CP:8080 are one
// server. Keyed by the raw string, a spelling login did not use would find
// no pin and fall back to the system roots without a word. A string that
// does not parse as a URL with a host is its own key (serverURL refuses
// it before any call).
func serverKey(server string) string {
	u, err := url.Parse(strings.TrimSpace(server))
	if err != nil || u.Host == "" {
		return server
	}
	scheme := strings.ToLower(u.Scheme)
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	switch {
	case port != "":
		host = net.JoinHostPort(host, port)
	case strings.Contains(host, ":"):
		host = "[" + host + "]" // an IPv6 literal
	}
	return scheme + "://" + host + strings.TrimRight(u.Path, "/")
}

// normalizeKeys re-keys a map of saved servers by serverKey. Entries saved
// under spellings that now meet and disagree are dropped both: which one
// login meant cannot be told, and a missing pin refuses rather than
// guesses.
func normalizeKeys[V comparable](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	clash := map[string]bool{}
	for k, v := range m {
		n := serverKey(k)
		if old, ok := out[n]; ok && old != v {
			clash[n] = true
		}
		out[n] = v
	}
	for n := range clash {
		delete(out, n)
	}
	return out
}

// loadTrust reads the saved pins, keyed by serverKey.
func loadTrust() map[string]serverTrust {
	m := map[string]serverTrust{}
	p, err := trustPath()
	if err != nil {
		return m
	}
	if b, err := os.ReadFile(p); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	return normalizeKeys(m)
}

// savedTrust is what login saved about server, however it is spelled.
func savedTrust(server string) (serverTrust, bool) {
	tr, ok := loadTrust()[serverKey(server)]
	return tr, ok
}

func saveTrust(server string, tr serverTrust) error {
	p, err := trustPath()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	m := loadTrust()
	m[serverKey(server)] = tr
	b, _ := json.MarshalIndent(m, "", "  ")
	return atomicfile.WriteFile(p, b, 0o600, nil)
}

// serverURL parses --server.
func (o *ctlOptions) serverURL() (*url.URL, error) {
	u, err := url.Parse(o.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, cmdline.Usagef("--server %q: want a URL such as https://cp1.example.net:8080", o.server)
	}
	return u, nil
}

// flagFingerprint is --ca-fingerprint, checked.
func (o *ctlOptions) flagFingerprint() (string, error) {
	if o.caFingerprint == "" {
		return "", nil
	}
	fp := pki.NormalizeFingerprint(o.caFingerprint)
	if !pki.ValidFingerprint(fp) {
		return "", cmdline.Usagef("--ca-fingerprint %q: want the 64 hex digits of the CA root's SHA-256 fingerprint", o.caFingerprint)
	}
	return fp, nil
}

// clientOptions are the TLS options of a call with a token to --server:
// its pin (--ca-fingerprint, else the one login saved), or the system
// roots when login saved --system-roots for it. An https server with
// neither is refused (exitTrust): a token must not go to a server whose
// certificate nobody decided to trust, and the system roots would trust
// any public CA's certificate for its name.
func (o *ctlOptions) clientOptions() ([]client.Option, error) {
	u, err := o.serverURL()
	if err != nil {
		return nil, err
	}
	if u.Scheme != "https" {
		return nil, nil
	}
	fp, err := o.flagFingerprint()
	if err != nil {
		return nil, err
	}
	if fp == "" {
		tr, _ := savedTrust(o.server)
		if tr.SystemRoots {
			return nil, nil
		}
		fp = tr.CAFingerprint
	}
	if fp == "" {
		return nil, &exitError{code: exitTrust, msg: fmt.Sprintf("no CA is pinned for %s, nor are the system roots trusted for it: log in again to pin (npanel ctl login --server %s --ca-fingerprint FINGERPRINT, or --system-roots when a public CA issued its certificate)", o.server, serverKey(o.server))}
	}
	return []client.Option{client.WithTLS(pki.PinnedTLSConfig(u.Hostname(), fp))}, nil
}

// loginTrust decides how login trusts an https server, asking on a
// terminal when nothing says.
func (o *ctlOptions) loginTrust(cmd *cobra.Command, ctx context.Context, systemRoots bool) (serverTrust, error) {
	u, err := o.serverURL()
	if err != nil {
		return serverTrust{}, err
	}
	fp, err := o.flagFingerprint()
	if err != nil {
		return serverTrust{}, err
	}
	if u.Scheme != "https" {
		if fp != "" || systemRoots {
			return serverTrust{}, cmdline.Usagef("--ca-fingerprint and --system-roots apply to an https:// server, and --server is %s", o.server)
		}
		return serverTrust{}, nil
	}
	switch {
	case systemRoots && fp != "":
		return serverTrust{}, cmdline.Usagef("--ca-fingerprint and --system-roots exclude each other")
	case systemRoots:
		return serverTrust{SystemRoots: true}, nil
	case fp != "":
		return serverTrust{CAFingerprint: fp}, nil
	}
	// A server logged in to before keeps its pin: a changed certificate
	// must fail, not be offered for confirmation again.
	if saved, _ := savedTrust(o.server); saved.CAFingerprint != "" {
		return serverTrust{CAFingerprint: saved.CAFingerprint}, nil
	}
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !isTerminal(f) {
		return serverTrust{}, cmdline.Usagef("%s serves HTTPS with a certificate of its own CA: pass --ca-fingerprint with the fingerprint the server printed at its first start (its log says it at every start: ca_fingerprint), or --system-roots when a public CA issued its certificate", o.server)
	}
	chain, err := fetchChain(ctx, u)
	if err != nil {
		return serverTrust{}, err
	}
	root := chain[len(chain)-1]
	if len(chain) < 2 || !root.IsCA || !bytes.Equal(root.RawIssuer, root.RawSubject) {
		return serverTrust{}, fmt.Errorf("%s sends no root CA certificate to pin (its chain ends in %q): use --system-roots if a public CA issued its certificate", o.server, root.Subject.String())
	}
	fp = pki.Fingerprint(root)
	if _, err := pki.VerifyPinnedChain(chain, u.Hostname(), fp); err != nil {
		return serverTrust{}, fmt.Errorf("%s: its certificate does not verify to the root it sends: %w", o.server, err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s presents a certificate issued by the CA\n  %s\nwhose root has the SHA-256 fingerprint\n  %s\n"+
		"Compare it with the fingerprint the server printed at its first start.\n", o.server, root.Subject.String(), fp)
	if err := confirm(cmd, false, "Trust this CA for "+o.server); err != nil {
		return serverTrust{}, err
	}
	return serverTrust{CAFingerprint: fp}, nil
}

// fetchChain is the certificate chain the server at u presents, taken from
// a TLS handshake that sends nothing else: it is only shown to the user to
// confirm, and nothing is trusted until they do.
func fetchChain(ctx context.Context, u *url.URL) ([]*x509.Certificate, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := tls.Dialer{
		NetDialer: &net.Dialer{Timeout: 10 * time.Second},
		// Verified by the user against the fingerprint the server printed,
		// then on every connection against the pin.
		Config: &tls.Config{ServerName: u.Hostname(), InsecureSkipVerify: true, MinVersion: tls.VersionTLS12},
	}
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Errorf("fetch the certificate of %s: %w", u.Redacted(), err)
	}
	defer c.Close()
	chain := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s presented no certificate", u.Redacted())
	}
	return chain, nil
}

// trustError explains a TLS failure of a call to the API, or returns nil
// when err is none.
func trustError(err error) error {
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.Is(err, pki.ErrPinMismatch):
		return &exitError{code: exitTrust, msg: fmt.Sprintf("%v\nthe server's certificate does not chain to the CA pinned for it at login: refusing to talk to it. If the cluster's CA was replaced on purpose, log in again with the new --ca-fingerprint", err)}
	case errors.As(err, &unknown):
		return &exitError{code: exitTrust, msg: fmt.Sprintf("%v\nthe server's certificate is not from a CA this machine trusts: run \"npanel ctl login\" to pin the cluster's CA (--ca-fingerprint)", err)}
	case errors.As(err, &hostErr):
		return &exitError{code: exitTrust, msg: fmt.Sprintf("%v\nthe server's certificate is not valid for the name in --server", err)}
	}
	return nil
}

// plainToHTTPS adds the way out to the error of a plain-HTTP call that
// reached an HTTPS API (the default --server is the dev cluster's http URL).
func plainToHTTPS(err error) error {
	if err != nil && strings.Contains(err.Error(), "HTTP request to an HTTPS server") {
		return fmt.Errorf("%w\nthe server serves HTTPS: give --server https://HOST:PORT ($NPANEL_SERVER)", err)
	}
	return err
}

// exitError is an error with its own exit status.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }
