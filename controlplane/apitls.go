package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/npanel/npanel/pki"
)

// The API serves HTTPS unless Config.APIInsecureHTTP. Its certificate comes
// from one source:
//
//   - by default the cluster's own CA, issued at start for the hosts the API
//     is reached by and re-issued at two thirds of its lifetime, like the
//     gateway's. Clients pin the CA's root fingerprint (`npanel ctl login`)
//     as agents do through their join token; the chain served ends in the
//     root for that reason.
//   - ACME for Config.APIDomain (apiacme.go).
//   - Config.APICertFile and APIKeyFile, read again when either file changes
//     (checked every apiCertPoll) or on ReloadAPICertificate (SIGHUP). A
//     file that does not load keeps the certificate in service: a renewal
//     tool that writes the two files one after the other must not take the
//     API down in between.
//
// Every source stores into apiTLS.cert, which GetCertificate reads on each
// handshake, so a new certificate needs no restart.
type apiTLS struct {
	cert atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // serialises reloads of the files
	stamp [2]fileStamp

	acme *apiACME // nil unless APIDomain
}

// apiCertPoll is how often the certificate files are checked for a change.
var apiCertPoll = 10 * time.Second

type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}
}

// APIURL is the API's base URL on its bound address: https:// unless the
// API serves plain HTTP.
func (s *Server) APIURL() string {
	if s.cfg.APIInsecureHTTP {
		return "http://" + s.APIAddr()
	}
	return "https://" + s.APIAddr()
}

// setupAPITLS obtains the API's first certificate, before the listener
// serves. It returns the listener's TLS config, nil for plain HTTP.
func (s *Server) setupAPITLS() (*tls.Config, error) {
	if s.cfg.APIInsecureHTTP {
		if !loopbackListen(s.cfg.APIListen) {
			s.log.Warn("the API serves plain HTTP on a non-loopback address (--api-insecure-http): passwords and tokens cross the network in the clear; use it only behind a TLS-terminating proxy", "listen", s.cfg.APIListen)
		}
		return nil, nil
	}
	switch {
	case s.cfg.APICertFile != "":
		if err := s.loadAPICertFiles(); err != nil {
			return nil, err
		}
		leaf := s.apiTLS.cert.Load().Leaf
		s.log.Info("the API serves HTTPS with the certificate from --api-cert", "path", s.cfg.APICertFile,
			"subject", leaf.Subject.String(), "names", leaf.DNSNames, "not_after", leaf.NotAfter.UTC())
		if time.Now().After(leaf.NotAfter) {
			s.log.Warn("the API's certificate from --api-cert has expired; clients will refuse it", "not_after", leaf.NotAfter.UTC())
		}
	case s.cfg.APIDomain != "":
		if s.cfg.ACME.DirectoryURL == "" {
			return nil, errors.New("--api-domain needs an ACME server (--acme-directory is off)")
		}
		if err := s.setupAPIACME(); err != nil {
			return nil, err
		}
	default:
		if err := s.issueAPICert(); err != nil {
			return nil, err
		}
	}
	protos := []string{"h2", "http/1.1"}
	if s.apiTLS.acme != nil {
		protos = append(protos, acmeTLSALPNProto)
	}
	// Prometheus may present a node's certificate instead of a scrape
	// token (scrapeAuth). It is requested, never required, and checked by
	// that handler only: a browser's or another CA's certificate does not
	// fail the handshake, and naming the cluster CA keeps browsers from
	// offering unrelated certificates.
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(s.ca.Root())
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequestClientCert,
		ClientCAs:  clientCAs,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if a := s.apiTLS.acme; a != nil {
				if cert, ok := a.challengeCert(hello); ok {
					return cert, nil
				}
			}
			cert := s.apiTLS.cert.Load()
			if cert == nil {
				return nil, errors.New("the API has no certificate yet")
			}
			return cert, nil
		},
		NextProtos: protos,
	}, nil
}

// announceAPI logs how the API is reached and, for the cluster CA's
// certificate, the root fingerprint clients pin; the first start of a
// replica also writes that to Config.Notice for the operator.
func (s *Server) announceAPI(firstStart bool) {
	if s.cfg.APIInsecureHTTP || s.cfg.APICertFile != "" || s.cfg.APIDomain != "" {
		return
	}
	fp := s.ca.RootFingerprint()
	login := fmt.Sprintf("npanel ctl --server %s login --ca-fingerprint %s", s.apiPublicURL(), fp)
	s.log.Info("the API serves HTTPS with a certificate from the cluster CA; clients pin its root", "ca_fingerprint", fp, "login", login)
	if !firstStart {
		return
	}
	w := s.cfg.Notice
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "\nThe API serves HTTPS with a certificate from this cluster's own CA.\n"+
		"Its root's SHA-256 fingerprint:\n\n  %s\n\nLog in pinning it:\n\n  %s\n\n", fp, login)
}

