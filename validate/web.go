package validate

import (
	"net/url"
	"strings"
)

// MaxDocrootLen bounds a document root; with the home it must fit PATH_MAX.
const MaxDocrootLen = 255

// Docroot accepts a document root relative to an account's home:
// slash-separated segments of letters, digits and ._- (no empty, "." or
// ".." segment, no leading or trailing slash). Whether it stays inside the
// home on disk (symlinks) is for the agent to check through os.Root; this
// only keeps the value plain enough to sit in a config file unquoted.
func Docroot(s string) error {
	if s == "" {
		return fail("docroot", "must not be empty")
	}
	if len(s) > MaxDocrootLen {
		return fail("docroot", "must be at most %d characters", MaxDocrootLen)
	}
	for _, seg := range strings.Split(s, "/") {
		switch seg {
		case "":
			return fail("docroot", "%s must be a relative path without empty segments (no leading, trailing or double slash)", quote(s))
		case ".", "..":
			return fail("docroot", "%s must not contain . or .. segments", quote(s))
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return fail("docroot", "%s may contain only letters, digits, '.', '_', '-' and '/'", quote(s))
			}
		}
	}
	return nil
}

// MaxRedirectLen bounds a redirect target.
const MaxRedirectLen = 2048

// RedirectTarget accepts an absolute http or https URL without credentials
// and without characters that would need quoting in an nginx config
// (whitespace, quotes, braces, ';', '$', '\'); the request path is appended
// by the server.
func RedirectTarget(s string) error {
	if s == "" {
		return fail("to", "must not be empty")
	}
	if len(s) > MaxRedirectLen {
		return fail("to", "must be at most %d characters", MaxRedirectLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"'`{};$\\<>|^", c) >= 0 {
			return fail("to", "%s contains a character not allowed in a redirect target; percent-encode it", quote(s))
		}
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fail("to", "%s is not an absolute http:// or https:// URL", quote(s))
	}
	if u.User != nil {
		return fail("to", "%s must not carry credentials", quote(s))
	}
	host := u.Hostname()
	if _, err := Domain(host); err != nil && !isIPLiteral(host) {
		return fail("to", "%s: host %s is not a valid domain or IP address", quote(s), quote(host))
	}
	return nil
}

// RedirectCode accepts the HTTP redirect codes a site redirect may use.
func RedirectCode(code int) error {
	switch code {
	case 301, 302, 307, 308:
		return nil
	}
	return fail("code", "%d is not a redirect code (301, 302, 307 or 308)", code)
}
