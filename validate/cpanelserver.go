package validate

import (
	"encoding/base64"
	"net/netip"
	"path"
	"strings"
)

// Validators of the old cPanel server a node pulls archives from
// (scanCpanelServer, fetchCpanelBackup). The API checks them to name the
// field; the node checks them again before it dials. The remote command
// the node runs (pkgacct) is built only from values these accept.

// maxRemotePath bounds a remote archive's path.
const maxRemotePath = 1024

// CpanelServerHost accepts an IP address (no zone) or a host name: ASCII
// letters, digits and '-' in dot-separated labels, 253 bytes at most. It
// returns the host as the node dials it (a name in lower case).
func CpanelServerHost(s string) (string, error) {
	if s == "" {
		return "", fail("host", "must not be empty")
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return "", fail("host", "%q is not a unicast address without zone", s)
		}
		return a.String(), nil
	}
	if len(s) > 253 {
		return "", fail("host", "is %d bytes long; at most 253", len(s))
	}
	h := strings.ToLower(strings.TrimSuffix(s, "."))
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fail("host", "%q is not a host name or an IP address", s)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "", fail("host", "%q is not a host name or an IP address", s)
			}
		}
	}
	return h, nil
}

// CpanelServerPort accepts 0 (the default, 22) to 65535.
func CpanelServerPort(p int) error {
	if p < 0 || p > 65535 {
		return fail("port", "must be 1..65535")
	}
	return nil
}

// CpanelServerUser accepts a POSIX login name: a letter or '_' first,
// then letters, digits, '_', '.' or '-', 32 bytes at most.
func CpanelServerUser(s string) error {
	if s == "" || len(s) > 32 {
		return fail("user", "must be 1..32 bytes")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		first := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
		if i == 0 && !first || i > 0 && !first && !(c >= '0' && c <= '9' || c == '.' || c == '-') {
			return fail("user", "%q is not a login name (letters, digits, _ . -; a letter or _ first)", s)
		}
	}
	return nil
}

// CpanelAccountName accepts a cPanel account's username as pkgacct takes
// it: [a-z][a-z0-9]{0,15}. It is one of the tokens of the remote command.
func CpanelAccountName(s string) error {
	if s == "" || len(s) > 16 || s[0] < 'a' || s[0] > 'z' {
		return fail("account", "%q is not a cPanel username ([a-z][a-z0-9]{0,15})", s)
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fail("account", "%q is not a cPanel username ([a-z][a-z0-9]{0,15})", s)
		}
	}
	return nil
}

// HostKeyFingerprint accepts an SSH host key fingerprint as ssh-keygen -l
// prints it: "SHA256:" and the unpadded base64 of 32 bytes.
func HostKeyFingerprint(s string) error {
	b64, ok := strings.CutPrefix(s, "SHA256:")
	if !ok {
		return fail("hostKeyFingerprint", "must be SHA256:... as ssh-keygen -l prints it")
	}
	if b, err := base64.RawStdEncoding.DecodeString(b64); err != nil || len(b) != 32 {
		return fail("hostKeyFingerprint", "must be SHA256: and 43 base64 characters")
	}
	return nil
}

// CpanelRemotePath accepts an archive's path on the old server: absolute,
// clean (no "..", "." or "//"), of the characters file names of cPanel
// backups use, ending .tar.gz, .tgz or .tar.
func CpanelRemotePath(s string) error {
	switch {
	case s == "":
		return fail("remotePath", "must not be empty")
	case len(s) > maxRemotePath:
		return fail("remotePath", "is %d bytes long; at most %d", len(s), maxRemotePath)
	case !strings.HasPrefix(s, "/"):
		return fail("remotePath", "must be absolute")
	case path.Clean(s) != s:
		return fail("remotePath", "must be clean (no .., . or //)")
	case !strings.HasSuffix(s, ".tar.gz") && !strings.HasSuffix(s, ".tgz") && !strings.HasSuffix(s, ".tar"):
		return fail("remotePath", "must name a .tar.gz, .tgz or .tar archive")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("/._-+@:", c) >= 0) {
			return fail("remotePath", "has a character other than letters, digits and / . _ - + @ :")
		}
	}
	for _, el := range strings.Split(s[1:], "/") {
		if el == ".." || el == "." {
			return fail("remotePath", "must be clean (no .., . or //)")
		}
	}
	return nil
}
