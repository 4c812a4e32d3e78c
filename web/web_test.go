package web_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/web"
)

// TestVendorMatchesManifest: every embedded third-party file is the one
// web/vendor/update.sh copied from the pinned lockfile, and nothing else
// is there.
func TestVendorMatchesManifest(t *testing.T) {
	files := web.Files()
	manifest, err := fs.ReadFile(files, "vendor/dist/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(string(manifest)))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS: malformed line %q", sc.Text())
		}
		b, err := fs.ReadFile(files, "vendor/dist/"+name)
		if err != nil {
			t.Errorf("%s is in SHA256SUMS but not embedded: %v", name, err)
			continue
		}
		if got := sha256.Sum256(b); hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s does not match SHA256SUMS: run web/vendor/update.sh", name)
		}
		listed[name] = true
	}
	if len(listed) < 10 {
		t.Fatalf("SHA256SUMS lists only %d files", len(listed))
	}
	_ = fs.WalkDir(files, "vendor/dist", func(p string, d fs.DirEntry, err error) error {
		name := strings.TrimPrefix(p, "vendor/dist/")
		if err == nil && !d.IsDir() && name != "SHA256SUMS" && !listed[name] {
			t.Errorf("%s is embedded but not in SHA256SUMS", name)
		}
		return err
	})
}

// TestOwnFilesLoadNothingFromOutside: our pages and scripts name no
// outside URL to load (the browser tests check the same at run time).
func TestOwnFilesLoadNothingFromOutside(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href|from|import\(|url\()\s*=?\s*["']?(https?:)?//`)
	for _, dir := range []string{"playground", "admin", "login", "shared"} {
		_ = fs.WalkDir(web.Files(), dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, _ := fs.ReadFile(web.Files(), p)
			if m := external.Find(b); m != nil {
				t.Errorf("%s loads from outside the service: %q", p, m)
			}
			if strings.HasSuffix(p, ".html") && regexp.MustCompile(`<script>|<script [^>]*>[^<]|\son[a-z]+=|style=`).Match(b) {
				t.Errorf("%s has inline script, event handler or style, which the CSP blocks", p)
			}
			return nil
		})
	}
}

func router(cfg web.Config) http.Handler {
	r := chi.NewRouter()
	web.Mount(r, cfg)
	return r
}

func minted(ctx context.Context) (string, error) { return "minted-token", nil }

func TestPagesSecurityHeaders(t *testing.T) {
	h := router(web.Config{Embedded: true, AdminToken: minted, DemoUserToken: minted})
	for _, path := range []string{"/", "/playground", "/admin/", "/demo/login", "/assets/playground/playground.js"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: status %d", path, rec.Code)
			continue
		}
		for k, want := range map[string]string{
			"Content-Security-Policy": web.ContentSecurityPolicy,
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
		} {
			if got := rec.Header().Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", path, k, got, want)
			}
		}
	}
	for _, directive := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(web.ContentSecurityPolicy, directive) {
			t.Errorf("CSP lacks %q", directive)
		}
	}
	if strings.Contains(web.ContentSecurityPolicy, "unsafe") {
		t.Errorf("CSP allows something unsafe: %s", web.ContentSecurityPolicy)
	}
}

