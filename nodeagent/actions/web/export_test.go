package web

// SetVhostExtra makes the next renders add extra(domain) to a domain's
// server block (a directive nginx -t refuses, to test rollback).
func SetVhostExtra(extra func(domain string) string) func() {
	testHookVhostExtra = extra
	return func() { testHookVhostExtra = nil }
}

// SetNoOpenBasedir renders pools of users for which off returns true
// without open_basedir.
func SetNoOpenBasedir(off func(user string) bool) func() {
	testHookNoOpenBasedir = off
	return func() { testHookNoOpenBasedir = nil }
}

var (
	RenderVhostForTest = func(d vhostDataForTest) ([]byte, error) { return render(vhostTmpl, vhostData(d)) }
	SocketOfPool       = socketOfPool
)

type vhostDataForTest = vhostData
