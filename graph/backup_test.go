package graph

import (
	"errors"
	"net"
	"net/url"
	"path"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

func isField(err error, field string) bool {
	var ve *validate.Error
	return errors.As(err, &ve) && ve.Field == field
}

func TestValidateBackupTargetName(t *testing.T) {
	for s, ok := range map[string]bool{
		"default": true, "s3-eu-1": true, "a": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "Default": false, "1st": false, "-a": false, "a-": false,
		"a_b": false, "a.b": false, "a/b": false, "a b": false, "é": false, "a\x00": false,
	} {
		if err := ValidateBackupTargetName(s); (err == nil) != ok || (err != nil && !isField(err, "name")) {
			t.Errorf("%q: %v, want ok=%v", s, err, ok)
		}
	}
}

func TestValidateS3Endpoint(t *testing.T) {
	for in, want := range map[string]string{
		"https://s3.example.com":         "https://s3.example.com",
		"https://S3.Example.com:9443/":   "https://s3.example.com:9443",
		"https://minio":                  "https://minio",
		"https://10.0.0.5:9000":          "https://10.0.0.5:9000",
		"https://[2001:db8::1]:9000":     "https://[2001:db8::1]:9000",
		"http://127.0.0.1:9000":          "http://127.0.0.1:9000",
		"http://localhost:9000":          "http://localhost:9000",
		"http://[::1]:9000":              "http://[::1]:9000",
		"":                               "",
		"s3.example.com":                 "",
		"http://s3.example.com":          "",
		"http://10.0.0.5:9000":           "",
		"ftp://s3.example.com":           "",
		"https://user:pw@s3.example.com": "",
		"https://s3.example.com/bucket":  "",
		"https://s3.example.com?x=1":     "",
		"https://s3.example.com#frag":    "",
		"https://s3.example.com:0":       "",
		"https://s3.example.com:99999":   "",
		"https://s3.example.com:":        "",
		"https://bad_host.example.com":   "",
		"https://-bad.example.com":       "",
		"https://s3.example.com /x":      "",
		"https://[fe80::1%25eth0]:9000":  "",
		"https://":                       "",
	} {
		got, err := ValidateS3Endpoint(in)
		if want == "" {
			if err == nil || !isField(err, "endpoint") {
				t.Errorf("%q: %q, %v; want refused", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestValidateS3Bucket(t *testing.T) {
	for s, ok := range map[string]bool{
		"npanel-backups": true, "abc": true, "a.b.c": true, "0bucket": true, strings.Repeat("b", 63): true,
		"ab": false, strings.Repeat("b", 64): false, "Bucket": false, "b_b": false, "-abc": false, "abc-": false, ".abc": false,
		"a..b": false, "a.-b": false, "a-.b": false, "192.168.1.1": false, "xn--abc": false, "abc-s3alias": false, "abc--ol-s3": false,
		"sthree-abc": false, "a b": false,
	} {
		if err := ValidateS3Bucket(s); (err == nil) != ok || (err != nil && !isField(err, "bucket")) {
			t.Errorf("%q: %v, want ok=%v", s, err, ok)
		}
	}
}

func TestValidateS3Prefix(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "/": "", "cluster1": "cluster1", "cluster1/": "cluster1", "a/b.c/d_e-f": "a/b.c/d_e-f",
		"/abs": "!", "a//b": "!", "../x": "!", "a/../b": "!", "./a": "!", "a b": "!", "a\\b": "!", "ä": "!",
		strings.Repeat("a", 513): "!",
	} {
		got, err := ValidateS3Prefix(in)
		if want == "!" {
			if err == nil || !isField(err, "prefix") {
				t.Errorf("%q: %q, %v; want refused", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestValidateRestorePath(t *testing.T) {
	for in, want := range map[string]string{
		"": "", ".": "", "./": "", "public_html": "public_html", "public_html/": "public_html",
		"./public_html//index.php": "public_html/index.php", "a/./b": "a/b", "Maildir/.Sent": "Maildir/.Sent",
		"dir with spaces/é.txt": "dir with spaces/é.txt", "..hidden": "..hidden",
		"/etc/passwd": "!", "../x": "!", "a/../../x": "!", "a/..": "!", "..": "!", "~/x": "!", "a\x00b": "!", "a\nb": "!",
		"a\\..\\b": "!", "\xff": "!", strings.Repeat("a", 4097): "!",
	} {
		got, err := ValidateRestorePath(in)
		if want == "!" {
			if err == nil || !isField(err, "path") {
				t.Errorf("%q: %q, %v; want refused", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestPlanBackupPolicy(t *testing.T) {
	n := func(v int) *int { return &v }
	pol, err := planBackupPolicy(&model.PlanBackupInput{Target: "default"})
	if err != nil || pol.Hour != -1 || pol.KeepDaily != 7 || pol.KeepWeekly != 4 || pol.KeepMonthly != 3 || pol.Disabled {
		t.Errorf("defaults: %+v, %v", pol, err)
	}
	off := false
	pol, err = planBackupPolicy(&model.PlanBackupInput{Target: "t", Hour: n(23), KeepDaily: n(366), KeepWeekly: n(0), KeepMonthly: n(240), Enabled: &off})
	if err != nil || pol.Hour != 23 || pol.KeepDaily != 366 || pol.KeepWeekly != 0 || !pol.Disabled {
		t.Errorf("bounds: %+v, %v", pol, err)
	}
	for name, in := range map[string]model.PlanBackupInput{
		"hour 24": {Target: "t", Hour: n(24)}, "hour -1": {Target: "t", Hour: n(-1)},
		"daily 367": {Target: "t", KeepDaily: n(367)}, "weekly 521": {Target: "t", KeepWeekly: n(521)},
		"monthly 241": {Target: "t", KeepMonthly: n(241)}, "negative": {Target: "t", KeepDaily: n(-1)},
		"all zero": {Target: "t", KeepDaily: n(0), KeepWeekly: n(0), KeepMonthly: n(0)}, "bad target": {Target: "T!"},
	} {
		if _, err := planBackupPolicy(&in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzBackupTargetName: an accepted name is a DNS label in lowercase.
func FuzzBackupTargetName(f *testing.F) {
	for _, s := range []string{"default", "s3-eu", "", "A", "a-", strings.Repeat("a", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateBackupTargetName(s)
		if err != nil {
			if !isField(err, "name") {
				t.Fatalf("refusal %v does not name the field", err)
			}
			return
		}
		if len(s) == 0 || len(s) > 63 || strings.ToLower(s) != s || strings.ContainsAny(s, "/._ \x00") || s[0] == '-' || s[len(s)-1] == '-' {
			t.Fatalf("accepted %q", s)
		}
	})
}

// FuzzS3Endpoint: an accepted endpoint is a plain http(s) origin that
// validates again to itself; http only for loopback hosts.
func FuzzS3Endpoint(f *testing.F) {
	for _, s := range []string{"https://s3.example.com", "http://127.0.0.1:9000/", "http://s3.example.com", "https://u@h", "https://[::1]:1", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ValidateS3Endpoint(s)
		if err != nil {
			if !isField(err, "endpoint") {
				t.Fatalf("refusal %v does not name the field", err)
			}
			return
		}
		u, perr := url.Parse(got)
		if perr != nil || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Hostname() == "" {
			t.Fatalf("accepted %q -> %q, not a plain origin", s, got)
		}
		if u.Scheme == "http" {
			ip := net.ParseIP(u.Hostname())
			if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
				t.Fatalf("accepted http to a host that is not loopback: %q", got)
			}
		} else if u.Scheme != "https" {
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
		if again, err := ValidateS3Endpoint(got); err != nil || again != got {
			t.Fatalf("%q -> %q does not validate to itself: %q, %v", s, got, again, err)
		}
	})
}

// FuzzS3Bucket: an accepted bucket follows the S3 naming rules.
func FuzzS3Bucket(f *testing.F) {
	for _, s := range []string{"npanel-backups", "a..b", "1.2.3.4", "xn--a", "ab", "Bucket"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := ValidateS3Bucket(s)
		if err != nil {
			if !isField(err, "bucket") {
				t.Fatalf("refusal %v does not name the field", err)
			}
			return
		}
		if len(s) < 3 || len(s) > 63 || strings.ToLower(s) != s || strings.Contains(s, "..") || net.ParseIP(s) != nil ||
			strings.ContainsAny(s, "_/ ") || strings.HasPrefix(s, "-") || strings.HasSuffix(s, ".") {
			t.Fatalf("accepted %q", s)
		}
	})
}

// FuzzS3Prefix: an accepted prefix is relative, clean and idempotent.
func FuzzS3Prefix(f *testing.F) {
	for _, s := range []string{"cluster1/", "a/../b", "/x", "a//b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ValidateS3Prefix(s)
		if err != nil {
			if !isField(err, "prefix") {
				t.Fatalf("refusal %v does not name the field", err)
			}
			return
		}
		if got == "" {
			return
		}
		if strings.HasPrefix(got, "/") || path.Clean(got) != got || strings.Contains(got, "..") && path.Clean("/"+got) != "/"+got {
			t.Fatalf("accepted %q -> %q", s, got)
		}
		for _, seg := range strings.Split(got, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("accepted %q -> %q with a dot segment", s, got)
			}
		}
		if again, err := ValidateS3Prefix(got); err != nil || again != got {
			t.Fatalf("%q -> %q is not stable: %q, %v", s, got, again, err)
		}
	})
}

// FuzzRestorePath: an accepted path stays within the home: relative,
// clean, without a ".." segment or control characters, and stable.
func FuzzRestorePath(f *testing.F) {
	for _, s := range []string{"public_html/index.php", "../etc", "/etc", "a/./b//", "a\x00", "..hidden", "~/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ValidateRestorePath(s)
		if err != nil {
			if !isField(err, "path") {
				t.Fatalf("refusal %v does not name the field", err)
			}
			return
		}
		if got == "" {
			return
		}
		if path.IsAbs(got) || path.Clean(got) != got || !utf8.ValidString(got) || strings.ContainsFunc(got, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("accepted %q -> %q", s, got)
		}
		for _, seg := range strings.Split(got, "/") {
			if seg == ".." {
				t.Fatalf("accepted %q -> %q with ..", s, got)
			}
		}
		if joined := path.Join("/home/u", got); !strings.HasPrefix(joined, "/home/u/") {
			t.Fatalf("%q -> %q leaves the home: %s", s, got, joined)
		}
		if again, err := ValidateRestorePath(got); err != nil || again != got {
			t.Fatalf("%q -> %q is not stable: %q, %v", s, got, again, err)
		}
	})
}
