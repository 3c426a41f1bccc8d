package web

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Limits on what one account's spec may hold. They bound the work and the
// file sizes an account can cause; plans set lower limits upstream.
const (
	MaxSites          = 1000
	MaxAliases        = 32
	MaxDocrootLen     = 255
	MaxDocrootDepth   = 8
	MaxRedirectURLLen = 1024
	MaxChildren       = 200
	MaxMemoryLimitMB  = 16384
	// MaxHSTSMaxAge is two years, the longest max-age HSTS preload
	// lists ask for.
	MaxHSTSMaxAge = 2 * 365 * 24 * 60 * 60

	// DefaultMaxChildren and DefaultMemoryLimitMB size a pool whose plan
	// says 0.
	DefaultMaxChildren   = 5
	DefaultMemoryLimitMB = 256
)

// ValidateSpec checks an account's web spec without any I/O: every name is
// a canonical domain (validate.Domain), no server name appears twice,
// docroots are clean relative paths of plain characters, PHP versions look
// like "8.2", redirects are absolute http(s) URLs with a 301/302/307/308
// code. Whether a PHP version is installed and whether a docroot really
// stays inside the home are checked by Ensure, which may look at the node.
//
// Everything that passes is safe to splice into nginx and PHP-FPM
// configuration unquoted: no whitespace, quotes, ';', '{', '}', '$', '#' or
// control characters can survive it.
func ValidateSpec(username string, spec *agentpb.WebSpec) error {
	if err := checkUsername(username); err != nil {
		return err
	}
	if spec == nil {
		return nil
	}
	sites := spec.GetSites()
	if len(sites) > MaxSites {
		return fmt.Errorf("web: %d sites; at most %d per account", len(sites), MaxSites)
	}
	seen := make(map[string]int) // server name -> index of its site
	claim := func(name string, i int) error {
		if prev, ok := seen[name]; ok {
			if prev == i {
				return fmt.Errorf("web: site %s lists %s twice", sites[i].GetDomain(), name)
			}
			return fmt.Errorf("web: %s is a server name of both site %d (%s) and site %d (%s)", name, prev+1, sites[prev].GetDomain(), i+1, sites[i].GetDomain())
		}
		seen[name] = i
		return nil
	}
	for i, s := range sites {
		if s == nil {
			return fmt.Errorf("web: site %d is empty", i)
		}
		if err := canonicalDomain("domain", s.GetDomain()); err != nil {
			return err
		}
		d := s.GetDomain()
		if err := claim(d, i); err != nil {
			return err
		}
		if len(s.GetAliases()) > MaxAliases {
			return fmt.Errorf("web: site %s has %d aliases; at most %d", d, len(s.GetAliases()), MaxAliases)
		}
		for _, a := range s.GetAliases() {
			if err := canonicalDomain("alias of "+d, a); err != nil {
				return err
			}
			if err := claim(a, i); err != nil {
				return err
			}
		}
		if err := checkSite(s); err != nil {
			return fmt.Errorf("web: site %s: %w", d, err)
		}
	}
	if pt := spec.GetProxyTo(); pt != "" {
		if _, err := proxyTarget(pt); err != nil {
			return err
		}
	}
	if pt := spec.GetProxyToHttps(); pt != "" {
		if spec.GetProxyTo() == "" {
			return errors.New("web: proxy_to_https is set but proxy_to is empty")
		}
		if _, err := proxyTarget(pt); err != nil {
			return fmt.Errorf("%w (proxy_to_https)", err)
		}
	}
	if php := spec.GetPhp(); php != nil {
		if php.GetMaxChildren() > MaxChildren {
			return fmt.Errorf("web: php max_children %d exceeds %d", php.GetMaxChildren(), MaxChildren)
		}
		if php.GetMemoryLimitMb() > MaxMemoryLimitMB {
			return fmt.Errorf("web: php memory_limit_mb %d exceeds %d", php.GetMemoryLimitMb(), MaxMemoryLimitMB)
		}
	}
	return nil
}

// checkUsername accepts the alphabet of validate.Username and
// validate.TestUsername. Which of the two an agent admits is the account
// action's policy; here the name only has to be safe in file names, pool
// names and configuration.
func checkUsername(name string) error {
	if validate.Username(name) == nil || validate.TestUsername(name) == nil {
		return nil
	}
	return validate.Username(name)
}

