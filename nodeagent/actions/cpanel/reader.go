package cpanel

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
)

// Limits bound what an archive may make the reader do. The zero value of a
// field means its default.
type Limits struct {
	// MaxEntries bounds the entries (the nested homedir.tar's included).
	MaxEntries int
	// MaxEntryBytes bounds one entry's size as its header states it; the
	// nested homedir.tar of the old layout is bound only by the total.
	MaxEntryBytes int64
	// MaxRatio and MinUncompressed bound the uncompressed total: it may
	// not pass max(MinUncompressed, MaxRatio × the archive's size). An
	// entry whose header size alone would pass it is refused before a
	// byte of it is read; a stream that passes it anyway (a gzip bomb)
	// is refused the moment it does.
	MaxRatio        int64
	MinUncompressed int64
}

// Defaults: a home's files compress 2-10×, SQL and logs up to ~30×; gzip
// cannot do better than ~1000×, which only degenerate data reaches.
const (
	DefaultMaxEntries      = 2_000_000
	DefaultMaxEntryBytes   = 8 << 30
	DefaultMaxRatio        = 100
	DefaultMinUncompressed = 1 << 30
)

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxEntryBytes <= 0 {
		l.MaxEntryBytes = DefaultMaxEntryBytes
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	if l.MinUncompressed <= 0 {
		l.MinUncompressed = DefaultMinUncompressed
	}
	return l
}

// EntryError refuses an archive because of one of its entries.
type EntryError struct {
	Entry  string // as the archive names it ("homedir.tar:NAME" inside the nested tar)
	Reason string
}

func (e *EntryError) Error() string {
	return fmt.Sprintf("archive refused: entry %q: %s", e.Entry, e.Reason)
}

// ErrCorrupt wraps what makes an archive unreadable (not gzip, a broken
// tar header, a truncated stream).
var ErrCorrupt = errors.New("corrupt archive")

// Layouts (CpanelReport.layout).
const (
	LayoutCpmove = "cpmove" // the home as a nested homedir.tar
	LayoutBackup = "backup" // the home as a homedir/ directory
)

// Entry is one member of an archive as the walk hands it over.
type Entry struct {
	// Raw is the name in the archive, for errors and the report.
	Raw string
	// Path is relative to the archive's top directory, slash-separated and
	// clean: "cp/USER", "homedir/public_html/index.php" (the nested
	// homedir.tar's entries too), "homedir" for the home itself.
	Path   string
	Header *tar.Header
	// R reads a regular file's content.
	R io.Reader
}

// InHome says whether the entry is in the account's home, and its path
// there.
func (e *Entry) InHome() (string, bool) {
	if e.Path == "homedir" {
		return ".", true
	}
	rel, ok := strings.CutPrefix(e.Path, "homedir/")
	return rel, ok
}

// Info is what the walk learnt about the archive as a whole.
type Info struct {
	Top, User, Layout string
	Entries           int
	Uncompressed      int64
}

// topRe matches the top directory cPanel's pkgacct writes: cpmove-USER or
// backup-M.D.YYYY_HH-MM-SS_USER.
var topRe = regexp.MustCompile(`^(?:cpmove-([a-z0-9][a-z0-9_.-]{0,31})|backup-\d{1,2}\.\d{1,2}\.\d{4}_\d{2}-\d{2}-\d{2}_([a-z0-9][a-z0-9_.-]{0,31}))$`)

// walker holds one walk's state.
type walker struct {
	lim   Limits
	bound int64 // the uncompressed total may not pass it
	count *countingReader
	// declared sums the regular files' sizes: a sparse entry expands
	// holes the compressed stream never carries, so count alone would
	// let a small archive write terabytes.
	declared int64
	info     Info
	files    map[string]bool // regular files seen (hard link targets)
	fn       func(*Entry) error
	curRaw   string
}

// countingReader counts the uncompressed bytes and stops a bomb.
type countingReader struct {
	r     io.Reader
	n     int64
	bound int64
	w     *walker
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.bound {
		return n, &EntryError{Entry: c.w.curRaw, Reason: fmt.Sprintf("the archive inflates past %d bytes (more than %d× its size): refused as a compression bomb", c.bound, c.w.lim.MaxRatio)}
	}
	return n, err
}

