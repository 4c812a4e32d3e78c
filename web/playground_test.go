package web_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/twofactor/service/internal/browsertest"
)

// editor reads or writes one of GraphiQL's CodeMirror editors.
const (
	queryEditor    = `document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror`
	responseEditor = `document.querySelector('.graphiql-response .CodeMirror').CodeMirror`
)

// TestPlaygroundInBrowser: with everything but the service blocked, the
// playground loads, its Docs list the schema (so the first introspection
// carried the page's token), a query runs, and subscriptions, anonymous
// and named, stream events made by another client.
func TestPlaygroundInBrowser(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	b.Do(t, "open the playground", chromedp.Navigate(p.URL+"/"), chromedp.WaitVisible(".graphiql-container"))

	b.Do(t, "open the docs", chromedp.Click(`button[aria-label="Show Documentation Explorer"]`),
		chromedp.WaitVisible(`.graphiql-doc-explorer`))
	b.WaitFor(t, "the root types in the docs", `document.querySelector('.graphiql-doc-explorer').innerText.includes('query: Query')`)
	b.Do(t, "open Query", chromedp.Click(`//div[contains(@class,"graphiql-doc-explorer")]//a[text()="Query"]`))
	b.WaitFor(t, "twoFactorSettings in the docs", `document.querySelector('.graphiql-doc-explorer').innerText.includes('twoFactorSettings')`)

	run(t, b, `{ twoFactorSettings { general { deliveryMethod } } }`)
	b.WaitFor(t, "the query's result", responseEditor+`.getValue().includes('SMS_WITH_EMAIL_BACKUP')`)
	b.Screenshot(t, "playground")

	admin := p.Admin(t, p.Company)
	for i, sub := range []string{
		`subscription { auditEventAdded { node { action details } } }`,
		"# a named one\nsubscription Watch($f: AuditLogFilter = {actions: [DEFAULT_SETTINGS_CHANGED]}) {\n  auditEventAdded(filter: $f) { node { action details } }\n}",
	} {
		run(t, b, sub)
		// The page cannot tell when the server has the subscriber, and an
		// event made before that is not replayed (no `after`): make events
		// until one shows.
		arrived := false
		for try := 0; try < 30 && !arrived; try++ {
			admin.Must(t, `mutation($w: Boolean) { updateDefaultSettings(input: {web: $w}) { userErrors { code } } }`,
				map[string]any{"w": (i+try)%2 == 0}, nil)
			arrived = browsertest.Eval[bool](t, b, within(time.Second, responseEditor+`.getValue().includes('DEFAULT_SETTINGS_CHANGED')`))
		}
		if !arrived {
			t.Fatalf("subscription %d: no event reached the response pane; it shows %s", i, browsertest.Eval[string](t, b, responseEditor+".getValue()"))
		}
		b.Do(t, "stop the subscription", chromedp.Click(`.graphiql-execute-button`))
	}
	if got := browsertest.Eval[string](t, b, responseEditor+".getValue()"); strings.Contains(got, "errors") {
		t.Errorf("the subscription answered with errors: %s", got)
	}
	noProblems(t, b)
}

// run puts document in the query editor and presses the execute button.
func run(t *testing.T, b *browsertest.Browser, document string) {
	t.Helper()
	quoted := strings.NewReplacer("\\", "\\\\", "`", "\\`", "$", "\\$").Replace(document)
	browsertest.Eval[bool](t, b, queryEditor+".setValue(`"+quoted+"`) || true")
	b.Do(t, "execute", chromedp.Click(`.graphiql-execute-button`))
}

// within is a JavaScript promise that resolves to whether cond became
// true within d.
func within(d time.Duration, cond string) string {
	return fmt.Sprintf(`new Promise((done) => { const end = Date.now() + %d;
		const check = () => { if (%s) done(true); else if (Date.now() > end) done(false); else setTimeout(check, 50); };
		check(); })`, d.Milliseconds(), cond)
}
