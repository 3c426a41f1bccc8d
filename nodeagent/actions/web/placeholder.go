package web

import (
	"errors"
	"fmt"
	"html"
	"io"
	"io/fs"
	"os"

	"github.com/npanel/npanel/internal/atomicfile"
)

// PlaceholderName is the page a site's empty document root is given, so a
// new site answers 200 at once instead of nginx's 403 for a directory
// without an index.
const PlaceholderName = "index.html"

// placeholderPage is the page of a new site. It names the domain and
// nothing about the node: no host name, address or software version.
func placeholderPage(domain string) []byte {
	d := html.EscapeString(domain) // validated already; escaped anyway
	return []byte(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>` + d + `</title></head>
<body><h1>` + d + `</h1>
<p>This site is hosted on nPanel. Its owner has not published any content yet.</p></body>
</html>
`)
}

// writePlaceholder gives the document root dir (inside home) the
// placeholder page when it holds no entry at all. It never replaces
// anything: the page is written to a temporary file with its final owner
// and mode, then hard-linked to its name, which fails when a file of that
// name appeared meanwhile (the account uploading its own index at the same
// moment wins). A document root with any entry, even a hidden one, is the
// account's content and left alone.
func writePlaceholder(home *os.Root, dir, domain string, o Owner) (wrote bool, err error) {
	root, err := home.OpenRoot(dir)
	if err != nil {
		return false, err
	}
	defer root.Close()
	d, err := root.Open(".")
	if err != nil {
		return false, err
	}
	names, err := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return false, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	p, err := atomicfile.Create(root, PlaceholderName, 0o644, &atomicfile.Owner{UID: int(o.UID), GID: int(o.GID)})
	if err != nil {
		return false, err
	}
	defer p.Abort() // removes the temporary name; the link stays
	if _, err := p.Write(placeholderPage(domain)); err != nil {
		return false, err
	}
	if err := p.Sync(); err != nil {
		return false, err
	}
	if err := root.Link(p.TempName(), PlaceholderName); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("%s: %w", PlaceholderName, err)
	}
	p.Abort()
	return true, atomicfile.SyncDir(root)
}
