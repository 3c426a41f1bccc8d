package account

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/npanel/npanel/nodeagent/platform"
)

// passwdEntry is one line of /etc/passwd(5).
type passwdEntry struct {
	Name  string
	UID   uint32
	GID   uint32
	GECOS string
	Home  string
	Shell string
}

// parsePasswd parses passwd(5) content. Lines that are not seven fields
// with numeric UID and GID (comments, NIS "+" entries, damage) are skipped:
// the actions only ever look a name up, and an entry they cannot read is one
// they must not act on. Where a name repeats, the first line wins, as it
// does for getpwnam.
func parsePasswd(data []byte) []passwdEntry {
	var out []passwdEntry
	seen := make(map[string]bool)
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		f := strings.Split(string(line), ":")
		if len(f) != 7 || f[0] == "" || seen[f[0]] {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		seen[f[0]] = true
		out = append(out, passwdEntry{Name: f[0], UID: uint32(uid), GID: uint32(gid), GECOS: f[4], Home: f[5], Shell: f[6]})
	}
	return out
}

// shadowEntry is what the actions need of a shadow(5) line. The password
// hash itself is deliberately not kept: only whether it is locked.
type shadowEntry struct {
	Name string
	// PasswordLocked: the hash carries the '!' that usermod -L adds and
	// usermod -U removes.
	PasswordLocked bool
	// NoPassword: the field is only '!'s (useradd's "never set" on some
	// distros) or empty. usermod -L cannot lock such a field further and
	// usermod -U refuses to unlock it, so it counts as neither.
	NoPassword bool
	// ExpireDay is the account expiry in days since 1970-01-01, -1 if none.
	ExpireDay int64
}

// parseShadow parses shadow(5) content, skipping lines it cannot read, first
// name wins (see parsePasswd).
func parseShadow(data []byte) []shadowEntry {
	var out []shadowEntry
	seen := make(map[string]bool)
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		f := strings.Split(string(line), ":")
		if len(f) != 9 || f[0] == "" || seen[f[0]] {
			continue
		}
		exp := int64(-1)
		if f[7] != "" {
			n, err := strconv.ParseInt(f[7], 10, 64)
			if err != nil || n < 0 {
				continue
			}
			exp = n
		}
		seen[f[0]] = true
		pw := f[1]
		bare := strings.TrimLeft(pw, "!")
		out = append(out, shadowEntry{
			Name:           f[0],
			PasswordLocked: bare != "" && len(bare) < len(pw),
			NoPassword:     bare == "",
			ExpireDay:      exp,
		})
	}
	return out
}

// locked reports whether the account is suspended as nPanel suspends it:
// expired (which stops every login, key-based SSH included) and its password
// locked, where it has one.
func (s shadowEntry) locked(now time.Time) bool {
	return s.expired(now) && (s.PasswordLocked || s.NoPassword)
}

// unlocked reports whether the account is in nPanel's active state: no
// expiry at all and no lock on its password. An expiry an operator set by
// hand counts as drift and is cleared by the next ensure.
func (s shadowEntry) unlocked() bool {
	return s.ExpireDay < 0 && !s.PasswordLocked
}

func (s shadowEntry) expired(now time.Time) bool {
	return s.ExpireDay >= 0 && s.ExpireDay <= now.Unix()/86400
}

// userDB is a snapshot of the user database.
type userDB struct {
	passwd []passwdEntry
	shadow []shadowEntry
}

func readUserDB(p *platform.Profile) (*userDB, error) {
	pw, err := os.ReadFile(p.Passwd)
	if err != nil {
		return nil, fmt.Errorf("read user database: %w", err)
	}
	sh, err := os.ReadFile(p.Shadow)
	if err != nil {
		return nil, fmt.Errorf("read user database: %w", err)
	}
	return &userDB{passwd: parsePasswd(pw), shadow: parseShadow(sh)}, nil
}

func (db *userDB) user(name string) (passwdEntry, bool) {
	for _, e := range db.passwd {
		if e.Name == name {
			return e, true
		}
	}
	return passwdEntry{}, false
}

func (db *userDB) uidInUse(uid uint32) bool {
	for _, e := range db.passwd {
		if e.UID == uid {
			return true
		}
	}
	return false
}

// shadowOf returns name's shadow entry. A user without one is treated as
// having neither expiry nor password, which is what the tools assume too.
func (db *userDB) shadowOf(name string) shadowEntry {
	for _, e := range db.shadow {
		if e.Name == name {
			return e
		}
	}
	return shadowEntry{Name: name, NoPassword: true, ExpireDay: -1}
}
