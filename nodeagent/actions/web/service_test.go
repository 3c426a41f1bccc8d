package web

import (
	"strings"
	"testing"
)

func TestParseServiceFile(t *testing.T) {
	for name, want := range map[string]string{
		"npanel@webmail.conf":                      "@webmail",
		"npanel@webmail_webmail.example.com.conf":  "@webmail/webmail.example.com",
		"npanel-alice_example.com.conf":            "",
		"npanel@.conf":                             "",
		"npanel@Webmail.conf":                      "",
		"npanel@webmail_.conf":                     "",
		"npanel@web-mail_x.example.com.conf":       "",
		"npanel@webmail_webmail.example.com.conf~": "",
	} {
		got, ok := parseServiceFile(name)
		if got != want || ok != (want != "") {
			t.Errorf("parseServiceFile(%q) = %q, %v; want %q", name, got, ok, want)
		}
		if ok {
			svc, domain, _ := strings.Cut(strings.TrimPrefix(want, "@"), "/")
			if serviceFile(svc, domain) != name {
				t.Errorf("serviceFile(%q, %q) = %q; want %q", svc, domain, serviceFile(svc, domain), name)
			}
		}
	}
}

func testServiceSite() ServiceSite {
	return ServiceSite{Service: "webmail", Domain: "webmail.example.com", Root: "/var/lib/roundcube/public_html",
		Deny: []string{"config", "composer.json"},
		Pool: ServicePool{User: "npanel-webmail", Env: map[string]string{"ROUNDCUBE_CONFIG_DIR": "/etc/npanel/webmail"},
			AdminValues: map[string]string{"memory_limit": "128M"}}}
}

func TestRenderServicePool(t *testing.T) {
	b, err := renderServicePool(testServiceSite(), "8.2", "/run/php/npanel@webmail.sock", "www-data")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, want := range []string{"[@webmail]\n", "user = npanel-webmail\n", "listen.group = www-data\n", "clear_env = yes\n",
		"env[ROUNDCUBE_CONFIG_DIR] = /etc/npanel/webmail\n", "php_admin_value[memory_limit] = 128M\n",
		"php_admin_value[disable_functions] = exec,"} {
		if !strings.Contains(conf, want) {
			t.Errorf("pool lacks %q:\n%s", want, conf)
		}
	}
	if socketOfPool(b) != "/run/php/npanel@webmail.sock" {
		t.Errorf("socketOfPool = %q", socketOfPool(b))
	}
	for name, mod := range map[string]func(*ServiceSite){
		"root user":       func(s *ServiceSite) { s.Pool.User = "root" },
		"no user":         func(s *ServiceSite) { s.Pool.User = "" },
		"newline in env":  func(s *ServiceSite) { s.Pool.Env["X"] = "a\nuser = root" },
		"space in value":  func(s *ServiceSite) { s.Pool.AdminValues["x"] = "a b" },
		"bad key":         func(s *ServiceSite) { s.Pool.Env["a]"] = "b" },
		"semicolon value": func(s *ServiceSite) { s.Pool.AdminValues["x"] = "a;b" },
	} {
		s := testServiceSite()
		mod(&s)
		if _, err := renderServicePool(s, "8.2", "/run/php/x.sock", "www-data"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRenderServiceVhost(t *testing.T) {
	b, err := renderServiceVhost(testServiceSite(), []string{"127.0.0.1:8080"}, testTLS, "/run/php/npanel@webmail.sock")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, want := range []string{"listen 127.0.0.1:8080;\n", "server_name webmail.example.com;\n",
		"root /var/lib/roundcube/public_html;\n", `location ~ ^/(config|composer\.json)(/|$) {`, "fastcgi_pass unix:/run/php/npanel@webmail.sock;"} {
		if !strings.Contains(conf, want) {
			t.Errorf("server block lacks %q:\n%s", want, conf)
		}
	}
	if got := serverNames(b); len(got) != 1 || got[0] != "webmail.example.com" {
		t.Errorf("serverNames = %v", got)
	}
	for name, mod := range map[string]func(*ServiceSite){
		"deny regex": func(s *ServiceSite) { s.Deny = []string{"a|b"} },
		"deny brace": func(s *ServiceSite) { s.Deny = []string{"a{"} },
		"root":       func(s *ServiceSite) { s.Root = "/var/www; include /etc/passwd" },
	} {
		s := testServiceSite()
		mod(&s)
		if _, err := renderServiceVhost(s, []string{"80"}, testTLS, "/run/php/x.sock"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if checkService("web mail") == nil || checkService("") == nil || checkService("webmail") != nil {
		t.Error("checkService")
	}
}

var testTLS = vhostTLS{Listen: []string{"443"}, Cert: "/c/x.crt", Key: "/c/x.key", Params: "/s/tls.conf", Challenge: "/a"}
