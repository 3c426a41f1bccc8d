package validate

import "unicode/utf8"

// ObjectName accepts names of things operators create (plans, API tokens):
// 1–63 characters, lowercase letters, digits and -_. inside, starting and
// ending with a letter or digit — safe in URLs, logs and etcd keys.
func ObjectName(field, s string) error {
	if s == "" {
		return fail(field, "must not be empty")
	}
	return labelPart(s, 63, field)
}

// Password bounds: long enough to resist guessing at our login rate limit,
// short enough that bcrypt (which reads 72 bytes) sees all of it.
const (
	MinPasswordLen = 12
	MaxPasswordLen = 72
)

// Password accepts a password of MinPasswordLen to MaxPasswordLen bytes of
// valid UTF-8 without control characters, that is not one repeated character
// nor one of the first a guesser tries (weakPassword).
// Length is the strength rule that matters for an online-guessing attacker;
// composition rules mostly annoy.
func Password(pw string) error {
	switch {
	case len(pw) < MinPasswordLen:
		return fail("password", "must be at least %d characters", MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		return fail("password", "must be at most %d bytes", MaxPasswordLen)
	case !utf8.ValidString(pw):
		return fail("password", "must be valid UTF-8")
	}
	first, _ := utf8.DecodeRuneInString(pw)
	same := true
	for _, r := range pw {
		if r < 0x20 || r == 0x7f {
			return fail("password", "must not contain control characters")
		}
		if r != first {
			same = false
		}
	}
	if same {
		return fail("password", "must not be one repeated character")
	}
	if why := weakPassword(pw); why != "" {
		return fail("password", "%s; choose a longer, less predictable one", why)
	}
	return nil
}

// PHPVersion accepts a PHP release line such as "8.2": major.minor, digits only.
func PHPVersion(v string) error {
	if len(v) < 3 || len(v) > 5 {
		return fail("phpVersions", "%q is not a PHP version like 8.2", v)
	}
	dot := 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '.':
			dot++
			if i == 0 || i == len(v)-1 {
				return fail("phpVersions", "%q is not a PHP version like 8.2", v)
			}
		case c < '0' || c > '9':
			return fail("phpVersions", "%q is not a PHP version like 8.2", v)
		}
	}
	if dot != 1 {
		return fail("phpVersions", "%q is not a PHP version like 8.2", v)
	}
	return nil
}
