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
	}{
		{"localhost", true, "127.0.0.1:5000", "localhost:8080", true},
		{"127.0.0.1", true, "127.0.0.1:5000", "127.0.0.1:8080", true},
		{"ipv6 loopback", true, "[::1]:5000", "[::1]:8080", true},
		{"other loopback address", true, "127.0.0.2:5000", "127.0.0.1:8080", true},
		{"rebinding Host", true, "127.0.0.1:5000", "rebind.attacker.example:8080", false},
		{"rebinding Host without port", true, "127.0.0.1:5000", "rebind.attacker.example", false},
		{"localhost suffix", true, "127.0.0.1:5000", "localhost.attacker.example", false},
		{"remote visitor", true, "203.0.113.9:5000", "localhost:8080", false},
		{"production", false, "127.0.0.1:5000", "localhost:8080", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := router(web.Config{Embedded: tc.embedded, AdminToken: minted, DemoUserToken: minted})
			for _, path := range []string{"/", "/admin/"} {
				req := httptest.NewRequest(http.MethodGet, path, nil)
				req.RemoteAddr, req.Host = tc.remote, tc.host
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
