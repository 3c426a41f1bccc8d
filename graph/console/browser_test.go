package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// chromiumPath is the browser the tests drive: Debian's chromium, which
// make deps installs; NPANEL_CHROMIUM names another.
func chromiumPath() string {
	if p := os.Getenv("NPANEL_CHROMIUM"); p != "" {
		return p
	}
	return "/usr/bin/chromium"
}

// browser is one headless Chromium tab that records every request its page
// makes and lets through only those to the origin under test: the console
// must work where nothing else answers.
type browser struct {
	ctx    context.Context
	origin *url.URL

	mu       sync.Mutex
	requests []string                     // every URL the page asked for, in order
	foreign  []string                     // those not same-origin; blocked
	urls     map[network.RequestID]string // for the byte counts
	finished []loaded                     // responses since the last takeBytes
	sockets  []string                     // websocket URLs
	thrown   []string                     // uncaught exceptions
	// selfTest is set by the test of the guard itself, which makes foreign
	// requests on purpose.
	selfTest bool
}

// loaded is one response: its URL and the bytes it took on the wire
// (headers and body as sent, compressed where it was).
type loaded struct {
	url   string
	bytes float64
}

// cspRecorder runs before the page's own scripts (and is not subject to its
// policy) and keeps every Content-Security-Policy violation for the test.
const cspRecorder = `window.__csp = [];
document.addEventListener('securitypolicyviolation', e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));`

// requireChromium skips the test when Chromium is missing, or fails it
// under CI=true, and skips it under -short (unit tests only): call it
// before starting anything.
func requireChromium(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test; not with -short")
	}
	testenv.RequireDaemon(t, chromiumPath())
}

func newBrowser(t *testing.T, origin string) *browser {
	t.Helper()
	requireChromium(t)
	o, err := url.Parse(origin)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		// Whatever the page asks for beyond loopback (which Chromium never
		// proxies) goes to a proxy that is not there, websockets included:
		// the Fetch interception below blocks the rest.
		chromedp.ProxyServer("http://"+testenv.FreeAddr(t)),
	)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	b := &browser{ctx: ctx, origin: o, urls: map[network.RequestID]string{}}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromiumPath(), err)
	}
	err = chromedp.Listen(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *fetch.EventRequestPaused:
			// Commands may not run in the listener.
			go b.decide(ev)
		case *network.EventRequestWillBeSent:
			b.record(string(ev.RequestID), ev.Request.URL, false)
		case *network.EventWebSocketCreated:
			b.record(string(ev.RequestID), ev.URL, true)
		case *network.EventLoadingFinished:
			b.mu.Lock()
			b.finished = append(b.finished, loaded{b.urls[ev.RequestID], ev.EncodedDataLength})
			b.mu.Unlock()
		case *runtime.EventExceptionThrown:
			b.mu.Lock()
			b.thrown = append(b.thrown, ev.ExceptionDetails.Text+" "+fmt.Sprint(ev.ExceptionDetails.Exception))
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	b.call(t, "network", func() error {
		_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
		return err
	})
	b.call(t, "fetch", func() error {
		_, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*"}}})
		return err
	})
	b.call(t, "csp recorder", func() error {
		_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
		return err
	})
	t.Cleanup(func() { b.check(t) })
	return b
}

func (b *browser) call(t *testing.T, what string, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// sameOrigin reports whether u is the origin under test (ws for http, wss
// for https). data: URLs (GraphiQL's fonts, inside its stylesheet) are
// no requests.
func (b *browser) sameOrigin(raw string) bool {
	if strings.HasPrefix(raw, "data:") {
		return true
	}
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	scheme := map[string]string{"http": "http", "ws": "http", "https": "https", "wss": "https"}[u.Scheme]
	return scheme == b.origin.Scheme && u.Host == b.origin.Host
}

func (b *browser) record(id, raw string, socket bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.requests = append(b.requests, raw)
	b.urls[network.RequestID(id)] = raw
	if socket {
		b.sockets = append(b.sockets, raw)
	}
	if !b.sameOrigin(raw) {
		b.foreign = append(b.foreign, raw)
	}
}

func (b *browser) decide(ev *fetch.EventRequestPaused) {
	var err error
	if b.sameOrigin(ev.Request.URL) {
		_, err = chromedp.Call(b.ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: ev.RequestID})
	} else {
		_, err = chromedp.Call(b.ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
	}
	_ = err // the tab may be closing
}

// check fails the test for a request that left the origin, an uncaught
// exception or a policy violation.
func (b *browser) check(t *testing.T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.requests) == 0 {
		return
	}
	if len(b.foreign) > 0 && !b.selfTest {
		t.Errorf("the page asked for URLs outside %s (blocked): %v", b.origin, b.foreign)
	}
	if len(b.thrown) > 0 {
		t.Errorf("uncaught exceptions: %v", b.thrown)
	}
}

