package cpaneltest

import (
	"crypto/sha1"
	"crypto/sha512"
	"encoding/hex"
	"strings"
)

// SHA512Crypt returns the crypt(3) SHA-512 hash ($6$salt$...) of password
// with the default 5000 rounds, as cPanel writes into etc/DOMAIN/shadow.
// It follows Drepper's specification; a test checks it against openssl.
func SHA512Crypt(password, salt string) string {
	p, s := []byte(password), []byte(salt)
	if len(s) > 16 {
		s = s[:16]
	}
	b := sha512.New()
	b.Write(p)
	b.Write(s)
	b.Write(p)
	bs := b.Sum(nil)

	a := sha512.New()
	a.Write(p)
	a.Write(s)
	n := len(p)
	for ; n > 64; n -= 64 {
		a.Write(bs)
	}
	a.Write(bs[:n])
	for i := len(p); i > 0; i >>= 1 {
		if i&1 != 0 {
			a.Write(bs)
		} else {
			a.Write(p)
		}
	}
	as := a.Sum(nil)

	dp := sha512.New()
	for range len(p) {
		dp.Write(p)
	}
	pseq := repeat(dp.Sum(nil), len(p))
	ds := sha512.New()
	for range 16 + int(as[0]) {
		ds.Write(s)
	}
	sseq := repeat(ds.Sum(nil), len(s))

	c := as
	for r := range 5000 {
		h := sha512.New()
		if r&1 != 0 {
			h.Write(pseq)
		} else {
			h.Write(c)
		}
		if r%3 != 0 {
			h.Write(sseq)
		}
		if r%7 != 0 {
			h.Write(pseq)
		}
		if r&1 != 0 {
			h.Write(c)
		} else {
			h.Write(pseq)
		}
		c = h.Sum(nil)
	}

	const itoa = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	var out strings.Builder
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for range n {
			out.WriteByte(itoa[w&0x3f])
			w >>= 6
		}
	}
	order := [][3]int{{0, 21, 42}, {22, 43, 1}, {44, 2, 23}, {3, 24, 45}, {25, 46, 4}, {47, 5, 26}, {6, 27, 48},
		{28, 49, 7}, {50, 8, 29}, {9, 30, 51}, {31, 52, 10}, {53, 11, 32}, {12, 33, 54}, {34, 55, 13},
		{56, 14, 35}, {15, 36, 57}, {37, 58, 16}, {59, 17, 38}, {18, 39, 60}, {40, 61, 19}, {62, 20, 41}}
	for _, o := range order {
		enc(c[o[0]], c[o[1]], c[o[2]], 4)
	}
	enc(0, 0, c[63], 2)
	return "$6$" + string(s) + "$" + out.String()
}

func repeat(sum []byte, n int) []byte {
	out := make([]byte, 0, n)
	for len(out) < n {
		out = append(out, sum[:min(len(sum), n-len(out))]...)
	}
	return out
}

// MySQLNativeHash is mysql_native_password's stored hash of password:
// "*" and the upper-case hex of SHA1(SHA1(password)).
func MySQLNativeHash(password string) string {
	h1 := sha1.Sum([]byte(password))
	h2 := sha1.Sum(h1[:])
	return "*" + strings.ToUpper(hex.EncodeToString(h2[:]))
}
