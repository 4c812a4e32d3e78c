package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/go-chi/chi/v5"

	"github.com/twofactor/service/internal/browsertest"
	"github.com/twofactor/service/web"
)

// TestDownloadErrors: how client.download (the console's Download CSV)
// reads the answers an export can end with: cut off after rows, a JSON
// error, a proxy's HTML page.
func TestDownloadErrors(t *testing.T) {
	r := chi.NewRouter()
	web.Mount(r, web.Config{})
	r.Get("/cut", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/csv")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, strings.Repeat("a,b\r\n", 5000))
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // as exportFailed after the first row
	})
	r.Get("/unauth", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errors":[{"message":"token expired","extensions":{"code":"TOKEN_EXPIRED"}}]}`)
	})
	r.Get("/proxy", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		_, _ = io.WriteString(w, "<html>bad gateway</html>")
	})
	r.Get("/t", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `<!doctype html><script type="module">
import { createClient } from '/assets/shared/graphql.js';
const c = createClient({ endpoint: '/query', token: 'x' });
window.out = {};
for (const p of ['/cut', '/unauth', '/proxy']) {
  c.download(p).then((b) => { window.out[p] = 'ok ' + b.size; }, (e) => { window.out[p] = 'err ' + e.code + ' ' + e.status; });
}
</script>`)
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	b := browsertest.Open(t, srv.URL)
	b.Do(t, "open", chromedp.Navigate(srv.URL+"/t"))
	b.WaitFor(t, "all answers", `window.out && Object.keys(window.out).length === 3`)
	got := browsertest.Eval[map[string]string](t, b, `window.out`)
	for p, want := range map[string]string{"/cut": "err DOWNLOAD_CUT_OFF", "/unauth": "err TOKEN_EXPIRED 401", "/proxy": "err BAD_RESPONSE 502"} {
		if !strings.HasPrefix(got[p], want) {
			t.Errorf("%s: %q, want %q", p, got[p], want)
		}
	}
}
