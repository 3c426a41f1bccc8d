package validate

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// maxEcho bounds how much of a refused value an error repeats. Errors reach
// API responses and log lines; a hostile value must not be able to fill them
// or, through control and bidi characters, rewrite how they read.
const maxEcho = 64

// quote renders input for an error message: Go-quoted, so NUL, newlines and
// bidi overrides show as escapes, and cut to maxEcho bytes at a rune boundary.
func quote(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	cut := maxEcho
	// Back off at most UTFMax-1 bytes: only a valid rune can straddle the
	// cut, and invalid bytes are escaped by strconv.Quote anyway.
	for i := 1; i < utf8.UTFMax && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}

func quoteRune(r rune) string { return fmt.Sprintf("%q (%U)", r, r) }

func quoteByte(b byte) string { return fmt.Sprintf("0x%02x", b) }
