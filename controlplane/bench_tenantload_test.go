package controlplane_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// BenchmarkTenantSubscriptionLoad gives issue 23's figures for finding 2:
// goroutines and RSS after 10,000 accountEvents subscription attempts by
// one account user (opened and closed over 10 sockets, then as many held
// as the caps allow), and the PING round trip to a node, p50 and p99, idle
// and while that user keeps opening and closing subscriptions and sending
// 400-alias databases queries. Server, agent and client share the test
// process, so RSS is all three. Run with -benchtime Nx for N pings per
// phase.
func BenchmarkTenantSubscriptionLoad(b *testing.B) {
	l := setupTenantLoad(b)
	ctx := context.Background()
	pings := func(tag string) []time.Duration {
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			start := time.Now()
			task, err := l.s.Admin.Ping(ctx, "node-a", tag+strconv.Itoa(i), 20)
			if err != nil || task.Status != "SUCCEEDED" {
				b.Fatalf("ping %s: %+v %v", tag, task, err)
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}
	g0, rss0 := runtime.NumGoroutine(), rssMB()
	b.ResetTimer()
	idle := pings("idle")

	l.churn(b, ctx, 10, 10_000)
	// Then hold as many as the caps allow, and try 1,000 more.
	var held []*wsConn
	for c := range 5 {
		w := signInWS(b, ctx, l.s, l.token)
		held = append(held, w)
		for i := range 200 {
			w.subscribe(b, ctx, fmt.Sprintf("h%d-%d", c, i), l.account)
		}
	}
	time.Sleep(time.Second)
	b.ReportMetric(float64(l.s.Subscriptions()), "subscriptions_held")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0), "goroutines_added_holding")
	for _, w := range held {
		w.c.Close(websocket.StatusNormalClosure, "")
	}
	runtime.GC()
	b.ReportMetric(float64(runtime.NumGoroutine()-g0), "goroutines_added_after_10k")
	b.ReportMetric(rssMB()-rss0, "rss_added_MB")

	lctx, stop := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() { loadDone <- l.flood(lctx) }()
	loaded := pings("load")
	stop()
	if err := <-loadDone; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	reportNamed(b, "idle_ping_", idle)
	reportNamed(b, "loaded_ping_", loaded)
}

// flood opens and closes subscriptions and sends aliased databases
// queries until ctx ends; it may run beside the test's goroutine.
func (l *tenantLoad) flood(ctx context.Context) error {
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(l.s.URL(), "http")+"/graphql",
		&websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return err
	}
	defer c.CloseNow()
	go func() { // drain: the server's answers must not back up
		for {
			var m wsMsg
			if wsjson.Read(ctx, c, &m) != nil {
				return
			}
		}
	}()
	if err := wsjson.Write(ctx, c, map[string]any{"type": "connection_init", "payload": map[string]string{"Authorization": "Bearer " + l.token}}); err != nil {
		return err
	}
	query := aliasedDatabases(400)
	for i := 0; ctx.Err() == nil; i++ {
		id := strconv.Itoa(i)
		sub := map[string]any{"id": id, "type": "subscribe", "payload": map[string]any{"query": eventsQuery, "variables": map[string]any{"id": l.account}}}
		if wsjson.Write(ctx, c, sub) != nil || wsjson.Write(ctx, c, map[string]any{"id": id, "type": "complete"}) != nil {
			break
		}
		if i%200 == 0 {
			if err := l.user.Do(ctx, query, map[string]any{"a": l.account}, nil); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
	return nil
}

// rssMB reads the process's resident set from /proc.
func rssMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
