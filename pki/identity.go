package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Identities are SPIFFE-style URIs in the certificate's URI SAN. The URI, not
// the common name, is what the control plane authorizes on: a CN is free text
// to most TLS stacks, while a URI SAN is only ever set by our CA from a verified
// token.
const (
	spiffeScheme   = "spiffe"
	spiffeDomain   = "npanel"
	nodePathPrefix = "/node/"
	servPathPrefix = "/server/"

	// MaxNodeNameLen is the longest node name: one DNS label, so a node name can
	// always be used as a hostname.
	MaxNodeNameLen = 63
)

// ErrInvalidName is wrapped by the errors of ValidNodeName and of the server
// ID checks, so that API layers can answer "invalid input" without string
// matching.
var ErrInvalidName = errors.New("invalid name")

// ValidNodeName reports whether name can identify a node: 1 to 63 characters
// following the rules of a lowercase DNS label (a-z, 0-9 and '-', not starting
// or ending with '-').
func ValidNodeName(name string) error {
	return validLabel("node name", name)
}

// ValidServerID applies the node-name rules to server replica IDs: the ID ends
// up in a URI path and in log lines, and one rule for both is easier to
// explain than two.
func ValidServerID(id string) error {
	return validLabel("server id", id)
}

func validLabel(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty: %w", kind, ErrInvalidName)
	case len(s) > MaxNodeNameLen:
		return fmt.Errorf("%s %.20q... is %d characters long, the maximum is %d: %w", kind, s, len(s), MaxNodeNameLen, ErrInvalidName)
	case s[0] == '-':
		return fmt.Errorf("%s %q must not start with '-': %w", kind, s, ErrInvalidName)
	case s[len(s)-1] == '-':
		return fmt.Errorf("%s %q must not end with '-': %w", kind, s, ErrInvalidName)
	}
	for i, r := range s {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' {
			continue
		}
		if r >= 'A' && r <= 'Z' {
			return fmt.Errorf("%s %q contains uppercase %q at offset %d, only lowercase letters are allowed: %w", kind, s, r, i, ErrInvalidName)
		}
		return fmt.Errorf("%s %q contains %q at offset %d, only a-z, 0-9 and '-' are allowed: %w", kind, s, r, i, ErrInvalidName)
	}
	return nil
}

// NodeURI is the identity of a node: spiffe://npanel/node/<name>. It does not
// validate name; callers that accept names from outside use ValidNodeName.
func NodeURI(node string) *url.URL {
	return &url.URL{Scheme: spiffeScheme, Host: spiffeDomain, Path: nodePathPrefix + node}
}

// ServerURI is the identity of a control-plane replica: spiffe://npanel/server/<id>.
func ServerURI(id string) *url.URL {
	return &url.URL{Scheme: spiffeScheme, Host: spiffeDomain, Path: servPathPrefix + id}
}

// NodeName returns the node a certificate identifies. The certificate must
// carry exactly one URI SAN, a node URI with a valid name: with several URIs a
// consumer could pick a different one than we did.
func NodeName(cert *x509.Certificate) (string, error) {
	return identityFromCert(cert, nodePathPrefix, "node", ValidNodeName)
}

// ServerID returns the control-plane replica a certificate identifies, under
// the same rules as NodeName.
func ServerID(cert *x509.Certificate) (string, error) {
	return identityFromCert(cert, servPathPrefix, "server", ValidServerID)
}

func identityFromCert(cert *x509.Certificate, prefix, kind string, valid func(string) error) (string, error) {
	if cert == nil {
		return "", errors.New("no certificate")
	}
	if n := len(cert.URIs); n != 1 {
		return "", fmt.Errorf("certificate %s has %d URI SANs, want exactly one %s identity", SerialHex(cert), n, kind)
	}
	name, err := identityFromURI(cert.URIs[0], prefix, valid)
	if err != nil {
		return "", fmt.Errorf("certificate %s: %w", SerialHex(cert), err)
	}
	return name, nil
}

// identityFromURI accepts only the exact shape NodeURI/ServerURI produce, so
// that two different URIs can never map to the same identity (no userinfo,
// port, query, fragment, escaping or trailing segments).
func identityFromURI(u *url.URL, prefix string, valid func(string) error) (string, error) {
	if u.Scheme != spiffeScheme || u.Host != spiffeDomain || u.User != nil || u.Opaque != "" ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawPath != "" ||
		!strings.HasPrefix(u.Path, prefix) {
		return "", fmt.Errorf("URI %q is not of the form %s://%s%s<name>", u.Redacted(), spiffeScheme, spiffeDomain, prefix)
	}
	name := strings.TrimPrefix(u.Path, prefix)
	if err := valid(name); err != nil {
		return "", fmt.Errorf("URI %q: %w", u.Redacted(), err)
	}
	return name, nil
}

// SerialHex is a certificate's serial number in hex, for errors and logs.
func SerialHex(cert *x509.Certificate) string {
	if cert.SerialNumber == nil {
		return "<no serial>"
	}
	return cert.SerialNumber.Text(16)
}

// NormalizeHost accepts an IP address or a DNS name, without port, and
// returns its canonical form: the names a server certificate carries.
func NormalizeHost(h string) (string, error) {
	if ip := net.ParseIP(h); ip != nil {
		return ip.String(), nil
	}
	name := strings.ToLower(h)
	if name == "" || len(name) > 253 {
		return "", fmt.Errorf("host %q is not an IP address or a DNS name of 1 to 253 characters", h)
	}
	for _, label := range strings.Split(name, ".") {
		if err := validLabel("host label", label); err != nil {
			return "", fmt.Errorf("host %q is not an IP address or a DNS name (no ports): %w", h, err)
		}
	}
	return name, nil
}

// MaxNodeHosts bounds the addresses and names a node certificate carries
// besides its URI: the node's address, and a name if it has one, with
// room for a second family.
const MaxNodeHosts = 8

// NodeHosts normalizes the hosts (IP addresses and DNS names) a node
// certificate names besides its URI, so that Prometheus and other TLS
// clients can verify the node by the address they dial. The result is
// sorted and without repeats: the join token, the request and the CA
// compare these lists as written.
func NodeHosts(hosts []string) ([]string, error) {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		n, err := NormalizeHost(h)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxNodeHosts {
		return nil, fmt.Errorf("%d hosts, a node certificate names at most %d", len(out), MaxNodeHosts)
	}
	return out, nil
}

// SplitHosts sorts normalized hosts into the certificate fields they go in.
func SplitHosts(hosts []string) (ips []net.IP, names []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, h)
		}
	}
	return ips, names
}

// HostsOf is the inverse of SplitHosts for what a certificate or request
// carries, normalized and sorted like NodeHosts.
func HostsOf(ips []net.IP, names []string) []string {
	out := make([]string, 0, len(ips)+len(names))
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	for _, n := range names {
		out = append(out, strings.ToLower(n))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CheckHost reports whether h is a name the CA puts in a server
// certificate: an IP address or a DNS name, without port.
func CheckHost(h string) error {
	_, err := NormalizeHost(h)
	return err
}
