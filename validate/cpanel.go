package validate

import "strings"

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
