package pebble

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	s := Start(t, Options{HTTPPort: FreePort(t), TLSPort: FreePort(t), CertificateValidity: time.Hour})
	ctx := context.Background()
	root, err := s.Root(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := s.Intermediate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc, ic := parse(t, root), parse(t, inter)
	if !rc.IsCA || ic.CheckSignatureFrom(rc) != nil {
		t.Fatalf("intermediate %q not signed by root %q", ic.Subject, rc.Subject)
	}
	if _, err := s.CertStatus(ctx, "0123"); err == nil {
		t.Error("status of an unknown serial")
	}
	s.Stop()
	if err := syscall.Kill(s.PID, 0); err == nil {
		t.Errorf("pebble %d still runs after Stop", s.PID)
	}
	if _, err := os.Stat(s.Dir); err != nil {
		t.Fatal(err)
	}
}

func parse(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("no PEM in %q", b)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