// TestPageTokenOnlyForLoopback: a page carries a minted token only in
// embedded mode when both the connection and the Host header are
// loopback, so a DNS-rebinding page gets none.
func TestPageTokenOnlyForLoopback(t *testing.T) {
	cases := []struct {
		name     string
		embedded bool
		remote   string
		host     string
		want     bool
		header   map[string]string
	}{
		{"localhost", true, "127.0.0.1:5000", "localhost:8080", true, nil},
		{"127.0.0.1", true, "127.0.0.1:5000", "127.0.0.1:8080", true, nil},
		{"ipv6 loopback", true, "[::1]:5000", "[::1]:8080", true, nil},
		{"other loopback address", true, "127.0.0.2:5000", "127.0.0.1:8080", true, nil},
		{"rebinding Host", true, "127.0.0.1:5000", "rebind.attacker.example:8080", false, nil},
		{"rebinding Host without port", true, "127.0.0.1:5000", "rebind.attacker.example", false, nil},
		{"localhost suffix", true, "127.0.0.1:5000", "localhost.attacker.example", false, nil},
		{"remote visitor", true, "203.0.113.9:5000", "localhost:8080", false, nil},
		{"production", false, "127.0.0.1:5000", "localhost:8080", false, nil},
		// A proxy or tunnel on this machine makes every visitor look local.
		{"X-Forwarded-For", true, "127.0.0.1:5000", "localhost:8080", false, map[string]string{"X-Forwarded-For": "203.0.113.9"}},
		{"Forwarded", true, "127.0.0.1:5000", "localhost:8080", false, map[string]string{"Forwarded": "for=203.0.113.9"}},
		{"Via", true, "127.0.0.1:5000", "localhost:8080", false, map[string]string{"Via": "1.1 proxy"}},
		{"X-Real-IP", true, "127.0.0.1:5000", "localhost:8080", false, map[string]string{"X-Real-IP": "203.0.113.9"}},
		// Another site's <img> or fetch, in the visitor's own browser.
		{"cross-site", true, "127.0.0.1:5000", "localhost:8080", false, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site", true, "127.0.0.1:5000", "localhost:8080", false, map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"as an image", true, "127.0.0.1:5000", "localhost:8080", false, map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "image"}},
		{"typed in", true, "127.0.0.1:5000", "localhost:8080", true, map[string]string{"Sec-Fetch-Site": "none", "Sec-Fetch-Dest": "document"}},
		{"same-origin link", true, "127.0.0.1:5000", "localhost:8080", true, map[string]string{"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Dest": "document"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := router(web.Config{Embedded: tc.embedded, AdminToken: minted, DemoUserToken: minted})
			for _, path := range []string{"/", "/admin/"} {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				req.RemoteAddr, req.Host = tc.remote, tc.host
				for k, v := range tc.header {
					req.Header.Set(k, v)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				cfg := pageConfigOf(t, rec.Body.String())
				if got := cfg["token"] == "minted-token"; got != tc.want {
					t.Errorf("%s: token in page = %v, want %v", path, got, tc.want)
				}
				if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
					t.Errorf("%s: Cache-Control = %q, want no-store", path, cc)
				}
			}
		})
	}
}

func pageConfigOf(t *testing.T, page string) map[string]any {
	t.Helper()
	m := regexp.MustCompile(`<meta name="twofactor-config" content="([^"]*)">`).FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no config meta tag in page:\n%s", page)
	}
	var cfg map[string]any
	raw := strings.NewReplacer("&#34;", `"`, "&quot;", `"`, "&amp;", "&", "&lt;", "<", "&gt;", ">", "&#39;", "'").Replace(m[1])
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("config meta %q: %v", raw, err)
	}
	return cfg
}

// TestPageConfigHostileValues: the issuer (ASSERTION_ISSUER) and a minted
// token are operator or service values, but the page must carry them as
// data whatever they hold: they stay inside the meta tag's attribute and
// read back unchanged, and no markup of theirs reaches the page.
func TestPageConfigHostileValues(t *testing.T) {
	const evil = `"><script>alert(1)</script><meta name="twofactor-config" content='{"endpoint":"//evil.example"}'>&amp;`
	mint := func(context.Context) (string, error) { return evil, nil }
	h := router(web.Config{Embedded: true, Issuer: evil, AdminToken: mint, DemoUserToken: mint})
	for _, path := range []string{"/", "/admin/", "/demo/login"} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.RemoteAddr, req.Host = "127.0.0.1:1", "localhost:8080"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body := rec.Body.String()
		if strings.Contains(body, "alert(1)</script>") || strings.Count(body, `name="twofactor-config"`) != 1 {
			t.Errorf("%s: the hostile value escaped its attribute:\n%s", path, body)
		}
		cfg := pageConfigOf(t, body)
		if cfg["issuer"] != evil || cfg["token"] != evil || cfg["endpoint"] != "/query" {
			t.Errorf("%s: config = %v, want the values back unchanged and endpoint /query", path, cfg)
		}
	}
}

func TestPageWithoutTokenWhenMintingFails(t *testing.T) {
	failing := func(context.Context) (string, error) { return "", errors.New("db down") }
	h := router(web.Config{Embedded: true, AdminToken: failing, DemoUserToken: failing})
	req := httptest.NewRequest(http.MethodGet, "/admin/", nil)
	req.RemoteAddr, req.Host = "127.0.0.1:1", "localhost"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || pageConfigOf(t, rec.Body.String())["token"] != nil {
		t.Errorf("status %d, config %v: want the page, asking for a token", rec.Code, pageConfigOf(t, rec.Body.String()))
	}
}

