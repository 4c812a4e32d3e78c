// Package browsertest drives Debian's chromium (headless, through the
// DevTools protocol with chromedp) against a service under test. Every
// request the page makes to anything but the service is blocked and
// recorded, and console errors, uncaught exceptions and Content-Security-
// Policy violations are collected, so a test can assert that a page works
// offline and cleanly.
package browsertest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Browser is one headless chromium with one tab.
type Browser struct {
	Ctx context.Context // run chromedp actions with it

	mu       sync.Mutex
	blocked  []string
	problems []string
}

// chromiumPath finds the browser: $CHROMIUM, or chromium on the PATH.
func chromiumPath() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no chromium: install Debian's chromium (apt-get install chromium) or set CHROMIUM")
}

// Open starts chromium for one test, allowing network access to service
// (a base URL such as http://127.0.0.1:1234) only. Without a browser the
// test fails on CI (CI set) and skips elsewhere.
func Open(t testing.TB, service string) *Browser {
	t.Helper()
	exe, err := chromiumPath()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip(err.Error() + "; set CI=true to make this a failure")
	}
	svc, err := url.Parse(service)
	if err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Belt and braces beside the request interception below: no name
		// but the service's resolves.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE "+svc.Hostname()),
		chromedp.WindowSize(1280, 860),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &Browser{Ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) { b.intercept(ctx, svc, ev) }); err != nil {
		t.Fatalf("start chromium (%s): %v", exe, err)
	}
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*"}}}); err != nil {
		t.Fatalf("chromium: intercept requests: %v", err)
	}
	go b.watchConsole(ctx)
	return b
}

// intercept lets requests to the service through and fails all others.
// It runs on chromedp's reading goroutine, so the answer goes from
// another one.
func (b *Browser) intercept(ctx context.Context, svc *url.URL, ev any) {
	e, ok := ev.(*fetch.EventRequestPaused)
	if !ok {
		return
	}
	go func() {
		u, err := url.Parse(e.Request.URL)
		if err == nil && (u.Scheme == "data" || u.Scheme == "blob" || u.Host == svc.Host) {
			_, _ = chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
			return
		}
		b.note(&b.blocked, e.Request.URL)
		_, _ = chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: e.RequestID, ErrorReason: network.ErrorReasonBlockedByClient})
	}()
}

// watchConsole collects errors: console.error, uncaught exceptions, and
// the browser's own error entries (CSP violations among them).
func (b *Browser) watchConsole(ctx context.Context) {
	for m, err := range chromedp.Console(ctx) {
		if err != nil {
			return
		}
		if m.IsException() || m.Type == "error" {
			b.note(&b.problems, m.String())
		}
	}
}

func (b *Browser) note(list *[]string, s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	*list = append(*list, s)
}

// Blocked lists the URLs outside the service that the page tried to load.
func (b *Browser) Blocked() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.blocked...)
}

// Problems lists console errors and uncaught exceptions so far.
func (b *Browser) Problems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

// Do runs steps with a time limit, failing the test with a screenshot
// when they fail.
func (b *Browser) Do(t testing.TB, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		path := b.Screenshot(t, "failed-"+safeName(t.Name()))
		t.Fatalf("%s: %v (screenshot: %s; console: %q)", what, err, path, b.Problems())
	}
}

// Screenshot saves the page as name.png and returns its path. With
// UPDATE_SCREENSHOTS=1 it writes into the repository's docs/ folder (the
// README's pictures); otherwise into $SCREENSHOT_DIR, or the system's
// temporary folder.
func (b *Browser) Screenshot(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	dir := os.Getenv("SCREENSHOT_DIR")
	if os.Getenv("UPDATE_SCREENSHOTS") == "1" {
		dir = DocsDir()
	}
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "twofactor-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// DocsDir is the repository's docs/ folder.
func DocsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "docs")
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == ':' {
			return '-'
		}
		return r
	}, s)
}

// Eval evaluates a JavaScript expression in the page, awaiting a promise,
// and returns its JSON value.
func Eval[T any](t testing.TB, b *Browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.Ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluate %q: %v (console: %q)", expr, err, b.Problems())
	}
	return v
}

// WaitFor waits until the JavaScript expression is truthy, failing the
// test (with a screenshot) after 30 seconds.
func (b *Browser) WaitFor(t testing.TB, what, expr string) {
	t.Helper()
	b.Do(t, "wait for "+what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond)))
}
