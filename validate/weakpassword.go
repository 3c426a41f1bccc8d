package validate

import (
	_ "embed"
	"strings"
	"sync"
	"unicode"
)

// commonPasswords is the 10,000 most common passwords, lower-cased, one a
// line: the head of the "passwords" frequency list of zxcvbn 4.4.2
// (https://github.com/dropbox/zxcvbn, MIT licence, Copyright (c) 2012-2016
// Dan Wheeler and Dropbox, Inc.), taken from its src/frequency_lists.coffee
// in the npm package. To regenerate: `npm pack zxcvbn@4.4.2`, take the
// comma-separated "passwords:" string of that file, keep its first 10,000
// entries, lower-case them, drop repeats, write one a line.
//
//go:embed commonpasswords.txt
var commonPasswords string

var (
	commonOnce sync.Once
	commonSet  map[string]struct{}
)

func isCommon(s string) bool {
	commonOnce.Do(func() {
		lines := strings.Split(strings.TrimSpace(commonPasswords), "\n")
		commonSet = make(map[string]struct{}, len(lines))
		for _, l := range lines {
			commonSet[l] = struct{}{}
		}
	})
	_, ok := commonSet[s]
	return ok
}

// keyboardRows are walks a guesser tries first ("qwertyuiop", "1qaz2wsx" is
// covered by the list).
var keyboardRows = []string{"`1234567890-=", "qwertyuiop[]\\", "asdfghjkl;'", "zxcvbnm,./", "qwertzuiop", "azertyuiop",
	"qwertyuiopasdfghjklzxcvbnm", "1234567890qwertyuiop"}

// weakPassword says why pw is one of the first a guesser tries, or "". It
// refuses what a cracker's first rules derive from the common list: the
// word itself, any case, with digits or symbols around it, repeated
// ("passwordpassword"), or a run along the alphabet, the digits
// ("123456789012") or a keyboard row.
func weakPassword(pw string) string {
	s := strings.ToLower(pw)
	if isCommon(s) {
		return "is one of the most common passwords"
	}
	if unit := repeatedUnit(s); unit != "" {
		return "is a short sequence repeated"
	}
	if isRun(s) {
		return "is a run of consecutive characters"
	}
	// The common word with digits or symbols before or after it
	// ("password2024!", "1qwerty123456").
	core := strings.TrimFunc(s, func(r rune) bool { return !unicode.IsLetter(r) })
	if len(core) >= 4 && (isCommon(core) || repeatedUnit(core) != "" || isRun(core)) {
		return "is a common password with digits or symbols added"
	}
	return ""
}

// repeatedUnit returns u when s is u repeated two or more times.
func repeatedUnit(s string) string {
	for n := 1; n <= len(s)/2; n++ {
		if len(s)%n == 0 && strings.Repeat(s[:n], len(s)/n) == s {
			return s[:n]
		}
	}
	return ""
}

// isRun reports whether s walks the digits (wrapping 9 to 0), the alphabet
// or a keyboard row, forward or backward, one step at a time.
func isRun(s string) bool {
	if len(s) < 4 {
		return false
	}
	cycles := append([]string{"0123456789", "abcdefghijklmnopqrstuvwxyz"}, keyboardRows...)
	for _, c := range cycles {
		for _, dir := range []int{1, -1} {
			if walks(s, c, dir) {
				return true
			}
		}
	}
	return false
}

func walks(s, cycle string, dir int) bool {
	pos := strings.IndexByte(cycle, s[0])
	if pos < 0 {
		return false
	}
	for i := 1; i < len(s); i++ {
		pos = (pos + dir + len(cycle)) % len(cycle)
		if s[i] != cycle[pos] {
			return false
		}
	}
	return true
}
