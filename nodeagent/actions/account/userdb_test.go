package account

import (
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParsePasswd(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []passwdEntry
	}{
		{name: "empty"},
		{
			name: "ordinary",
			in: "root:x:0:0:root:/root:/bin/bash\n" +
				"alice:x:1001:1002:npanel account:/home/alice:/usr/sbin/nologin\n",
			want: []passwdEntry{
				{Name: "root", UID: 0, GID: 0, GECOS: "root", Home: "/root", Shell: "/bin/bash"},
				{Name: "alice", UID: 1001, GID: 1002, GECOS: "npanel account", Home: "/home/alice", Shell: "/usr/sbin/nologin"},
			},
		},
		{
			name: "no trailing newline, empty fields",
			in:   "bob:x:1000:1000:::",
			want: []passwdEntry{{Name: "bob", UID: 1000, GID: 1000}},
		},
		{
			name: "first of a repeated name wins",
			in:   "bob:x:1000:1000:a:/home/a:/bin/sh\nbob:x:0:0:b:/root:/bin/sh\n",
			want: []passwdEntry{{Name: "bob", UID: 1000, GID: 1000, GECOS: "a", Home: "/home/a", Shell: "/bin/sh"}},
		},
		{
			name: "malformed lines skipped",
			in: "# comment\n" +
				"+::::::\n" + // NIS
				"+nis:::::: \n" +
				"short:x:1:1\n" +
				"long:x:1:1:g:/h:/s:extra\n" +
				"neg:x:-1:1:g:/h:/s\n" +
				"big:x:4294967296:1:g:/h:/s\n" +
				"hex:x:0x10:1:g:/h:/s\n" +
				":x:5:5:g:/h:/s\n" +
				"\n" +
				"ok:x:4294967295:7:g:/h:/s\n",
			want: []passwdEntry{{Name: "ok", UID: 4294967295, GID: 7, GECOS: "g", Home: "/h", Shell: "/s"}},
		},
		{
			name: "CRLF is not stripped: the shell field keeps the CR",
			in:   "w:x:1:1:g:/h:/s\r\n",
			want: []passwdEntry{{Name: "w", UID: 1, GID: 1, GECOS: "g", Home: "/h", Shell: "/s\r"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parsePasswd([]byte(tt.in))
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parsePasswd =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestParseShadow(t *testing.T) {
	tests := []struct {
		line string
		want *shadowEntry // nil: skipped
	}{
		{"a:*:20000:0:99999:7:::", &shadowEntry{Name: "a", ExpireDay: -1}},
		{"a:$6$salt$hash:20000:0:99999:7:::", &shadowEntry{Name: "a", ExpireDay: -1}},
		{"a:!*:20000:0:99999:7::1:", &shadowEntry{Name: "a", PasswordLocked: true, ExpireDay: 1}},
		{"a:!$6$salt$hash:20000::::::", &shadowEntry{Name: "a", PasswordLocked: true, ExpireDay: -1}},
		{"a:!!$6$x:20000::::::", &shadowEntry{Name: "a", PasswordLocked: true, ExpireDay: -1}},
		{"a:!:20000::::::", &shadowEntry{Name: "a", NoPassword: true, ExpireDay: -1}},
		{"a:!!:20000::::::", &shadowEntry{Name: "a", NoPassword: true, ExpireDay: -1}},
		{"a::20000::::::", &shadowEntry{Name: "a", NoPassword: true, ExpireDay: -1}},
		{"a:*:20000:::::0:", &shadowEntry{Name: "a", ExpireDay: 0}},
		{"a:*:20000:::::x:", nil},
		{"a:*:20000:::::-1:", nil},
		{"a:*:20000:::::", nil}, // 8 fields
		{":*:20000::::::", nil},
		{"a:*:20000:::::::", nil}, // 10 fields
	}
	for _, tt := range tests {
		got := parseShadow([]byte(tt.line + "\n"))
		switch {
		case tt.want == nil && len(got) != 0:
			t.Errorf("%q: got %+v, want skipped", tt.line, got)
		case tt.want != nil && (len(got) != 1 || got[0] != *tt.want):
			t.Errorf("%q: got %+v, want %+v", tt.line, got, *tt.want)
		}
	}
}

func TestLockState(t *testing.T) {
	now := time.Date(2026, 8, 1, 12, 0, 0, 0, time.UTC)
	today := now.Unix() / 86400
	tests := []struct {
		name             string
		e                shadowEntry
		locked, unlocked bool
	}{
		{"fresh account", shadowEntry{ExpireDay: -1}, false, true},
		{"suspended", shadowEntry{PasswordLocked: true, ExpireDay: 1}, true, false},
		{"suspended, never had a password", shadowEntry{NoPassword: true, ExpireDay: 1}, true, false},
		{"never had a password, active", shadowEntry{NoPassword: true, ExpireDay: -1}, false, true},
		{"password lock only", shadowEntry{PasswordLocked: true, ExpireDay: -1}, false, false},
		{"expiry only", shadowEntry{ExpireDay: 1}, false, false},
		{"expires today", shadowEntry{PasswordLocked: true, ExpireDay: today}, true, false},
		{"expires tomorrow", shadowEntry{PasswordLocked: true, ExpireDay: today + 1}, false, false},
	}
	for _, tt := range tests {
		if got := tt.e.locked(now); got != tt.locked {
			t.Errorf("%s: locked = %v, want %v", tt.name, got, tt.locked)
		}
		if got := tt.e.unlocked(); got != tt.unlocked {
			t.Errorf("%s: unlocked = %v, want %v", tt.name, got, tt.unlocked)
		}
	}
}

func TestUserDBLookups(t *testing.T) {
	db := &userDB{
		passwd: parsePasswd([]byte("a:x:1000:1000::/h/a:/s\nb:x:1001:1001::/h/b:/s\n")),
		shadow: parseShadow([]byte("a:!*:1:::::1:\n")),
	}
	if u, ok := db.user("b"); !ok || u.UID != 1001 {
		t.Fatalf("user(b) = %+v, %v", u, ok)
	}
	if _, ok := db.user("c"); ok {
		t.Fatal("user(c) found")
	}
	if !db.uidInUse(1000) || db.uidInUse(1002) {
		t.Fatal("uidInUse wrong")
	}
	if s := db.shadowOf("a"); !s.PasswordLocked || s.ExpireDay != 1 {
		t.Fatalf("shadowOf(a) = %+v", s)
	}
	if s := db.shadowOf("b"); !s.unlocked() {
		t.Fatalf("shadowOf(b) without a line = %+v", s)
	}
}

func FuzzParsePasswd(f *testing.F) {
	f.Add([]byte("root:x:0:0:root:/root:/bin/bash\n"))
	f.Add([]byte("a:x:1:1:g:/h:/s\na:x:2:2:g:/h:/s"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got := parsePasswd(data)
		seen := make(map[string]bool)
		var lines []string
		for _, e := range got {
			// Every field came from between separators of one line.
			for _, s := range []string{e.Name, e.GECOS, e.Home, e.Shell} {
				if strings.ContainsAny(s, ":\n") {
					t.Fatalf("field %q of %+v holds a separator", s, e)
				}
			}
			if e.Name == "" || seen[e.Name] {
				t.Fatalf("empty or repeated name in %+v", got)
			}
			seen[e.Name] = true
			lines = append(lines, strings.Join([]string{e.Name, "x", uitoa(e.UID), uitoa(e.GID), e.GECOS, e.Home, e.Shell}, ":"))
		}
		// Formatting the entries and parsing them again is the identity.
		again := parsePasswd([]byte(strings.Join(lines, "\n")))
		if len(got) != 0 && !reflect.DeepEqual(again, got) {
			t.Fatalf("round trip:\n%+v\n%+v", got, again)
		}
		// A valid-UTF-8 input gives valid-UTF-8 fields (no byte is split).
		if utf8.Valid(data) {
			for _, e := range got {
				if !utf8.ValidString(e.Name + e.GECOS + e.Home + e.Shell) {
					t.Fatalf("invalid UTF-8 out of valid input: %+v", e)
				}
			}
		}
	})
}

func uitoa(n uint32) string {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