// canonicalDomain requires the canonical spelling, because file names are
// derived from it: two spellings of one name must not become two files.
func canonicalDomain(what, s string) error {
	if err := validate.CanonicalDomain(s); err != nil {
		return fmt.Errorf("web: %s: %w", what, err)
	}
	return nil
}

func checkSite(s *agentpb.Site) error {
	redirect := s.GetRedirectTo() != ""
	if !redirect || s.GetDocroot() != "" {
		if err := checkDocroot(s.GetDocroot()); err != nil {
			return err
		}
	}
	if v := s.GetPhpVersion(); v != "" {
		if err := validate.PHPVersion(v); err != nil {
			return fmt.Errorf("php_version: %w", err)
		}
	}
	switch {
	case redirect:
		if _, err := redirectTarget(s.GetRedirectTo()); err != nil {
			return err
		}
		switch s.GetRedirectCode() {
		case 0, 301, 302, 307, 308:
		default:
			return fmt.Errorf("redirect_code %d: want 301, 302, 307 or 308", s.GetRedirectCode())
		}
	case s.GetRedirectCode() != 0:
		return errors.New("redirect_code is set but redirect_to is empty")
	}
	if s.GetHstsMaxAge() > MaxHSTSMaxAge {
		return fmt.Errorf("hsts_max_age %d: at most %d (two years)", s.GetHstsMaxAge(), MaxHSTSMaxAge)
	}
	return nil
}

// checkDocroot accepts a clean relative path of at most MaxDocrootDepth
// components, each of letters, digits, '.', '_' and '-' and not starting
// with '.': no "..", no hidden directories (nginx denies dotfiles anyway),
// nothing nginx or a shell would read specially.
func checkDocroot(d string) error {
	if d == "" {
		return errors.New("docroot: must not be empty (e.g. public_html)")
	}
	if len(d) > MaxDocrootLen {
		return fmt.Errorf("docroot: %d bytes long; at most %d", len(d), MaxDocrootLen)
	}
	if d[0] == '/' {
		return fmt.Errorf("docroot %q: must be relative to the home directory, like public_html", d)
	}
	parts := strings.Split(d, "/")
	if len(parts) > MaxDocrootDepth {
		return fmt.Errorf("docroot %q: %d levels deep; at most %d", d, len(parts), MaxDocrootDepth)
	}
	for _, p := range parts {
		switch {
		case p == "":
			return fmt.Errorf("docroot %q: empty path component (a doubled or trailing '/')", d)
		case p == "." || p == "..":
			return fmt.Errorf("docroot %q: %q components are not allowed; it must stay inside the home", d, p)
		case p[0] == '.':
			return fmt.Errorf("docroot %q: component %q is hidden (starts with '.')", d, p)
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fmt.Errorf("docroot %q: character %q is not allowed (letters, digits, '.', '_', '-')", d, c)
			}
		}
	}
	return nil
}

// redirectTarget checks an absolute http(s) URL without query or fragment
// (the request path and query are appended) and returns it without a
// trailing slash, ready to be followed by $request_uri.
func redirectTarget(raw string) (string, error) {
	if len(raw) > MaxRedirectURLLen {
		return "", fmt.Errorf("redirect_to: %d bytes long; at most %d", len(raw), MaxRedirectURLLen)
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !urlByte(c) {
			return "", fmt.Errorf("redirect_to %q: character %q is not allowed; percent-encode it", raw, c)
		}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("redirect_to %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("redirect_to %q: must be an absolute http:// or https:// URL", raw)
	}
	if u.User != nil {
		return "", fmt.Errorf("redirect_to %q: must not carry user information", raw)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(raw, "?#") {
		return "", fmt.Errorf("redirect_to %q: must not have a query or fragment; the request's path and query are appended", raw)
	}
	host := u.Hostname()
	if _, err := validate.Domain(host); err != nil {
		return "", fmt.Errorf("redirect_to %q: host: %w", raw, err)
	}
	if p := u.Port(); p != "" {
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return "", fmt.Errorf("redirect_to %q: bad port", raw)
			}
		}
		if len(p) > 5 {
			return "", fmt.Errorf("redirect_to %q: bad port", raw)
		}
	}
	return strings.TrimRight(raw, "/"), nil
}

// urlByte admits the RFC 3986 characters that mean nothing to nginx inside a
// double-quoted string: no '$' (variables), '"', '\\', ';', '{', '}',
// whitespace or controls.
func urlByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~:/?#[]@!&'()*+,=%", c) >= 0
}
