package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestWriteLayout writes an image from this test's own executable (an ELF
// binary standing in for npanel), reads the layout back and checks what
// the chart relies on: the entrypoint, the user, the binary's mode, and the
// same digest from the same input.
func TestWriteLayout(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(roots, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o := options{binary: self, out: filepath.Join(t.TempDir(), "oci"), tag: "0.1.0-test", caBundle: roots}
	digest, err := write(o)
	if err != nil {
		t.Fatal(err)
	}

	p, err := layout.FromPath(o.out)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != o.tag || im.Manifests[0].Digest != digest {
		t.Fatalf("index %+v: want one image %s tagged %s", im.Manifests, digest, o.tag)
	}
	img, err := p.Image(digest)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("image does not validate: %v", err)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want OCI", mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/bin/npanel" || cf.Config.User != "10001:10001" || cf.OS != "linux" || cf.Architecture != "amd64" {
		t.Errorf("config %+v: want entrypoint /usr/bin/npanel as 10001:10001 on linux/amd64", cf.Config)
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v: want one", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
		if h.Name == "usr/bin/npanel" {
			got, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("usr/bin/npanel differs from the binary given")
			}
		}
	}
	for name, mode := range map[string]int64{"usr/bin/npanel": 0o755, "etc/passwd": 0o644, "etc/ssl/certs/ca-certificates.crt": 0o644, "tmp/": 0o1777} {
		if h, ok := files[name]; !ok || h.Mode != mode || h.Uid != 0 {
			t.Errorf("%s: %+v, want mode %o owned by root", name, h, mode)
		}
	}

	// Reproducible: the same input, the same digest.
	o2 := o
	o2.out = filepath.Join(t.TempDir(), "oci")
	if d2, err := write(o2); err != nil || d2 != digest {
		t.Errorf("second build: %s, %v; want %s", d2, err, digest)
	}
	// Refuses what is not a binary, and an existing output.
	if _, err := write(o); err == nil {
		t.Errorf("wrote over an existing layout")
	}
	o3 := o
	o3.binary, o3.out = roots, filepath.Join(t.TempDir(), "oci")
	if _, err := write(o3); err == nil {
		t.Errorf("accepted a PEM file as the binary")
	}
}
