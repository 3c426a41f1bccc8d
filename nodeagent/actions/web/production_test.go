package web

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestProductionTLSConfig: in production the agent writes no main
// configuration; its default HTTPS server file and a site's vhost must
// pass nginx -t under a main configuration like the distro's (which
// already sets ssl_protocols at http level, as Debian's does).
func TestProductionTLSConfig(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nginx is not installed")
		}
		t.Skip("nginx is not installed")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: nginx -t opens its logs and the keys as root")
	}
	dir := t.TempDir()
	w := platform.Debian12(dir).Web() // production layout, moved under dir
	for _, d := range []string{w.VhostDir, w.StateDir, w.CertDir, w.ACMEChallengeDir, w.NginxTempDir, w.NginxLogDir, filepath.Join(w.DomainLogDir, "alice")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	body, err := render(defaultTLSTmpl, []string{freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	write := func(path string, b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mailChallenge, err := render(mailChallengeTmpl, mailChallengeData{Listen: []string{freeAddr(t)}, Dir: w.ACMEChallengeDir})
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(w.VhostDir, defaultTLSFile), productionDefaults(body, mailChallenge))
	write(tlsParamsFile(w), []byte(tlsParams))
	tl := vhostTLS{Listen: []string{freeAddr(t)}, Params: tlsParamsFile(w), Challenge: ChallengeDir(w)}
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: filepath.Join(dir, "home/alice")}
	for _, s := range []*agentpb.Site{
		{Domain: "example.com", Docroot: "public_html"},
		{Domain: "example.net", Docroot: "public_html", HttpsRedirect: true, HstsMaxAge: 600},
	} {
		sr, conf, err := renderSiteExtra(w, []string{freeAddr(t)}, tl, o, s, false, "", "")
		if err != nil {
			t.Fatal(err)
		}
		write(sr.Config, conf)
		chain, key, err := selfSigned(sr.ServerNames, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		c, k := CertFiles(w, s.Domain)
		write(c, chain)
		write(k, key)
	}
	main := filepath.Join(dir, "nginx.conf")
	write(main, []byte(`pid `+dir+`/nginx.pid;
error_log `+w.NginxLogDir+`/error.log;
events {}
http {
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log off;
    client_body_temp_path `+w.NginxTempDir+`/body;
    proxy_temp_path `+w.NginxTempDir+`/proxy;
    fastcgi_temp_path `+w.NginxTempDir+`/fastcgi;
    uwsgi_temp_path `+w.NginxTempDir+`/uwsgi;
    scgi_temp_path `+w.NginxTempDir+`/scgi;
    include `+w.VhostDir+`/*.conf;
}
`))
	if out, err := exec.Command(w.Nginx, "-t", "-q", "-p", dir+"/", "-c", main).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
}

// freeAddr is a loopback address with a port free right now (this
// internal test cannot import testenv: it imports this package).
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
