package web

import (
	"context"

	"github.com/npanel/npanel/nodeagent/actions"
)

// SetVhostExtra makes m's next renders add extra(domain) to a domain's
// server block (a directive nginx -t refuses, to test rollback).
func SetVhostExtra(m *Module, extra func(domain string) string) func() {
	m.vhostExtra = extra
	return func() { m.vhostExtra = nil }
}

// SetNoOpenBasedir makes m render pools of users for which off returns
// true without open_basedir.
func SetNoOpenBasedir(m *Module, off func(user string) bool) func() {
	m.noOpenBasedir = off
	return func() { m.noOpenBasedir = nil }
}

var (
	RenderVhostForTest = func(d vhostDataForTest) ([]byte, error) { return render(vhostTmpl, vhostData(d)) }
	SocketOfPool       = socketOfPool
)

type vhostDataForTest = vhostData

// RotateLogs runs one rotation pass with the given size limit.
func RotateLogs(ctx context.Context, m *Module, env *actions.Env, limit int64) ([]string, error) {
	return m.rotateLogs(ctx, env, limit)
}

var Tail = tail
