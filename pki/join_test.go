package pki

import (
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// jws builds a compact token from a header and a payload as written, with
// a 64-byte signature nobody checks here: ParseJoinToken reads, the CA
// verifies.
func jws(header, payload string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc([]byte(payload)) + "." + enc(make([]byte, 64))
}

const (
	goodHeader = `{"alg":"ES256","kid":"k1","typ":"JWT"}`
	goodFP     = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func goodPayload(extra string) string {
	return `{"iss":"npanel-join","sub":"web-1","aud":["https://npanel-ca/1.0/sign"],"exp":1900000000,"jti":"abc123",` +
		`"sha":"` + goodFP + `","sans":["spiffe://npanel/node/web-1"]` + extra + `}`
}

func TestParseJoinTokenByHand(t *testing.T) {
	c, err := ParseJoinToken(jws(goodHeader, goodPayload(`,"nbf":1,"iat":1,"step":{"x":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	want := JoinClaims{Node: "web-1", ID: "abc123", ExpiresAt: time.Unix(1900000000, 0), RootFingerprint: goodFP}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("claims %+v, want %+v", c, want)
	}
	// "aud" may be one string.
	one := strings.Replace(goodPayload(""), `["https://npanel-ca/1.0/sign"]`, `"https://npanel-ca/1.0/sign"`, 1)
	if _, err := ParseJoinToken(jws(goodHeader, one)); err != nil {
		t.Errorf("aud as a string: %v", err)
	}

	enc := base64.RawURLEncoding.EncodeToString
	good := jws(goodHeader, goodPayload(""))
	for desc, tok := range map[string]string{
		"two parts":          good[:strings.LastIndex(good, ".")],
		"four parts":         good + ".x",
		"alg none":           jws(`{"alg":"none","kid":"k1"}`, goodPayload("")),
		"no kid":             jws(`{"alg":"ES256"}`, goodPayload("")),
		"short signature":    enc([]byte(goodHeader)) + "." + enc([]byte(goodPayload(""))) + "." + enc(make([]byte, 63)),
		"padded base64":      enc([]byte(goodHeader)) + "=." + enc([]byte(goodPayload(""))) + "." + enc(make([]byte, 64)),
		"payload not JSON":   jws(goodHeader, "web-1"),
		"payload array":      jws(goodHeader, `["npanel-join"]`),
		"key in other case":  jws(goodHeader, goodPayload(`,"SUB":"web-2"`)),
		"exp not an integer": jws(goodHeader, strings.Replace(goodPayload(""), "1900000000", `"tomorrow"`, 1)),
		"aud of numbers":     jws(goodHeader, strings.Replace(goodPayload(""), `["https://npanel-ca/1.0/sign"]`, `[1]`, 1)),
		"two audiences":      jws(goodHeader, strings.Replace(goodPayload(""), `["https://npanel-ca/1.0/sign"]`, `["https://npanel-ca/1.0/sign","x"]`, 1)),
		"too long":           jws(goodHeader, goodPayload(`,"pad":"`+strings.Repeat("a", maxTokenLen)+`"`)),
	} {
		if c, err := ParseJoinToken(tok); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: ParseJoinToken = %+v, %v; want ErrInvalidToken", desc, c, err)
		}
	}
}

// A join token may list the node's hosts after its URI, written exactly as
// NodeHosts writes them; any other spelling is refused.
func TestParseJoinTokenHosts(t *testing.T) {
	sans := func(s string) string {
		return strings.Replace(goodPayload(""), `"sans":["spiffe://npanel/node/web-1"]`, `"sans":["spiffe://npanel/node/web-1"`+s+`]`, 1)
	}
	c, err := ParseJoinToken(jws(goodHeader, sans(`,"10.0.0.5","2001:db8::5","web-1.example.net"`)))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.5", "2001:db8::5", "web-1.example.net"}; !reflect.DeepEqual(c.Hosts, want) {
		t.Errorf("hosts %q, want %q", c.Hosts, want)
	}
	for _, bad := range []string{
		`,"10.0.0.5:9469"`, `,"WEB-1.example.net"`, `,"10.0.0.6","10.0.0.5"`, `,"10.0.0.5","10.0.0.5"`,
		`,"2001:DB8::5"`, `,""`, `,"spiffe://npanel/node/web-2"`, `,"a","b","c","d","e","f","g","h","i"`,
	} {
		if _, err := ParseJoinToken(jws(goodHeader, sans(bad))); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("SANs [uri%s]: err = %v, want ErrInvalidToken", bad, err)
		}
	}
}
