package web_test

import (
	"testing"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/browsertest"
	"github.com/twofactor/service/internal/demo"
	"github.com/twofactor/service/internal/testenv"
)

// page is one browser test's world: the service in embedded mode, the
// company its pages act for, and a browser that can reach nothing else.
type page struct {
	*apptest.Server
	Company string
	B       *browsertest.Browser
}

// startEmbedded runs the service as `go run .` does (embedded mode: pages
// opened from this machine get demo tokens). On real backends the pages
// act for a company of this test's own instead of "demo", since tests
// share Redis; embedded backends are the test's own.
func startEmbedded(t *testing.T) page {
	t.Helper()
	company := demo.Company
	if testenv.Real() {
		company = testenv.Company(t)
	}
	s := apptest.Start(t, func(o *app.Options) { o.Embedded, o.DemoCompany = true, company })
	return page{Server: s, Company: company, B: browsertest.Open(t, s.URL)}
}

// noProblems fails the test if the page tried to reach anything outside
// the service or logged an error (CSP violations included).
func noProblems(t *testing.T, b *browsertest.Browser) {
	t.Helper()
	if blocked := b.Blocked(); len(blocked) > 0 {
		t.Errorf("the page tried to load %d URLs outside the service: %q", len(blocked), blocked)
	}
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("console errors: %q", p)
	}
}
