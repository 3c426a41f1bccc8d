package mail

import (
	"strings"
	"testing"
)

const (
	sha512Hash = "$6$szaxOBCB0Ngf8MV5$1J.nLnsnhNuILGGHJ/.KFqhdcurnt0EM3q81.IzvDVXCtcykYQIKEZesOnNZ8dM67zSdwFYJ1gg4yawUk8Vrs/"
	sha256Hash = "$5$XC5mp2uBR6hsJhkN$NEDxEmm7Fyha16nWthzqv4RP.hoHdY28Ozkyexn1j2B"
	bcryptHash = "$2y$10$abcdefghijklmnopqrstuu5Zb1yJ0bC1WlqJpVx9dE1m3rQ6mzfJe"
)

func TestNormalizePasswordHash(t *testing.T) {
	good := map[string]string{
		sha512Hash:                    "{SHA512-CRYPT}" + sha512Hash,
		"{SHA512-CRYPT}" + sha512Hash: "{SHA512-CRYPT}" + sha512Hash,
		"{SHA256-CRYPT}" + sha256Hash: "{SHA256-CRYPT}" + sha256Hash,
		sha256Hash:                    "{SHA256-CRYPT}" + sha256Hash,
		"{BLF-CRYPT}" + bcryptHash:    "{BLF-CRYPT}" + bcryptHash,
		bcryptHash:                    "{BLF-CRYPT}" + bcryptHash,
		"$6$rounds=5000$salt$" + sha512Hash[len(sha512Hash)-86:]: "{SHA512-CRYPT}$6$rounds=5000$salt$" + sha512Hash[len(sha512Hash)-86:],
	}
	for in, want := range good {
		got, err := NormalizePasswordHash(in)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	bad := []string{
		"", "secret", "{PLAIN}secret", "{CRYPT}ab01FAX.bQRSU", "{MD5-CRYPT}$1$abc$def",
		"{SHA512-CRYPT}" + sha256Hash,  // scheme and hash disagree
		"{BLF-CRYPT}" + sha512Hash,     // likewise
		sha512Hash + ":1000:1000",      // would add passwd-file fields
		sha512Hash + "\nevil:x",        // would add a line
		sha512Hash[:len(sha512Hash)-1], // short digest
		sha512Hash + "A",               // long digest
		"$6$rounds=10$salt$" + sha512Hash[len(sha512Hash)-86:],
		"$6$$" + sha512Hash[len(sha512Hash)-86:], // empty salt
		"$2y$99$abcdefghijklmnopqrstuu5Zb1yJ0bC1WlqJpVx9dE1m3rQ6mzfJe",
		"$2x$10$abcdefghijklmnopqrstuu5Zb1yJ0bC1WlqJpVx9dE1m3rQ6mzfJe",
		"{SHA512-CRYPT" + sha512Hash,
	}
	for _, in := range bad {
		_, err := NormalizePasswordHash(in)
		if err == nil {
			t.Errorf("%q accepted", in)
		} else if in != "" && strings.Contains(err.Error(), in) {
			t.Errorf("error quotes the hash: %v", err)
		}
	}
}

// Whatever NormalizePasswordHash accepts is one passwd-file field that
// reads back as it was written, and normalizing it again changes nothing.
func FuzzNormalizePasswordHash(f *testing.F) {
	for _, s := range []string{sha512Hash, "{SHA256-CRYPT}" + sha256Hash, bcryptHash, "{PLAIN}x", "$6$rounds=5000$s$x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := NormalizePasswordHash(s)
		if err != nil {
			return
		}
		if again, err := NormalizePasswordHash(h); err != nil || again != h {
			t.Fatalf("%q: not stable: %q, %v", h, again, err)
		}
		u := userLine{local: "bob", hash: storedHash(h), uid: 1000, gid: 1000, digest: "d", home: "/h", quotaMB: 1}
		back, err := parseUserLine(u.String())
		if err != nil || back != u {
			t.Fatalf("%q: passwd line round trip: %+v, %v", h, back, err)
		}
	})
}