func (b *browser) violations(t *testing.T) []string {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`window.__csp || []`))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// takeBytes returns the responses finished since the last call and their
// total bytes.
func (b *browser) takeBytes() ([]loaded, float64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	got := b.finished
	b.finished = nil
	var sum float64
	for _, l := range got {
		sum += l.bytes
	}
	return got, sum
}

// waitJS evaluates expr, a JavaScript expression of a string, until it is
// not empty, and returns it. (chromedp.Poll would build a function with
// new Function inside the page, which the console's policy refuses.)
func (b *browser) waitJS(t *testing.T, what, expr string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// An error is retried: during a navigation there may be no
		// document to evaluate in.
		s, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](expr))
		if err == nil && s != "" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s (last error: %v)", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

const (
	jsFormReady = `(b => b && !b.disabled ? 'ready' : '')(document.getElementById('login-submit'))`
	jsGraphiQL  = `document.querySelector('.graphiql-execute-button') ? 'up' : ''`
	jsLoginErr  = `(e => e.hidden ? '' : e.textContent)(document.getElementById('login-error'))`
	// The editors are CodeMirror 5 instances, reachable from their wrappers.
	jsResult = `(cm => cm && cm.CodeMirror ? cm.CodeMirror.getValue() : '')(document.querySelector('.result-window .CodeMirror'))`
	jsQuery  = `(cm => cm && cm.CodeMirror ? cm.CodeMirror.getValue() : '')(document.querySelector('.graphiql-query-editor .CodeMirror'))`
)

func (b *browser) open(t *testing.T) {
	t.Helper()
	b.do(t, "navigate", chromedp.Navigate(b.origin.String()+"/graphql"))
	b.waitJS(t, "the sign-in form", jsFormReady)
}

func (b *browser) signIn(t *testing.T, user, password string) {
	t.Helper()
	b.do(t, "sign in",
		chromedp.SendKeys(chromedp.CSS("#username"), user),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS("#login-submit")),
	)
}

// run types the document into GraphiQL's query editor, presses its run
// button and returns what the result pane shows once it holds want.
func (b *browser) run(t *testing.T, doc, want string) string {
	t.Helper()
	b.do(t, "type the query",
		chromedp.Click(chromedp.CSS(".graphiql-query-editor .CodeMirror-lines")),
		chromedp.KeyEvent("a", chromedp.KeyModifiers(chromedp.ModifierCtrl)),
		// Typed as text input, as a paste would be: key by key, the
		// editor would add closing brackets of its own.
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: doc})
			return err
		}),
	)
	if got := b.waitJS(t, "the query editor", jsQuery); got != doc {
		t.Fatalf("query editor holds %q, want %q", got, doc)
	}
	b.do(t, "run", chromedp.Click(chromedp.CSS(".graphiql-execute-button")))
	return b.waitJS(t, "a result holding "+want,
		`(r => r.includes(`+jsString(want)+`) ? r : '')(`+jsResult+`)`)
}

func jsString(s string) string { return fmt.Sprintf("%q", s) }