func TestDemoLoginServedOnlyWhenEnabled(t *testing.T) {
	for _, tc := range []struct {
		cfg  web.Config
		want int
	}{
		{web.Config{}, http.StatusNotFound},
		{web.Config{Embedded: true}, http.StatusOK},
		{web.Config{DemoPages: true}, http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		router(tc.cfg).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/demo/login", nil))
		if rec.Code != tc.want {
			t.Errorf("embedded=%v demoPages=%v: /demo/login status %d, want %d", tc.cfg.Embedded, tc.cfg.DemoPages, rec.Code, tc.want)
		}
	}
}

func TestAssets(t *testing.T) {
	h := router(web.Config{})
	get := func(path string, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	js := get("/assets/vendor/dist/graphiql.min.js")
	if rec := get("/assets/vendor/dist/graphiql.min.js", "Range", "bytes=0-0,1-1,2-2,3-3,4-4,5-5"); rec.Code != http.StatusOK || rec.Body.Len() != js.Body.Len() {
		t.Errorf("many ranges: %d with %d bytes, want the whole file once", rec.Code, rec.Body.Len())
	}
	if rec := get("/assets/vendor/dist/graphiql.min.js", "Range", "bytes=0-9"); rec.Code != http.StatusPartialContent || rec.Body.Len() != 10 {
		t.Errorf("one range: %d with %d bytes, want 206 with 10", rec.Code, rec.Body.Len())
	}
	if js.Code != http.StatusOK || !strings.Contains(js.Header().Get("Content-Type"), "javascript") {
		t.Fatalf("graphiql.min.js: %d %q", js.Code, js.Header().Get("Content-Type"))
	}
	if again := get("/assets/vendor/dist/graphiql.min.js", "If-None-Match", js.Header().Get("ETag")); again.Code != http.StatusNotModified {
		t.Errorf("revalidation with the ETag: %d, want 304", again.Code)
	}
	for _, path := range []string{"/assets/", "/assets/vendor/", "/assets/vendor/dist/jose", "/assets/admin/index.html",
		"/assets/nope.js", "/assets/../web.go", "/assets/%2e%2e/web.go"} {
		if rec := get(path); rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, rec.Code)
		}
	}
}

// TestDemoLoginLoadChangesNothing: the demo user is made on the first
// load by a person on this machine; after that, loading the login screen
// (which another site can make a browser do) writes nothing and leaves an
// admin's choices standing. Another site's load never creates them.
func TestDemoLoginLoadChangesNothing(t *testing.T) {
	company := testenv.Company(t)
	p := apptest.Start(t, func(o *app.Options) { o.Embedded, o.DemoCompany = true, company })
	admin := p.Admin(t, company)
	loadLogin(t, p.URL, "cross-site")
	if n := auditCount(t, admin); n != 0 {
		t.Fatalf("a cross-site load of the login screen wrote %d audit rows", n)
	}
	loadLogin(t, p.URL, "none")
	var u struct {
		User struct{ TwoFactor struct{ Web bool } }
	}
	admin.Must(t, `{ user(id: "demo-user") { twoFactor { web } } }`, nil, &u)
	if !u.User.TwoFactor.Web {
		t.Fatalf("the demo user should exist with 2FA on for the Web app after the first load")
	}
	admin.Must(t, `mutation { setUserTwoFactor(input: {userId: "demo-user", app: WEB, enabled: false}) { userErrors { code } } }`, nil, nil)
	before := auditCount(t, admin)
	for _, site := range []string{"cross-site", "same-origin", "none", ""} {
		loadLogin(t, p.URL, site)
	}
	admin.Must(t, `{ user(id: "demo-user") { twoFactor { web } } }`, nil, &u)
	if u.User.TwoFactor.Web {
		t.Errorf("loading the login screen switched the demo user's 2FA back on")
	}
	if after := auditCount(t, admin); after != before {
		t.Errorf("loading the login screen wrote %d audit rows", after-before)
	}
}

// loadLogin opens /demo/login as a browser would with Sec-Fetch-Site site
// ("" for a client that sends none).
func loadLogin(t *testing.T, base, site string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/demo/login", nil)
	if site != "" {
		req.Header.Set("Sec-Fetch-Site", site)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/demo/login: %d", resp.StatusCode)
	}
}

func auditCount(t *testing.T, c *apptest.Client) int {
	t.Helper()
	var log struct{ AuditLog struct{ Edges []any } }
	c.Must(t, `{ auditLog(first: 100) { edges { cursor } } }`, nil, &log)
	return len(log.AuditLog.Edges)
}
