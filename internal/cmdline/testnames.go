//go:build !npanel_testnames

package cmdline

// AllowTestUsernames lets the server and the agent take account names under
// the reserved test prefix (validate.TestUserPrefix). Only a binary built
// with -tags npanel_testnames does, for suites that run the real binary as
// processes (chaos/) and remove those users again; a production build never
// can, whatever its flags.
const AllowTestUsernames = false
