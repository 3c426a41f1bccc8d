package dnszone

import "strings"

// DS digest types (IANA "Delegation Signer (DS) Resource Record Digest
// Algorithms").
const (
	DigestSHA1   = 1
	DigestSHA256 = 2
	DigestSHA384 = 4
)

// PublishableDS keeps the DS records a registrar should be given: SHA-256
// and SHA-384 digests. RFC 8624 (section 3.3) says SHA-1 DS records must
// not be published; PowerDNS still lists them. Each record is presentation
// text ending in "KEYTAG ALGORITHM DIGESTTYPE DIGEST"; one that does not
// parse is dropped rather than guessed at.
func PublishableDS(ds []string) []string {
	out := make([]string, 0, len(ds))
	for _, rr := range ds {
		f := strings.Fields(rr)
		if len(f) < 4 {
			continue
		}
		switch f[len(f)-2] {
		case "2", "4":
			out = append(out, rr)
		}
	}
	return out
}