// The console loads from the server alone, signs in through its form, runs
// a query with GraphiQL's editor and run button, and follows a
// subscription over a same-origin websocket.
func TestConsoleInBrowser(t *testing.T) {
	requireChromium(t)
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	s.FakeNode(t, "console-node", nil, 10, 10_000)
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "basic", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "consoleacct", Domain: "console.example.com", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, s.URL())
	b.open(t)
	b.signIn(t, "admin", testenv.AdminPassword)
	b.waitJS(t, "GraphiQL", jsGraphiQL)
	if result := b.run(t, "{ nodes { name } }", `"console-node"`); !strings.Contains(result, `"nodes"`) {
		t.Fatalf("result pane: %s", result)
	}

	// The token is in this tab's session only.
	token := b.waitJS(t, "the session", `(JSON.parse(sessionStorage.getItem('npanel.console.session') || '{}').token) || ''`)
	local, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`JSON.stringify(Object.assign({}, localStorage))`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(local, token) {
		t.Fatalf("the token is in localStorage: %s", local)
	}

	// A subscription replays the account's events so far: the first
	// arrives in the result pane over a websocket signed in with the token.
	sub := fmt.Sprintf(`subscription { accountEvents(id: %q) { status } }`, acct.ID)
	if result := b.run(t, sub, `"status"`); !strings.Contains(result, `"accountEvents"`) {
		t.Fatalf("subscription result: %s", result)
	}
	b.mu.Lock()
	sockets := slices.Clone(b.sockets)
	b.mu.Unlock()
	wantWS := "ws://" + b.origin.Host + "/graphql"
	if len(sockets) == 0 || sockets[0] != wantWS {
		t.Fatalf("websockets %v, want %s", sockets, wantWS)
	}

	// A reload keeps the tab's session.
	b.do(t, "reload", chromedp.Reload())
	b.waitJS(t, "GraphiQL after a reload", jsGraphiQL)

	if v := b.violations(t); len(v) > 0 {
		t.Fatalf("Content-Security-Policy violations: %v", v)
	}

	// Signing out forgets the token and shows the form again.
	b.do(t, "sign out", chromedp.Click(chromedp.CSS("#signout")))
	b.waitJS(t, "the form after signing out", jsFormReady)
	if left, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`sessionStorage.getItem('npanel.console.session') || ''`)); left != "" {
		t.Fatalf("session left after signing out: %s", left)
	}

	// Signing out everywhere revokes the token on the server too (and every
	// other login token of the user: this is the test's last use of admin).
	b.signIn(t, "admin", testenv.AdminPassword)
	b.waitJS(t, "GraphiQL", jsGraphiQL)
	token = b.waitJS(t, "the session", `(JSON.parse(sessionStorage.getItem('npanel.console.session') || '{}').token) || ''`)
	b.do(t, "sign out everywhere", chromedp.Click(chromedp.CSS("#signout-all")))
	if msg := b.waitJS(t, "the form after signing out everywhere", jsLoginErr); !strings.Contains(msg, "revoked") {
		t.Fatalf("message after signing out everywhere: %q", msg)
	}
	var me struct{ Me struct{ Name string } }
	err = client.New(s.URL(), token).Do(ctx, `{me{name}}`, nil, &me)
	if code := client.CodeOf(err); code != "UNAUTHENTICATED" {
		t.Fatalf("the console's token after signing out everywhere: %v (code %q)", err, code)
	}
}

