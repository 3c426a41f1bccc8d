package mail

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// This file takes password hashes made elsewhere (a node the mailbox moved
// from, a cPanel import) and hands out the installed ones for a migration:
// logins keep working without anyone knowing the passwords.

// ErrNotPasswordHash is returned for a hash of a scheme Dovecot is not
// given here or of a malformed one. Errors about hashes never quote them.
var ErrNotPasswordHash = errors.New("not a password hash Dovecot reads ({SHA512-CRYPT}$6$, {SHA256-CRYPT}$5$ or {BLF-CRYPT}$2y$)")

// maxHashLen bounds a hash: the longest valid one (SHA-crypt with rounds=
// and a 16-character salt) is well under it.
const maxHashLen = 160

// NormalizePasswordHash checks that h is a crypt(3) hash Dovecot verifies
// and returns it with its Dovecot scheme prefix: "{SHA512-CRYPT}$6$...",
// "{SHA256-CRYPT}$5$...", "{BLF-CRYPT}$2y$...". A bare "$6$..." (cPanel's
// shadow file) gets its prefix. The check is strict because the hash is
// written into a passwd-file line, where ':' or a newline would change
// the mailbox's other fields.
func NormalizePasswordHash(h string) (string, error) {
	if len(h) > maxHashLen {
		return "", ErrNotPasswordHash
	}
	scheme := ""
	if strings.HasPrefix(h, "{") {
		end := strings.IndexByte(h, '}')
		if end < 0 {
			return "", ErrNotPasswordHash
		}
		scheme, h = h[1:end], h[end+1:]
	}
	var want string
	var ok bool
	switch {
	case strings.HasPrefix(h, "$6$"):
		want, ok = "SHA512-CRYPT", shaCryptOK(h[3:], 86)
	case strings.HasPrefix(h, "$5$"):
		want, ok = "SHA256-CRYPT", shaCryptOK(h[3:], 43)
	case strings.HasPrefix(h, "$2y$"), strings.HasPrefix(h, "$2a$"), strings.HasPrefix(h, "$2b$"):
		want, ok = "BLF-CRYPT", bcryptOK(h[4:])
	}
	if !ok || (scheme != "" && scheme != want) {
		return "", ErrNotPasswordHash
	}
	return "{" + want + "}" + h, nil
}

// cryptChar says whether c is in crypt(3)'s base64 alphabet.
func cryptChar(c byte) bool {
	return c == '.' || c == '/' || c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z'
}

func allCrypt(s string) bool {
	for i := 0; i < len(s); i++ {
		if !cryptChar(s[i]) {
			return false
		}
	}
	return true
}

// shaCryptOK checks the part after "$6$" or "$5$": [rounds=N$]salt$digest
// with a salt of 1 to 16 characters and a digest of n.
func shaCryptOK(s string, n int) bool {
	if r, ok := strings.CutPrefix(s, "rounds="); ok {
		num, rest, ok := strings.Cut(r, "$")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1000 || v > 999999999 || strconv.Itoa(v) != num {
			return false
		}
		s = rest
	}
	salt, digest, ok := strings.Cut(s, "$")
	return ok && len(salt) >= 1 && len(salt) <= 16 && allCrypt(salt) && len(digest) == n && allCrypt(digest)
}

// bcryptOK checks the part after "$2y$": a two-digit cost 04-31, '$', and
// 53 characters (22 of salt, 31 of hash).
func bcryptOK(s string) bool {
	if len(s) != 2+1+53 || s[2] != '$' {
		return false
	}
	cost, err := strconv.Atoi(s[:2])
	return err == nil && s[0] >= '0' && s[0] <= '3' && s[1] >= '0' && s[1] <= '9' && cost >= 4 && cost <= 31 && allCrypt(s[3:])
}

// storedHash is how a normalized hash goes into userLine.hash: bcrypt
// without its prefix (the passdb's default scheme, as the agent's own
// hashes are kept), any other scheme with it.
func storedHash(normalized string) string { return strings.TrimPrefix(normalized, "{BLF-CRYPT}") }

// MailboxPasswordHash returns the installed password hash of address with
// its Dovecot scheme prefix, for export to another node; ok is false when
// the mailbox does not exist on this node or is not username's (its home
// is not inside the account's home).
func (m *Module) MailboxPasswordHash(env *actions.Env, username, address string) (hash string, ok bool, err error) {
	local, domain, err := canonAddress(address)
	if err != nil {
		return "", false, err
	}
	u, ok, err := readUser(env.Profile.Mail().UsersDir, domain, local)
	if err != nil || !ok {
		return "", false, err
	}
	if !strings.HasPrefix(u.home, filepath.Join(env.Profile.HomeBase, username)+"/") {
		return "", false, nil
	}
	h := u.hash
	if !strings.HasPrefix(h, "{") {
		h = "{BLF-CRYPT}" + h
	}
	if h, err = NormalizePasswordHash(h); err != nil {
		return "", false, fmt.Errorf("mailbox %s: installed hash: %w", address, err)
	}
	return h, true, nil
}

// installHash unseals the request's password hash into u unless u already
// holds the one these sealed bytes carry (a repeated ensure), and reports
// whether it changed. Its errors never contain the hash.
func (a *EnsureMailbox) installHash(env *actions.Env, u *userLine, existed bool, oldDigest string) (bool, error) {
	r := a.req
	digest := sealDigest(r.SealedPasswordHash)
	if existed && oldDigest == digest {
		return false, nil
	}
	if env.Unseal == nil {
		return false, fmt.Errorf("mailbox %s: a sealed password hash needs the node's key, which this agent cannot use", r.Address)
	}
	pt, err := env.Unseal(r.SealedPasswordHash, agentpb.MailPasswordHashSealContext(r.Address))
	if err != nil {
		return false, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "mailbox %s: sealed password hash: %v", r.Address, err)
	}
	h, err := NormalizePasswordHash(string(pt))
	clear(pt)
	if err != nil {
		return false, actions.Fail(agentpb.ErrorReason_ERROR_REASON_INVALID, "mailbox %s: sealed password hash: %v", r.Address, err)
	}
	h = storedHash(h)
	changed := !existed || u.hash != h
	u.hash, u.digest = h, digest
	return changed, nil
}
