// Package web serves the pages a person opens in a browser: the GraphQL
// playground, the admin console and the reference login screen. Every file
// is embedded in the binary, including the pinned third-party libraries in
// vendor/dist, so the pages load nothing from outside the service.
package web

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
)

//go:embed playground admin login shared vendor/dist
var files embed.FS

// Files is everything the pages are made of, for tests.
func Files() fs.FS { return files }

// Config is what the pages need from the service.
type Config struct {
	// Embedded is embedded mode: a visitor on this machine gets tokens
	// minted for the page, and the demo login screen is served.
	Embedded bool
	// DemoPages serves the demo login screen outside embedded mode too
	// (without minted tokens).
	DemoPages bool
	// AdminToken mints a demo admin token for one page load.
	AdminToken func(context.Context) (string, error)
	// DemoUserToken makes sure the demo user exists with 2FA on and mints
	// a user token for it.
	DemoUserToken func(context.Context) (string, error)
	// Issuer is the iss of challenge assertions, which pages check.
	Issuer string
	Logger *slog.Logger
}

// pageConfig is handed to a page's script in a <meta> tag: the CSP allows
// no inline script.
type pageConfig struct {
	Endpoint string `json:"endpoint"`
	// Token is set only for a loopback visitor in embedded mode.
	Token    string `json:"token,omitempty"`
	Embedded bool   `json:"embedded"`
	Issuer   string `json:"issuer,omitempty"`
}

// ContentSecurityPolicy is sent with every page. Scripts, styles and
// connections are the service's own; GraphiQL's stylesheet carries its
// fonts and icons as data: URLs.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"

// Mount adds the pages' routes to r.
func Mount(r chi.Router, cfg Config) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	type page struct {
		dir   string // its folder here, holding index.html
		token func(context.Context) (string, error)
	}
	pages := map[string]page{
		"/":           {"playground", cfg.AdminToken},
		"/playground": {"playground", cfg.AdminToken},
		"/admin/":     {"admin", cfg.AdminToken},
	}
	if cfg.Embedded || cfg.DemoPages {
		pages["/demo/login"] = page{"login", cfg.DemoUserToken}
	}
	for route, p := range pages {
		r.Get(route, cfg.page(mustTemplate(p.dir), p.token))
	}
	r.Get("/admin", http.RedirectHandler("/admin/", http.StatusMovedPermanently).ServeHTTP)
	r.Get("/assets/*", assets().ServeHTTP)
}

func mustTemplate(dir string) *template.Template {
	return template.Must(template.ParseFS(files, dir+"/index.html"))
}

// page renders one page. A token is minted only when the service runs
// embedded and MintFor allows it.
func (cfg Config) page(tpl *template.Template, token func(context.Context) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		pc := pageConfig{Endpoint: "/query", Embedded: cfg.Embedded, Issuer: cfg.Issuer}
		if cfg.Embedded && token != nil && MintFor(r) {
			t, err := token(r.Context())
			if err != nil {
				cfg.Logger.ErrorContext(r.Context(), "mint page token", "err", err)
			}
			pc.Token = t
		}
		raw, err := json.Marshal(pc)
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		securityHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// A page may carry a token minted for this load: never cache it.
		w.Header().Set("Cache-Control", "no-store")
		if err := tpl.Execute(w, map[string]string{"Config": string(raw)}); err != nil {
			cfg.Logger.ErrorContext(r.Context(), "render page", "err", err)
		}
	}
}

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// MintFor reports whether a page load may get a token: a person on this
// machine opening the page directly. The connection and the Host header
// must be loopback (a loopback connection alone could be a DNS-rebinding
// page in the visitor's browser); nothing may have forwarded it (a proxy
// or tunnel on this machine makes every visitor look local); and a
// browser must say it is a top-level navigation from this origin or typed
// in, not another site's <img> or fetch.
func MintFor(r *http.Request) bool {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip", "Via"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	if d := r.Header.Get("Sec-Fetch-Dest"); d != "" && d != "document" {
		return false
	}
	return loopbackRequest(r)
}

// loopbackRequest reports whether the connection comes from this machine
// and the Host header names this machine.
func loopbackRequest(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !isLoopbackHost(host) {
		return false
	}
	h := r.Host
	if hh, _, err := net.SplitHostPort(h); err == nil {
		h = hh
	}
	return isLoopbackHost(strings.Trim(h, "[]"))
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// assets serves the embedded files under /assets/, with a content hash as
// ETag so browsers revalidate cheaply. Folders are not listed and the
// pages' templates are not served.
func assets() http.Handler {
	etags := map[string]string{}
	_ = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Base(p) == "index.html" {
			return err
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags[p] = `"` + hex.EncodeToString(sum[:12]) + `"`
		return nil
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Count(r.Header.Get("Range"), ",") >= maxRanges {
			// Many small ranges would make a small request cost the whole
			// file many times over: send the file once instead.
			r.Header.Del("Range")
		}
		p := strings.TrimPrefix(r.URL.Path, "/assets/")
		etag, ok := etags[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		f, err := files.Open(p)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		securityHeaders(w.Header())
		w.Header().Set("ETag", etag)
		w.Header().Set("Cache-Control", "no-cache")
		http.ServeContent(w, r, p, time.Time{}, f.(io.ReadSeeker))
	})
}

// maxRanges is the most byte ranges one asset request may ask for.
const maxRanges = 4