// Walk reads the gzipped tar archive r (size bytes on disk) in one pass,
// validating every entry before fn sees it. Any bad entry refuses the
// whole archive with an *EntryError naming it; fn's error stops the walk
// and is returned as is. fn must consume an entry's content (or not) before
// returning: the reader moves on after it.
func Walk(r io.Reader, size int64, lim Limits, fn func(*Entry) error) (*Info, error) {
	lim = lim.withDefaults()
	w := &walker{lim: lim, files: map[string]bool{}, fn: fn}
	w.bound = max(lim.MinUncompressed, lim.MaxRatio*size)
	zr, err := gzip.NewReader(bufio.NewReaderSize(r, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("%w: not a gzip archive: %v", ErrCorrupt, err)
	}
	w.count = &countingReader{r: zr, bound: w.bound, w: w}
	tr := tar.NewReader(w.count)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var ee *EntryError
			if errors.As(err, &ee) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: after entry %q: %v", ErrCorrupt, w.curRaw, err)
		}
		w.curRaw = h.Name
		if err := w.entry(h, tr, ""); err != nil {
			return nil, err
		}
	}
	if w.info.Top == "" {
		return nil, fmt.Errorf("%w: not a cPanel archive: it is empty", ErrCorrupt)
	}
	if w.info.Layout == "" {
		w.info.Layout = LayoutBackup
		if strings.HasPrefix(w.info.Top, "cpmove-") {
			w.info.Layout = LayoutCpmove
		}
	}
	w.info.Uncompressed = w.count.n
	return &w.info, nil
}

// cleanName checks a name from a tar header and returns it cleaned; raw is
// what errors name.
func cleanName(name, raw string) (string, error) {
	switch {
	case name == "":
		return "", &EntryError{Entry: raw, Reason: "empty name"}
	case strings.ContainsRune(name, 0):
		return "", &EntryError{Entry: raw, Reason: "NUL in the name"}
	case strings.HasPrefix(name, "/"):
		return "", &EntryError{Entry: raw, Reason: "absolute path"}
	}
	for _, el := range strings.Split(name, "/") {
		if el == ".." {
			return "", &EntryError{Entry: raw, Reason: "path leaves the archive (..)"}
		}
	}
	c := path.Clean(name)
	if c == "." {
		return ".", nil
	}
	return c, nil
}

// entry validates one header of the outer archive (nested == "") or of the
// nested homedir.tar (nested == its raw name) and hands it to fn.
func (w *walker) entry(h *tar.Header, r io.Reader, nested string) error {
	raw := h.Name
	if nested != "" {
		raw = nested + ":" + h.Name
	}
	w.info.Entries++
	if w.info.Entries > w.lim.MaxEntries {
		return &EntryError{Entry: raw, Reason: fmt.Sprintf("more than %d entries", w.lim.MaxEntries)}
	}
	name, err := cleanName(h.Name, raw)
	if err != nil {
		return err
	}
	var rel string
	if nested != "" {
		rel = "homedir"
		if name != "." {
			rel = "homedir/" + name
		}
	} else {
		top, rest, _ := strings.Cut(name, "/")
		if w.info.Top == "" {
			m := topRe.FindStringSubmatch(top)
			if m == nil {
				return &EntryError{Entry: raw, Reason: "not in a cpmove-USER/ or backup-DATE_USER/ directory: not a cPanel archive"}
			}
			w.info.Top, w.info.User = top, m[1]+m[2]
		}
		if top != w.info.Top {
			return &EntryError{Entry: raw, Reason: fmt.Sprintf("outside the archive's top directory %s/", w.info.Top)}
		}
		rel = rest
		if rel == "" {
			rel = "."
		}
	}
	if rel == "." {
		if h.Typeflag != tar.TypeDir {
			return &EntryError{Entry: raw, Reason: "the top directory is not a directory"}
		}
		return nil
	}

	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	case tar.TypeXGlobalHeader:
		return nil
	case tar.TypeChar, tar.TypeBlock:
		return &EntryError{Entry: raw, Reason: "device file"}
	case tar.TypeFifo:
		return &EntryError{Entry: raw, Reason: "named pipe"}
	default:
		return &EntryError{Entry: raw, Reason: fmt.Sprintf("unsupported entry type %q", h.Typeflag)}
	}
	if h.Size < 0 {
		return &EntryError{Entry: raw, Reason: "negative size"}
	}
	if h.Typeflag == tar.TypeReg {
		if h.Size > w.bound-w.count.n {
			return &EntryError{Entry: raw, Reason: fmt.Sprintf("size %d bytes passes the archive's bound of %d uncompressed bytes (the larger of %d and %d× the archive's size)", h.Size, w.bound, w.lim.MinUncompressed, w.lim.MaxRatio)}
		}
		homedirTar := nested == "" && rel == "homedir.tar"
		if h.Size > w.lim.MaxEntryBytes && !homedirTar {
			return &EntryError{Entry: raw, Reason: fmt.Sprintf("size %d bytes passes the limit of %d per file", h.Size, w.lim.MaxEntryBytes)}
		}
		if !homedirTar { // its entries are counted one by one
			if w.declared += h.Size; w.declared > w.bound {
				return &EntryError{Entry: raw, Reason: fmt.Sprintf("the files' sizes add up past the archive's bound of %d uncompressed bytes", w.bound)}
			}
		}
	}
	home := rel == "homedir" || strings.HasPrefix(rel, "homedir/")
	switch h.Typeflag {
	case tar.TypeSymlink:
		if err := w.checkSymlink(rel, h.Linkname, raw); err != nil {
			return err
		}
	case tar.TypeLink:
		target, err := cleanName(h.Linkname, raw)
		if err != nil {
			return &EntryError{Entry: raw, Reason: "hard link target " + err.(*EntryError).Reason}
		}
		if nested != "" {
			target = "homedir/" + target
		} else {
			t, rest, _ := strings.Cut(target, "/")
			if t != w.info.Top {
				return &EntryError{Entry: raw, Reason: "hard link to a file outside the archive"}
			}
			target = rest
		}
		if !home || !strings.HasPrefix(target, "homedir/") || !w.files[target] {
			return &EntryError{Entry: raw, Reason: fmt.Sprintf("hard link to %q, not a file of the home met before", h.Linkname)}
		}
	}

	if nested == "" && rel == "homedir.tar" && h.Typeflag == tar.TypeReg {
		w.info.Layout = LayoutCpmove
		return w.nested(h, r, raw)
	}
	if nested == "" && home && w.info.Layout == "" {
		w.info.Layout = LayoutBackup
	}
	if h.Typeflag == tar.TypeReg && home {
		w.files[rel] = true
	}
	e := &Entry{Raw: raw, Path: rel, Header: h}
	if h.Typeflag == tar.TypeReg {
		e.R = r
	}
	return w.fn(e)
}

