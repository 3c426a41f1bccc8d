package validate

import (
	"path"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CpanelDatabaseName is the suffix and full name a cPanel database or
// database user (name, of the cPanel user cpUser) takes in the nPanel
// account username: what follows cpUser's "cpUser_" prefix, or, for a name
// without it, the whole name in lower case with '-' and '.' as '_'
// (whole is then true). The importer names objects by it and the node
// seals a user's password hash under it, so both must use this one rule.
func CpanelDatabaseName(name, cpUser, username string) (suffix, full string, whole bool) {
	if s, ok := strings.CutPrefix(name, cpUser+"_"); ok && s != "" {
		return s, username + "_" + s, false
	}
	s := strings.ToLower(strings.NewReplacer("-", "_", ".", "_").Replace(name))
	return s, username + "_" + s, true
}

// A path in a node's import area is bounded, and so is each of its names
// (NAME_MAX).
const (
	maxArchivePath     = 1024
	maxArchivePathElem = 255
)

// CpanelArchivePath accepts the path of a cPanel archive in a node's
// import area: relative, clean, no hidden element (a fetch's partial
// download is hidden), printable, naming a .tar.gz or .tgz. The API and
// the node both check it, so a path one takes the other does too.
func CpanelArchivePath(p string) error {
	const field = "path"
	switch {
	case p == "":
		return fail(field, "must not be empty")
	case len(p) > maxArchivePath:
		return fail(field, "is %d bytes long; at most %d", len(p), maxArchivePath)
	case !utf8.ValidString(p):
		return fail(field, "must be valid UTF-8")
	case strings.IndexFunc(p, func(r rune) bool { return !unicode.IsPrint(r) || r == '\\' }) >= 0:
		return fail(field, "must not contain control characters or backslashes")
	case strings.HasPrefix(p, "/"):
		return fail(field, "must be relative to the node's import area, not absolute")
	case path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../"):
		return fail(field, "must be a clean path inside the import area (no .., . or //)")
	case !strings.HasSuffix(p, ".tar.gz") && !strings.HasSuffix(p, ".tgz"):
		return fail(field, "must name a .tar.gz or .tgz archive")
	}
	for _, el := range strings.Split(p, "/") {
		if strings.HasPrefix(el, ".") {
			return fail(field, "must not name a hidden file or directory (%q)", el)
		}
		if len(el) > maxArchivePathElem {
			return fail(field, "has a name of %d bytes; at most %d", len(el), maxArchivePathElem)
		}
	}
	return nil
}
