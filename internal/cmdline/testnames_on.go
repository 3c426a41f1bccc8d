//go:build npanel_testnames

package cmdline

const AllowTestUsernames = true