// nested walks the old layout's homedir.tar as a stream inside the outer one.
func (w *walker) nested(h *tar.Header, r io.Reader, raw string) error {
	tr := tar.NewReader(io.LimitReader(r, h.Size))
	outer := w.curRaw
	defer func() { w.curRaw = outer }()
	if err := w.fn(&Entry{Raw: raw, Path: "homedir", Header: &tar.Header{Typeflag: tar.TypeDir, Name: "homedir", Mode: 0o711, ModTime: h.ModTime}}); err != nil {
		return err
	}
	for {
		ih, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			var ee *EntryError
			if errors.As(err, &ee) {
				return err
			}
			return fmt.Errorf("%w: %s after entry %q: %v", ErrCorrupt, raw, w.curRaw, err)
		}
		w.curRaw = raw + ":" + ih.Name
		if err := w.entry(ih, tr, raw); err != nil {
			return err
		}
	}
}

// checkSymlink refuses a symbolic link whose target leaves the home (a
// link in the home) or the archive (elsewhere). cPanel's absolute
// access-logs link is let through for the report to skip.
func (w *walker) checkSymlink(rel, target, raw string) error {
	if target == "" || strings.ContainsRune(target, 0) {
		return &EntryError{Entry: raw, Reason: "symbolic link with an empty or NUL target"}
	}
	if rel == AccessLogsLink && strings.HasPrefix(target, "/") {
		return nil
	}
	if strings.HasPrefix(target, "/") {
		return &EntryError{Entry: raw, Reason: fmt.Sprintf("symbolic link to the absolute path %q", target)}
	}
	dest := path.Join(path.Dir(rel), target)
	tree := rel
	if i := strings.IndexByte(rel, '/'); i >= 0 {
		tree = rel[:i]
	}
	if dest == ".." || strings.HasPrefix(dest, "../") || (tree == "homedir" && dest != "homedir" && !strings.HasPrefix(dest, "homedir/")) || dest == "." {
		return &EntryError{Entry: raw, Reason: fmt.Sprintf("symbolic link to %q leaves the %s", target, map[bool]string{true: "home", false: "archive"}[tree == "homedir"])}
	}
	return nil
}

// AccessLogsLink is cPanel's link from the home to the web server's logs,
// outside the home by design; it is reported, never extracted.
const AccessLogsLink = "homedir/access-logs"
