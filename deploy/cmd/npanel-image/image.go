package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type options struct {
	binary, out, tag, caBundle string
}

// The uid and gid the chart runs the server as (values.yaml
// podSecurityContext); named here so tools that map ids show "npanel".
const uid = 10001

// epoch is every file's and the config's time: the same binary gives the
// same image digest.
var epoch = time.Unix(0, 0).UTC()

func write(o options) (v1.Hash, error) {
	if _, err := os.Stat(o.out); err == nil {
		return v1.Hash{}, fmt.Errorf("%s exists; remove it first", o.out)
	}
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return v1.Hash{}, err
	}
	if len(bin) < 4 || !bytes.Equal(bin[:4], []byte("\x7fELF")) {
		return v1.Hash{}, fmt.Errorf("%s is not an ELF binary", o.binary)
	}
	var roots []byte
	if o.caBundle != "" {
		if roots, err = os.ReadFile(o.caBundle); err != nil {
			return v1.Hash{}, err
		}
	}
	img, err := build(bin, roots, o.tag)
	if err != nil {
		return v1.Hash{}, err
	}
	p, err := layout.Write(o.out, empty.Index)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": o.tag,
	})); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// build makes the image: one layer on nothing, linux/amd64, npanel as the
// entrypoint, running as the unprivileged npanel user.
func build(bin, roots []byte, version string) (v1.Image, error) {
	layerTar, err := rootfs(bin, roots)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: epoch}, CreatedBy: "npanel-image", Comment: "npanel " + version,
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config = v1.Config{
		Entrypoint: []string{"/usr/bin/npanel"},
		Cmd:        []string{"--help"},
		User:       fmt.Sprintf("%d:%d", uid, uid),
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":   "npanel",
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  "https://github.com/npanel/npanel",
		},
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs is the layer's tar: directories first, then files, in a fixed
// order and with fixed owners and times.
func rootfs(bin, roots []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	var errs []error
	for _, d := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "usr/", "usr/bin/", "var/", "var/lib/"} {
		errs = append(errs, dir(d, 0o755))
	}
	errs = append(errs, dir("tmp/", 0o1777))
	errs = append(errs,
		file("etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnpanel:x:%d:%d:npanel:/var/lib/npanel:/sbin/nologin\n", uid, uid)),
		file("etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\nnpanel:x:%d:\n", uid)),
	)
	if roots != nil {
		errs = append(errs, file("etc/ssl/certs/ca-certificates.crt", 0o644, roots))
	}
	errs = append(errs, file("usr/bin/npanel", 0o755, bin), tw.Close())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