// TestConsoleLoadFigures logs what the console costs on loopback: the bytes
// of a first load in a fresh profile, and the time from navigation to a
// query's result, in steps. It asserts no timing.
func TestConsoleLoadFigures(t *testing.T) {
	requireChromium(t)
	s := testenv.StartServer(t)
	b := newBrowser(t, s.URL())
	b.do(t, "blank", chromedp.Navigate("about:blank")) // the renderer is up, as in a browser in use
	b.takeBytes()

	start := time.Now()
	b.open(t)
	formReady := time.Since(start)
	first, firstBytes := b.takeBytes()
	nav := b.waitJS(t, "navigation timing", `(n => n && n.domContentLoadedEventEnd > 0 ? JSON.stringify({
		response: Math.round(n.responseEnd), dcl: Math.round(n.domContentLoadedEventEnd)}) : '')(performance.getEntriesByType('navigation')[0])`)

	typed := time.Now()
	b.signIn(t, "admin", testenv.AdminPassword)
	typing := time.Since(typed)
	b.waitJS(t, "GraphiQL", jsGraphiQL)
	signedIn := time.Since(typed) - typing
	// Two POSTs: the login, then GraphiQL's introspection of the schema,
	// which may end after GraphiQL is drawn.
	testenv.WaitFor(t, 30*time.Second, "the introspection", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		n := 0
		for _, l := range b.finished {
			if l.url == s.URL()+"/graphql" {
				n++
			}
		}
		return n >= 2
	})
	_, signInBytes := b.takeBytes()

	const doc = "{ nodes { name } }"
	b.run(t, doc, `"nodes"`)
	answered := time.Since(start)
	// The run alone: the button again, the editor already holds the query.
	b.takeBytes()
	b.do(t, "clear the result", chromedp.Evaluate[chromedp.Void](`document.querySelector('.result-window .CodeMirror').CodeMirror.setValue('')`))
	run := time.Now()
	b.do(t, "run", chromedp.Click(chromedp.CSS(".graphiql-execute-button")))
	b.waitJS(t, "the result", `(r => r.includes('"nodes"') ? r : '')(`+jsResult+`)`)
	ran := time.Since(run)
	_, runBytes := b.takeBytes()

	reload := time.Now()
	b.do(t, "reload", chromedp.Reload())
	b.waitJS(t, "GraphiQL after a reload", jsGraphiQL)
	reloaded := time.Since(reload)
	_, reloadBytes := b.takeBytes()

	t.Logf("first load, fresh profile, to the sign-in form: %.0f bytes in %d responses, %s (page timing %s ms)",
		firstBytes, len(first), formReady.Round(time.Millisecond), nav)
	for _, l := range first {
		t.Logf("  %7.0f  %s", l.bytes, strings.TrimPrefix(l.url, s.URL()))
	}
	t.Logf("sign-in click to GraphiQL ready: %s; the login and the schema's introspection took %.0f bytes",
		signedIn.Round(time.Millisecond), signInBytes)
	t.Logf("navigation to the query result: %s, of which %s typing the credentials and the query by CDP key events",
		answered.Round(time.Millisecond), typing.Round(time.Millisecond))
	t.Logf("run button to result shown: %s, %.0f bytes", ran.Round(time.Millisecond), runBytes)
	t.Logf("reload, signed in, assets from the cache: %s to GraphiQL, %.0f bytes", reloaded.Round(time.Millisecond), reloadBytes)
}

// A wrong password leaves the form up with the error on it.
func TestConsoleWrongPassword(t *testing.T) {
	requireChromium(t)
	s := testenv.StartServer(t)
	b := newBrowser(t, s.URL())
	b.open(t)
	b.signIn(t, "admin", "not-the-password")
	if msg := b.waitJS(t, "the error", jsLoginErr); !strings.Contains(msg, "Wrong username or password") {
		t.Fatalf("error shown: %q", msg)
	}
	if up, _ := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`!document.getElementById('app').hidden`)); up {
		t.Fatal("the console is shown after a failed sign-in")
	}
	// A few more failures from this address and the server throttles it:
	// the form says so, rather than "wrong password" again.
	for i := 0; ; i++ {
		b.do(t, "sign in again", chromedp.SendKeys(chromedp.CSS("#password"), "not-the-password"), chromedp.Click(chromedp.CSS("#login-submit")))
		msg := b.waitJS(t, "the error", jsLoginErr)
		if strings.Contains(msg, "Too many failed sign-ins") {
			t.Logf("attempt %d: %s", i+2, msg)
			break
		}
		if i == 10 {
			t.Fatalf("no throttling after %d failures: %q", i+2, msg)
		}
	}
	if v := b.violations(t); len(v) > 0 {
		t.Fatalf("Content-Security-Policy violations: %v", v)
	}
}

// The guard works: a page's requests to another origin are recorded and
// fail, whether on loopback (blocked by interception) or beyond it (sent to
// the dead proxy).
func TestBrowserBlocksOtherOrigins(t *testing.T) {
	requireChromium(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte("<!DOCTYPE html><title>no policy</title>"))
	}))
	t.Cleanup(srv.Close)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Errorf("a blocked request reached another loopback origin")
	}))
	t.Cleanup(other.Close)
	b := newBrowser(t, srv.URL)
	b.selfTest = true
	b.do(t, "navigate", chromedp.Navigate(srv.URL))
	for _, u := range []string{other.URL + "/x", "http://example.com/x"} {
		got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
			`fetch(`+jsString(u)+`, {mode: 'no-cors'}).then(() => 'loaded', e => 'failed: ' + e.message)`,
			chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, "failed") {
			t.Errorf("fetch %s: %s", u, got)
		}
		b.mu.Lock()
		recorded := slices.Contains(b.foreign, u)
		b.mu.Unlock()
		if !recorded {
			t.Errorf("fetch %s not recorded as foreign", u)
		}
	}
}