// apiPublicURL is the API's URL as an operator reaches it: the listen
// address, or for a wildcard listener the advertised host on the API's port.
func (s *Server) apiPublicURL() string {
	host, port, err := net.SplitHostPort(s.APIAddr())
	if err != nil {
		return s.APIURL()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, _, err := net.SplitHostPort(s.cfg.Advertise); err == nil && h != "" {
			host = h
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	return "https://" + net.JoinHostPort(host, port)
}

// apiCertHosts are the names and addresses the cluster CA's certificate for
// the API is issued for: the listen host (loopback for a wildcard
// listener), the advertised host, this machine's host name and localhost.
func (s *Server) apiCertHosts() []string {
	seen := map[string]bool{}
	var hosts []string
	add := func(h string) {
		if h == "" || seen[h] {
			return
		}
		if err := pki.CheckHost(h); err != nil {
			s.log.Warn("the API's certificate leaves out a host it cannot name", "host", h, "err", err)
			return
		}
		seen[h] = true
		hosts = append(hosts, h)
	}
	add("localhost")
	for _, a := range []string{s.APIAddr(), s.cfg.Advertise} {
		h, _, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsUnspecified() {
			add("127.0.0.1")
			add("::1")
			continue
		}
		add(h)
	}
	if h, err := os.Hostname(); err == nil {
		add(h)
	}
	return hosts
}

// issueAPICert issues the API's certificate from the cluster CA.
func (s *Server) issueAPICert() error {
	cert, err := s.ca.IssueServerCertificate(s.id, s.apiCertHosts())
	if err != nil {
		return fmt.Errorf("issue the API's certificate: %w", err)
	}
	s.apiTLS.cert.Store(&cert)
	return nil
}

// loadAPICertFiles reads --api-cert and --api-key. A key that does not
// belong to the certificate is an error, and the certificate in service (if
// any) stays.
func (s *Server) loadAPICertFiles() error {
	s.apiTLS.mu.Lock()
	defer s.apiTLS.mu.Unlock()
	stamp := [2]fileStamp{stampOf(s.cfg.APICertFile), stampOf(s.cfg.APIKeyFile)}
	cert, err := tls.LoadX509KeyPair(s.cfg.APICertFile, s.cfg.APIKeyFile)
	if err != nil {
		// LoadX509KeyPair names the files' problem (no PEM, no key, a key
		// that does not match), never their contents.
		return fmt.Errorf("--api-cert %s / --api-key %s: %w", s.cfg.APICertFile, s.cfg.APIKeyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("--api-cert %s: %w", s.cfg.APICertFile, err)
		}
	}
	s.apiTLS.cert.Store(&cert)
	s.apiTLS.stamp = stamp
	return nil
}

// ReloadAPICertificate reads the API's certificate files again (the server
// command calls it on SIGHUP). It does nothing unless the API's
// certificate comes from files.
func (s *Server) ReloadAPICertificate() error {
	if s.cfg.APICertFile == "" || s.cfg.APIInsecureHTTP {
		return nil
	}
	if err := s.loadAPICertFiles(); err != nil {
		s.log.Error("reload the API's certificate; the previous one stays in service", "err", err)
		return err
	}
	leaf := s.apiTLS.cert.Load().Leaf
	s.log.Info("reloaded the API's certificate", "path", s.cfg.APICertFile, "not_after", leaf.NotAfter.UTC())
	return nil
}

// runAPICertRenewal keeps the API's certificate current until ctx ends.
func (s *Server) runAPICertRenewal(ctx context.Context) {
	switch {
	case s.cfg.APIInsecureHTTP:
	case s.cfg.APIDomain != "":
		s.apiTLS.acme.run(ctx)
	case s.cfg.APICertFile != "":
		t := time.NewTicker(apiCertPoll)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			s.apiTLS.mu.Lock()
			changed := s.apiTLS.stamp != [2]fileStamp{stampOf(s.cfg.APICertFile), stampOf(s.cfg.APIKeyFile)}
			s.apiTLS.mu.Unlock()
			if changed {
				_ = s.ReloadAPICertificate()
			}
		}
	default:
		s.rotateCert(ctx, "API", &s.apiTLS.cert, s.issueAPICert)
	}
}

// loopbackListen reports whether addr listens on loopback only.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
