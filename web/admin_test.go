package web_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/browsertest"
	"github.com/twofactor/service/internal/testenv"
)

// socketControl replaces the page's WebSocket before any of its scripts
// run, so a test can drop the live connection (window.__ws.drop()) and
// hold new connections back (hold/release) while it writes events: the
// page must then resume from its last cursor. Nothing else changes: the
// real socket carries everything.
const socketControl = `(() => {
  const Real = window.WebSocket;
  const all = [];
  let held = false, waiting = [];
  class Controlled {
    constructor(url, protocols) {
      this.url = url; this._protocols = protocols; this.readyState = 0; this.protocol = '';
      this.onopen = this.onclose = this.onerror = this.onmessage = null;
      all.push(this);
      if (held) waiting.push(this); else this._connect();
    }
    _connect() {
      if (this.readyState > 1) return;
      const ws = this._ws = new Real(this.url, this._protocols);
      ws.onopen = (e) => { this.readyState = 1; this.protocol = ws.protocol; this.onopen && this.onopen(e); };
      ws.onmessage = (e) => this.onmessage && this.onmessage(e);
      ws.onerror = (e) => this.onerror && this.onerror(e);
      ws.onclose = (e) => { this.readyState = 3; this.onclose && this.onclose(e); };
    }
    send(d) { this._ws.send(d); }
    close(code, reason) {
      if (this._ws) { this.readyState = 2; this._ws.close(code, reason); return; }
      this.readyState = 3;
      waiting = waiting.filter((s) => s !== this);
      this.onclose && this.onclose({ code: code || 1000, reason: reason || '', wasClean: true });
    }
  }
  Object.assign(Controlled, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = Controlled;
  window.__ws = {
    open: () => all.filter((s) => s.readyState === 1).length,
    waiting: () => waiting.length,
    drop() { for (const s of all) if (s._ws && s.readyState === 1) s._ws.close(3000, 'dropped by the test'); },
    hold() { held = true; },
    release() { held = false; const w = waiting; waiting = []; for (const s of w) s._connect(); },
  };
})();`

func controlSockets(t *testing.T, b *browsertest.Browser) {
	t.Helper()
	b.Do(t, "install the socket control", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.Call(ctx, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: socketControl})
		return err
	}))
}

// openConsole opens the console on a tab and waits until it is signed in.
func openConsole(t *testing.T, p page, hash string) {
	t.Helper()
	p.B.Do(t, "open the admin console", chromedp.Navigate(p.URL+"/admin/"+hash), chromedp.WaitVisible("#console"))
}

type auditNode struct {
	ID        string          `json:"id"`
	Action    string          `json:"action"`
	App       *string         `json:"app"`
	Details   json.RawMessage `json:"details"`
	CreatedAt string          `json:"createdAt"`
	Actor     struct {
		ID          string  `json:"id"`
		DisplayName *string `json:"displayName"`
	} `json:"actor"`
	TargetUser *struct {
		ID          string  `json:"id"`
		DisplayName *string `json:"displayName"`
	} `json:"targetUser"`
}

// auditLog reads the whole log for filter through the API, newest first.
func auditLog(t *testing.T, c *apptest.Client, filter map[string]any) []auditNode {
	t.Helper()
	var all []auditNode
	var after any
	for {
		var d struct {
			AuditLog struct {
				Edges []struct {
					Node auditNode `json:"node"`
				} `json:"edges"`
				PageInfo struct {
					HasNextPage bool   `json:"hasNextPage"`
					EndCursor   string `json:"endCursor"`
				} `json:"pageInfo"`
			} `json:"auditLog"`
		}
		c.Must(t, `query($after: String, $filter: AuditLogFilter) {
			auditLog(first: 100, after: $after, filter: $filter) {
				edges { node { id action app details createdAt actor { id displayName } targetUser { id displayName } } }
				pageInfo { hasNextPage endCursor }
			}
		}`, map[string]any{"after": after, "filter": filter}, &d)
		for _, e := range d.AuditLog.Edges {
			all = append(all, e.Node)
		}
		if !d.AuditLog.PageInfo.HasNextPage {
			return all
		}
		after = d.AuditLog.PageInfo.EndCursor
	}
}

func ids(nodes []auditNode) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID
	}
	return out
}

// tableIDs lists the event ids of the audit table's rows, top to bottom.
func tableIDs(t *testing.T, b *browsertest.Browser) []string {
	t.Helper()
	return browsertest.Eval[[]string](t, b, `Array.from(document.querySelectorAll('#audit-table tbody tr')).map((r) => r.dataset.id)`)
}

func createUser(t *testing.T, c *apptest.Client, input map[string]any) {
	t.Helper()
	var d struct {
		CreateUser struct {
			UserErrors []struct{ Message string } `json:"userErrors"`
		} `json:"createUser"`
	}
	c.Must(t, `mutation($input: CreateUserInput!) { createUser(input: $input) { userErrors { message } } }`,
		map[string]any{"input": input}, &d)
	if len(d.CreateUser.UserErrors) > 0 {
		t.Fatalf("createUser %v: %+v", input, d.CreateUser.UserErrors)
	}
}

// setValue picks a value in a form control as a person would: the value
// changes and the control fires change.
func setValue(sel, value string) chromedp.Action[chromedp.Void] {
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event('change', { bubbles: true })); })()`, sel, value)
	return chromedp.Evaluate[chromedp.Void](js)
}

// userCellJS defines, in the page, rows() (the audit table's rows) and
// userCell(row): the User cell as seen, "Actor → Target".
const userCellJS = `(() => {
	window.rows = () => Array.from(document.querySelectorAll('#audit-table tbody tr'));
	window.userCell = (r) => {
		const a = r.querySelector('.cell-user .actor'), t = r.querySelector('.cell-user .target');
		return a.textContent + (t ? ' → ' + t.textContent : '');
	};
	return true;
})()`

// clearField empties a text field as select-all and delete would.
func clearField(sel string) chromedp.Action[chromedp.Void] {
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = ''; e.dispatchEvent(new Event('input', { bubbles: true })); })()`, sel)
	return chromedp.Evaluate[chromedp.Void](js)
}

func TestAdminGeneralSettingsAndLiveAuditLog(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	admin := p.Admin(t, p.Company)
	controlSockets(t, b)
	openConsole(t, p, "")
	b.WaitFor(t, "the settings to load", `document.querySelector('#dm-sms').checked`)
	if got := browsertest.Eval[string](t, b, `location.hash`); got != "#general" {
		t.Errorf("hash = %q, want #general", got)
	}
	if who := browsertest.Eval[string](t, b, `document.querySelector('#whoami').textContent`); !strings.Contains(who, "Demo Admin") || !strings.Contains(who, p.Company) {
		t.Errorf("header shows %q, want the admin's name and company %s", who, p.Company)
	}
	if browsertest.Eval[bool](t, b, `!document.querySelector('#general-save').disabled`) {
		t.Error("Save is enabled before anything changed")
	}

	// A bad email comes back as a user error next to its field.
	b.Do(t, "fill in a contact person with a bad email",
		chromedp.SendKeys("#cp-name", "IT desk"),
		chromedp.SendKeys("#cp-email", "not-an-email"),
		chromedp.SendKeys("#cp-phone", "+37120000000"),
		chromedp.Click("#general-save"))
	b.WaitFor(t, "the email's error", `!document.querySelector('#err-contactPerson-email').hidden`)
	if got := browsertest.Eval[string](t, b, `document.querySelector('#cp-email').getAttribute('aria-invalid') + ' ' + document.querySelector('#cp-email').getAttribute('aria-describedby')`); !strings.Contains(got, "true") || !strings.Contains(got, "err-contactPerson-email") {
		t.Errorf("email field: aria-invalid and aria-describedby = %q", got)
	}

	// Fixed, with Email only: saved, and the API agrees.
	b.Do(t, "fix the email, pick Email only and save",
		clearField("#cp-email"),
		chromedp.SendKeys("#cp-email", "it@example.com"),
		chromedp.Click(`label[for="dm-email"]`),
		chromedp.Click("#general-save"))
	b.WaitFor(t, "Saved", `document.querySelector('#general-status').textContent === 'Saved' && document.querySelector('#general-save').disabled`)
	if browsertest.Eval[string](t, b, `document.querySelector('#cp-email').getAttribute('aria-invalid') || ''`) == "true" {
		t.Error("the email field is still marked invalid after saving")
	}
	var s struct {
		TwoFactorSettings struct {
			General struct {
				DeliveryMethod string `json:"deliveryMethod"`
				ContactPerson  *struct {
					Name, Email, Phone string
				} `json:"contactPerson"`
			} `json:"general"`
		} `json:"twoFactorSettings"`
	}
	admin.Must(t, `{ twoFactorSettings { general { deliveryMethod contactPerson { name email phone } } } }`, nil, &s)
	if g := s.TwoFactorSettings.General; g.DeliveryMethod != "EMAIL_ONLY" || g.ContactPerson == nil ||
		g.ContactPerson.Name != "IT desk" || g.ContactPerson.Email != "it@example.com" || g.ContactPerson.Phone != "+37120000000" {
		t.Fatalf("settings through the API: %+v %+v", g, g.ContactPerson)
	}
	b.Screenshot(t, "admin-general")

	// The Audit log tab shows that change.
	b.Do(t, "open the Audit log tab", chromedp.Click("#tab-audit"))
	b.WaitFor(t, "the settings row", `document.querySelector('#audit-table tbody tr[data-action="GENERAL_SETTINGS_CHANGED"]')`)
	log := auditLog(t, admin, nil)
	if len(log) != 1 || log[0].Action != "GENERAL_SETTINGS_CHANGED" {
		t.Fatalf("audit log through the API: %+v", log)
	}
	cells := browsertest.Eval[map[string]string](t, b, `(() => {
		const r = document.querySelector('#audit-table tbody tr');
		const head = Array.from(document.querySelectorAll('#audit-table thead th')).map((th) => th.textContent.trim());
		const c = r.querySelectorAll('td');
		const time = c[head.indexOf('Time')].querySelector('time');
		return { head: head.join('|'), id: r.dataset.id, user: c[head.indexOf('User')].textContent.trim(),
			action: c[head.indexOf('Action')].textContent.trim(), datetime: time.getAttribute('datetime'),
			title: time.title, time: time.textContent };
	})()`)
	if !strings.HasPrefix(cells["head"], "User|Action|Time") {
		t.Errorf("columns = %q, want User, Action, Time first", cells["head"])
	}
	if cells["id"] != log[0].ID || cells["user"] != "Demo Admin" || cells["action"] != "General settings changed" {
		t.Errorf("row = %q, want event %s by Demo Admin, General settings changed", cells, log[0].ID)
	}
	created, err := time.Parse(time.RFC3339, log[0].CreatedAt)
	if err != nil {
		t.Fatal(err)
	}
	if want := created.UTC().Format("2006-01-02T15:04:05.000Z"); cells["datetime"] != want || !strings.Contains(cells["title"], want) {
		t.Errorf("time element: datetime %q, title %q; want %s (UTC)", cells["datetime"], cells["title"], want)
	}
	if cells["time"] == "" || strings.Contains(cells["time"], "T") {
		t.Errorf("time shown as %q, want a local, readable time", cells["time"])
	}
	if details := browsertest.Eval[string](t, b, `document.querySelector('#audit-table tbody tr .cell-details').textContent`); !strings.Contains(details, "SMS first, email as a backup → Email only") {
		t.Errorf("details = %q", details)
	}

	// A row made by another client appears without a reload.
	browsertest.Eval[any](t, b, userCellJS)
	b.WaitFor(t, "the live indicator", `document.querySelector('#live-status').textContent === 'Live'`)
	createUser(t, admin, map[string]any{"id": "jane", "displayName": "Jane", "email": "jane@example.com"})
	b.WaitFor(t, "Jane's row", `rows().some((r) => userCell(r) === 'Admin → Jane' && r.textContent.includes('User created'))`)
	if got := browsertest.Eval[string](t, b, `document.querySelector('#audit-table tbody tr').dataset.action`); got != "USER_CREATED" {
		t.Errorf("top row is %s, want the new USER_CREATED", got)
	}

	// The connection drops; an event is written while the page cannot
	// reconnect; once it can, the event arrives exactly once.
	browsertest.Eval[any](t, b, `(window.__ws.hold(), window.__ws.drop(), true)`)
	b.WaitFor(t, "Reconnecting…", `document.querySelector('#live-status').textContent === 'Reconnecting…' && window.__ws.open() === 0`)
	b.WaitFor(t, "the page to try again", `window.__ws.waiting() > 0`)
	createUser(t, admin, map[string]any{"id": "kim", "displayName": "Kim", "phone": "+37120000002"})
	if browsertest.Eval[bool](t, b, `document.querySelector('#audit-table').textContent.includes('Kim')`) {
		t.Fatal("Kim's row arrived while no connection was open")
	}
	browsertest.Eval[any](t, b, `(window.__ws.release(), true)`)
	b.WaitFor(t, "Kim's row after the reconnect", `rows().some((r) => userCell(r) === 'Admin → Kim')`)
	b.WaitFor(t, "Live again", `document.querySelector('#live-status').textContent === 'Live'`)
	// One more live event after the resume, to be sure the stream goes on.
	createUser(t, admin, map[string]any{"id": "lee", "displayName": "Lee", "email": "lee@example.com"})
	b.WaitFor(t, "Lee's row", `rows().some((r) => userCell(r) === 'Admin → Lee')`)
	log = auditLog(t, admin, nil)
	if got, want := tableIDs(t, b), ids(log); !slices.Equal(got, want) {
		t.Errorf("table rows %v, API %v: want the same events, each once, newest first", got, want)
	}
	// One with an app, for the picture.
	admin.Must(t, `mutation { setUserTwoFactor(input: { userId: "jane", app: WEB, enabled: true }) { userErrors { message } } }`, nil, nil)
	b.WaitFor(t, "Jane's 2FA row", `rows()[0].dataset.action === 'USER_TWO_FACTOR_ENABLED' && rows()[0].textContent.includes('2FA switched on') && rows()[0].textContent.includes('Web application')`)
	b.Screenshot(t, "admin-audit")
	noProblems(t, b)
}

func TestAdminAuditLoadOlderAndCSV(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	admin := p.Admin(t, p.Company)
	const evil = `=HYPERLINK("http://evil.example/","Click me")`
	createUser(t, admin, map[string]any{"id": "mallory", "displayName": evil, "email": "mallory@example.com"})
	for i := range 120 {
		createUser(t, admin, map[string]any{"id": fmt.Sprintf("user-%03d", i), "email": fmt.Sprintf("user%d@example.com", i)})
	}
	log := auditLog(t, admin, nil)
	if len(log) != 121 {
		t.Fatalf("API has %d events, want 121", len(log))
	}

	openConsole(t, p, "#audit")
	b.WaitFor(t, "the first page", `document.querySelectorAll('#audit-table tbody tr').length === 50`)
	for clicks := 0; browsertest.Eval[bool](t, b, `!document.querySelector('#load-older').hidden`); clicks++ {
		if clicks > 5 {
			t.Fatal(`"Load older" is still there after 5 clicks`)
		}
		n := len(tableIDs(t, b))
		b.Do(t, "click Load older", chromedp.Click("#load-older"))
		b.WaitFor(t, "older rows", fmt.Sprintf(`document.querySelectorAll('#audit-table tbody tr').length > %d`, n))
		b.WaitFor(t, "the button to settle", `!document.querySelector('#load-older').disabled`)
	}
	if got, want := tableIDs(t, b), ids(log); !slices.Equal(got, want) {
		t.Fatalf("after Load older the table has %d rows, the API %d (or in another order)", len(got), len(want))
	}

	// Download CSV saves the same rows.
	dir := t.TempDir()
	b.Do(t, "allow downloads", chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		_, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dir, EventsEnabled: new(true),
		})
		return err
	}))
	b.Do(t, "click Download CSV", chromedp.Click("#csv-download"))
	b.WaitFor(t, "the CSV to be saved", `document.querySelector('#csv-status').textContent.startsWith('Saved')`)
	name := "audit-log-" + browsertest.Eval[string](t, b, `(() => { const d = new Date(); return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0'); })()`) + ".csv"
	raw := waitForFile(t, filepath.Join(dir, name))
	records, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(raw, []byte("\ufeff")))).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse: %v\n%s", err, raw)
	}
	// The server's export (GET /audit/export): its columns, oldest first.
	header := []string{"User", "Action", "Time (UTC)", "App", "Target", "Details", "User id", "Target id", "Event id", "Category"}
	if !slices.Equal(records[0], header) {
		t.Errorf("header = %q, want %q", records[0], header)
	}
	rows := records[1:]
	if len(rows) != len(log) {
		t.Fatalf("the CSV has %d rows, the API %d", len(rows), len(log))
	}
	for i, n := range log {
		r := rows[len(rows)-1-i]
		target := ""
		if n.TargetUser != nil {
			target = n.TargetUser.ID
		}
		id := n.ID // as a spreadsheet must show it: an id may start with -
		if strings.HasPrefix(id, "-") {
			id = "'" + id
		}
		if r[1] != "USER_CREATED" || r[2] != n.CreatedAt || r[6] != n.Actor.ID || r[7] != target || r[8] != id {
			t.Errorf("CSV row %d = %q, API event %+v", len(rows)-1-i, r, n)
		}
	}
	first := rows[0] // the oldest: mallory
	if first[7] != "mallory" || first[4] != "'"+evil {
		t.Errorf("mallory's row = %q: the display name must be neutralised as '%s", first, evil)
	}
	if !bytes.Contains(raw, []byte("\r\n")) {
		t.Error("the CSV's lines do not end with CRLF")
	}
	noProblems(t, b)
}

// waitForFile waits until the browser has finished writing path.
func waitForFile(t *testing.T, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			if _, err := os.Stat(path + ".crdownload"); os.IsNotExist(err) {
				return b
			}
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(filepath.Dir(path))
			t.Fatalf("no download at %s (folder: %v)", path, entries)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAdminAuditFilters(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	admin := p.Admin(t, p.Company)
	for _, id := range []string{"ann", "bob", "cat"} {
		createUser(t, admin, map[string]any{"id": id, "email": id + "@example.com"})
	}
	for _, u := range []struct {
		id, app string
		on      bool
	}{{"ann", "WEB", true}, {"bob", "MANAGER", true}, {"ann", "MANAGER", true}, {"ann", "WEB", false}} {
		admin.Must(t, `mutation($input: SetUserTwoFactorInput!) { setUserTwoFactor(input: $input) { userErrors { message } } }`,
			map[string]any{"input": map[string]any{"userId": u.id, "app": u.app, "enabled": u.on}}, nil)
	}
	admin.Must(t, `mutation { updateDefaultSettings(input: { web: true }) { userErrors { message } } }`, nil, nil)

	openConsole(t, p, "#audit")
	b.WaitFor(t, "the log", `document.querySelectorAll('#audit-table tbody tr').length === 8`)

	b.Do(t, "pick the action 2FA switched on", setValue("#f-action", "USER_TWO_FACTOR_ENABLED"))
	want := ids(auditLog(t, admin, map[string]any{"actions": []string{"USER_TWO_FACTOR_ENABLED"}}))
	if len(want) != 3 {
		t.Fatalf("API: %d USER_TWO_FACTOR_ENABLED events, want 3", len(want))
	}
	b.WaitFor(t, "only those rows", `(() => { const r = Array.from(document.querySelectorAll('#audit-table tbody tr'));
		return r.length === 3 && r.every((x) => x.dataset.action === 'USER_TWO_FACTOR_ENABLED' && x.textContent.includes('2FA switched on')); })()`)
	if got := tableIDs(t, b); !slices.Equal(got, want) {
		t.Errorf("filtered rows %v, API %v", got, want)
	}

	// App and user narrow it further.
	b.Do(t, "pick the Manager app", setValue("#f-app", "MANAGER"))
	b.WaitFor(t, "the Manager rows", `document.querySelectorAll('#audit-table tbody tr').length === 2`)
	// The export (Download CSV) refuses user ids over 128 bytes: the field
	// takes no more.
	if got := browsertest.Eval[int](t, b, `document.querySelector('#f-user').maxLength`); got != 128 {
		t.Errorf("#f-user maxLength = %d, want 128", got)
	}
	b.Do(t, "type a user id", chromedp.SendKeys("#f-user", "ann\r"))
	want = ids(auditLog(t, admin, map[string]any{"actions": []string{"USER_TWO_FACTOR_ENABLED"}, "app": "MANAGER", "userId": "ann"}))
	b.WaitFor(t, "ann's row", `document.querySelectorAll('#audit-table tbody tr').length === 1`)
	if got := tableIDs(t, b); !slices.Equal(got, want) {
		t.Errorf("filtered rows %v, API %v", got, want)
	}

	// A date range of today holds everything; a range that ended
	// yesterday holds nothing.
	b.Do(t, "clear the filters", chromedp.Click("#f-clear"))
	b.WaitFor(t, "all rows again", `document.querySelectorAll('#audit-table tbody tr').length === 8`)
	today := browsertest.Eval[string](t, b, `(() => { const d = new Date(); return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0'); })()`)
	yesterday := browsertest.Eval[string](t, b, `(() => { const d = new Date(); d.setDate(d.getDate() - 1); return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0'); })()`)
	b.Do(t, "pick today as from and to", setValue("#f-from", today), setValue("#f-to", today))
	b.WaitFor(t, "today's rows", `document.querySelectorAll('#audit-table tbody tr').length === 8 && document.querySelector('#audit-status').textContent === ''`)
	b.Do(t, "pick a range that ended yesterday", setValue("#f-from", ""), setValue("#f-to", yesterday))
	b.WaitFor(t, "no rows", `document.querySelectorAll('#audit-table tbody tr').length === 0 && !document.querySelector('#audit-empty').hidden`)

	// Sign-in steps stay out of the first view: ann asks for a code (a
	// CODE_SENT row), the default view still holds the 8 changes, and
	// "Sign-in steps" shows the new row, live.
	b.Do(t, "clear the filters", chromedp.Click("#f-clear"))
	b.WaitFor(t, "the 8 changes", `document.querySelectorAll('#audit-table tbody tr').length === 8`)
	p.User(t, p.Company, "ann").Must(t, `mutation { issueChallenge(input: { app: MANAGER }) { challenge { id } userErrors { code } } }`, nil, nil)
	want = nil
	for deadline := time.Now().Add(15 * time.Second); len(want) == 0; { // the row reaches the log through the outbox
		if time.Now().After(deadline) {
			t.Fatal("no CODE_SENT row reached the log")
		}
		want = ids(auditLog(t, admin, map[string]any{"category": "AUTHENTICATION"}))
	}
	b.Do(t, "show sign-in steps", setValue("#f-kind", "signins"))
	b.WaitFor(t, "the code-sent row", `(() => { const r = Array.from(document.querySelectorAll('#audit-table tbody tr'));
		return r.length === 1 && r[0].dataset.action === 'CODE_SENT' && r[0].textContent.includes('Code sent'); })()`)
	if got := tableIDs(t, b); !slices.Equal(got, want) {
		t.Errorf("sign-in rows %v, API %v", got, want)
	}
	b.Do(t, "show everything", setValue("#f-kind", "all"))
	b.WaitFor(t, "all 9 rows", `document.querySelectorAll('#audit-table tbody tr').length === 9`)
	b.Do(t, "back to changes", setValue("#f-kind", "changes"))
	b.WaitFor(t, "the 8 changes again", `document.querySelectorAll('#audit-table tbody tr').length === 8`)
	noProblems(t, b)
}

func TestAdminUsersUnlockAndSwitches(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	admin := p.Admin(t, p.Company)
	createUser(t, admin, map[string]any{"id": "lena", "displayName": "Lena Berg", "email": "lena@example.com", "phone": "+37120000003"})
	createUser(t, admin, map[string]any{"id": "omar", "displayName": "Omar", "email": "omar@example.com"})
	setTwoFactor := `mutation($input: SetUserTwoFactorInput!) { setUserTwoFactor(input: $input) { userErrors { message } } }`
	admin.Must(t, setTwoFactor, map[string]any{"input": map[string]any{"userId": "lena", "app": "WEB", "enabled": true}}, nil)

	// Lena gives three wrong codes and is locked out of the web app.
	lena := p.User(t, p.Company, "lena")
	var issued struct {
		IssueChallenge struct {
			Challenge  *struct{ ID string }    `json:"challenge"`
			UserErrors []struct{ Code string } `json:"userErrors"`
		} `json:"issueChallenge"`
	}
	lena.Must(t, `mutation { issueChallenge(input: { app: WEB }) { challenge { id } userErrors { code } } }`, nil, &issued)
	if issued.IssueChallenge.Challenge == nil {
		t.Fatalf("issueChallenge: %+v", issued.IssueChallenge.UserErrors)
	}
	wrong := "000000"
	if p.Outbox.LastCode(t, "+37120000003") == wrong {
		wrong = "111111"
	}
	var status string
	for range 3 {
		var v struct {
			VerifyChallenge struct{ Status *string } `json:"verifyChallenge"`
		}
		lena.Must(t, `mutation($id: ID!, $code: String!) { verifyChallenge(input: { challengeId: $id, code: $code }) { status } }`,
			map[string]any{"id": issued.IssueChallenge.Challenge.ID, "code": wrong}, &v)
		if v.VerifyChallenge.Status != nil {
			status = *v.VerifyChallenge.Status
		}
	}
	if status != "LOCKED" {
		t.Fatalf("after 3 wrong codes the status is %q, want LOCKED", status)
	}
	locks := func() (web, manager *string, managerOn bool) {
		var d struct {
			User struct {
				TwoFactor struct {
					Manager     bool `json:"manager"`
					LockedUntil struct {
						Web, Manager *string
					} `json:"lockedUntil"`
				} `json:"twoFactor"`
			} `json:"user"`
		}
		admin.Must(t, `{ user(id: "lena") { twoFactor { manager lockedUntil { web manager } } } }`, nil, &d)
		return d.User.TwoFactor.LockedUntil.Web, d.User.TwoFactor.LockedUntil.Manager, d.User.TwoFactor.Manager
	}
	if web, _, _ := locks(); web == nil {
		t.Fatal("the API does not show lena as locked")
	}

	openConsole(t, p, "#users")
	row := `document.querySelector('#users-table tr[data-user-id="lena"]')`
	webCell := row + `?.querySelector('td[data-app="WEB"]')`
	b.WaitFor(t, "lena's row, locked in the web app", webCell+`?.textContent.includes('Locked until') && `+webCell+`.querySelector('button[data-unlock]')`)
	if browsertest.Eval[bool](t, b, row+`.querySelector('td[data-app="MANAGER"] .badge-locked') !== null`) {
		t.Error("lena shows as locked in the Manager app too")
	}
	if !browsertest.Eval[bool](t, b, webCell+`.querySelector('input[role="switch"]').checked`) {
		t.Error("lena's web switch is off, want on")
	}
	b.Screenshot(t, "admin-users")

	b.Do(t, "click Unlock", chromedp.Click(`#users-table tr[data-user-id="lena"] td[data-app="WEB"] button[data-unlock]`))
	b.WaitFor(t, "the lock to go", webCell+` && !`+webCell+`.textContent.includes('Locked')`)
	if web, _, _ := locks(); web != nil {
		t.Errorf("after Unlock the API still shows lockedUntil.web = %s", *web)
	}

	// The Manager app's switch goes through the API.
	b.Do(t, "switch 2FA on for lena in the Manager app", chromedp.Click(`#users-table tr[data-user-id="lena"] td[data-app="MANAGER"] label`))
	b.WaitFor(t, "the change to be confirmed", `document.querySelector('#users-message').textContent.includes('switched on')`)
	if _, _, on := locks(); !on {
		t.Error("after the switch the API says lena's Manager 2FA is off")
	}
	if !browsertest.Eval[bool](t, b, row+`.querySelector('td[data-app="MANAGER"] input[role="switch"]').checked`) {
		t.Error("the Manager switch shows off after switching it on")
	}

	// Search narrows the list.
	b.Do(t, "search for omar", chromedp.SendKeys("#u-query", "oma\r"))
	b.WaitFor(t, "only omar", `(() => { const r = document.querySelectorAll('#users-table tbody tr'); return r.length === 1 && r[0].dataset.userId === 'omar'; })()`)
	noProblems(t, b)
}

func TestAdminDefaultSettingsAndKeyboard(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	openConsole(t, p, "")
	b.WaitFor(t, "the settings to load", `document.querySelector('#dm-sms').checked`)

	active := func() string { return browsertest.Eval[string](t, b, `document.activeElement.id`) }
	b.Do(t, "focus the first tab and press the right arrow", chromedp.Focus("#tab-general"), chromedp.KeyEvent(kb.ArrowRight))
	if got := active(); got != "tab-defaults" {
		t.Fatalf("after → the focus is on %q, want tab-defaults", got)
	}
	if got := browsertest.Eval[string](t, b, `[document.querySelector('#tab-defaults').getAttribute('aria-selected'), document.querySelector('#panel-defaults').hidden, document.querySelector('#panel-general').hidden, location.hash].join(' ')`); got != "true false true #defaults" {
		t.Errorf("selected, defaults hidden, general hidden, hash = %q", got)
	}
	b.Do(t, "press ← twice", chromedp.KeyEvent(kb.ArrowLeft), chromedp.KeyEvent(kb.ArrowLeft))
	if got := active(); got != "tab-users" {
		t.Errorf("← from the first tab wraps to %q, want tab-users", got)
	}
	b.Do(t, "press Home", chromedp.KeyEvent(kb.Home))
	if got := active(); got != "tab-general" {
		t.Errorf("Home goes to %q, want tab-general", got)
	}
	b.Do(t, "press End, then → to wrap", chromedp.KeyEvent(kb.End))
	if got := active(); got != "tab-users" {
		t.Errorf("End goes to %q, want tab-users", got)
	}
	// Tab leaves the tab list for the panel: only the selected tab is in
	// the tab order.
	b.Do(t, "go to Default settings and press Tab", chromedp.KeyEvent(kb.ArrowLeft), chromedp.KeyEvent(kb.ArrowLeft), chromedp.KeyEvent("\t"))
	if got := active(); got != "panel-defaults" {
		t.Errorf("Tab from the tab list goes to %q, want panel-defaults", got)
	}
	b.Do(t, "Tab to the web switch, switch it with Space", chromedp.KeyEvent("\t"), chromedp.KeyEvent(" "))
	if got := active(); got != "def-web" {
		t.Fatalf("the second Tab goes to %q, want def-web", got)
	}
	b.WaitFor(t, "the switch on and Save enabled", `document.querySelector('#def-web').checked && !document.querySelector('#defaults-save').disabled`)
	b.Do(t, "save", chromedp.Click("#defaults-save"))
	b.WaitFor(t, "Saved", `document.querySelector('#defaults-status').textContent === 'Saved' && document.querySelector('#defaults-save').disabled`)
	var d struct {
		TwoFactorSettings struct {
			Defaults struct{ Web, Manager bool } `json:"defaults"`
		} `json:"twoFactorSettings"`
	}
	p.Admin(t, p.Company).Must(t, `{ twoFactorSettings { defaults { web manager } } }`, nil, &d)
	if !d.TwoFactorSettings.Defaults.Web || d.TwoFactorSettings.Defaults.Manager {
		t.Errorf("defaults through the API: %+v, want web on, manager off", d.TwoFactorSettings.Defaults)
	}
	b.Screenshot(t, "admin-defaults")

	// A reload keeps the tab.
	b.Do(t, "reload", chromedp.Reload(), chromedp.WaitVisible("#panel-defaults"))
	b.WaitFor(t, "the saved switch", `document.querySelector('#def-web').checked`)
	if got := browsertest.Eval[string](t, b, `document.querySelector('[role="tab"][aria-selected="true"]').id`); got != "tab-defaults" {
		t.Errorf("after a reload the selected tab is %q", got)
	}
	noProblems(t, b)
}

func TestAdminSignIn(t *testing.T) {
	// Not embedded: nothing is pre-filled.
	s := apptest.Start(t)
	b := browsertest.Open(t, s.URL)
	company := testenv.Company(t)
	b.Do(t, "open the console", chromedp.Navigate(s.URL+"/admin/"), chromedp.WaitVisible("#signin-form"))
	b.Screenshot(t, "admin-signin")

	// A user's token left in this tab: a clear message, not the console.
	userToken := s.Token(t, auth.Caller{UserID: "jane", Company: company, Role: auth.RoleUser})
	b.Do(t, "store a user token and reload",
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`sessionStorage.setItem('twofactor.admin.token', %q)`, userToken)),
		chromedp.Reload(), chromedp.WaitVisible("#signin-message"))
	msg := browsertest.Eval[string](t, b, `document.querySelector('#signin-message').textContent`)
	if !strings.Contains(msg, "user token") || !strings.Contains(msg, "admin role") || !strings.Contains(msg, company) {
		t.Errorf("message = %q, want it to say this is a user token and an admin one is needed", msg)
	}
	if browsertest.Eval[bool](t, b, `!document.querySelector('#console').hidden || sessionStorage.getItem('twofactor.admin.token') !== null`) {
		t.Error("the console shows, or the user token stays stored")
	}

	// A service token typed in: the same.
	serviceToken := s.Token(t, auth.Caller{UserID: "svc", Company: company, Role: auth.RoleService})
	b.Do(t, "type a service token", chromedp.SendKeys("#token-input", serviceToken+"\r"))
	b.WaitFor(t, "the service message", `document.querySelector('#signin-message').textContent.includes('service token')`)

	// Garbage.
	b.Do(t, "type garbage", chromedp.SendKeys("#token-input", "not a token\r"))
	b.WaitFor(t, "the garbage message", `document.querySelector('#signin-message').textContent.includes('cannot be read')`)

	// An admin's token works, and shows whose it is.
	adminToken := s.Token(t, auth.Caller{UserID: "alice", Company: company, Role: auth.RoleAdmin, Name: "Alice"})
	b.Do(t, "type an admin token", chromedp.SendKeys("#token-input", adminToken+"\r"), chromedp.WaitVisible("#console"))
	b.WaitFor(t, "the settings", `document.querySelector('#dm-sms').checked`)
	if who := browsertest.Eval[string](t, b, `document.querySelector('#whoami').textContent`); !strings.Contains(who, "Alice") || !strings.Contains(who, company) {
		t.Errorf("header = %q", who)
	}
	if got := browsertest.Eval[string](t, b, `sessionStorage.getItem('twofactor.admin.token')`); got != adminToken {
		t.Error("the admin token is not kept in sessionStorage")
	}
	if browsertest.Eval[int](t, b, `localStorage.length`) != 0 {
		t.Error("something was put in localStorage")
	}

	// Sign out forgets it.
	b.Do(t, "sign out", chromedp.Click("#sign-out"), chromedp.WaitVisible("#signin-form"))
	if browsertest.Eval[bool](t, b, `sessionStorage.getItem('twofactor.admin.token') !== null`) {
		t.Error("the token is still stored after signing out")
	}
	noProblems(t, b)

	// An admin token the service does not accept (here: signed with
	// another secret, as after a secret rotation) brings the form back
	// with a message. The browser logs the 401 itself, so this comes after
	// the console check.
	other, err := auth.NewTokens([]byte("another-secret-another-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Sign(auth.Caller{UserID: "alice", Company: company, Role: auth.RoleAdmin, Name: "Alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b.Do(t, "type a token the service refuses", chromedp.SendKeys("#token-input", foreign+"\r"))
	b.WaitFor(t, "the refusal", `!document.querySelector('#signin').hidden && document.querySelector('#signin-message').textContent.includes('no longer accepts')`)
	if browsertest.Eval[bool](t, b, `sessionStorage.getItem('twofactor.admin.token') !== null`) {
		t.Error("the refused token stays stored")
	}
}

// A log that was empty when the page opened has no cursor to resume from:
// the page reads the newest rows again before subscribing, so an event
// written while the connection was down still shows, once.
func TestAdminAuditResumesAnEmptyLog(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	admin := p.Admin(t, p.Company)
	controlSockets(t, b)
	openConsole(t, p, "#audit")
	b.WaitFor(t, "the empty log, live", `!document.querySelector('#audit-empty').hidden && document.querySelector('#live-status').textContent === 'Live'`)
	browsertest.Eval[any](t, b, `(window.__ws.hold(), window.__ws.drop(), true)`)
	b.WaitFor(t, "the page to try again", `window.__ws.open() === 0 && window.__ws.waiting() > 0`)
	createUser(t, admin, map[string]any{"id": "nina", "displayName": "Nina"})
	browsertest.Eval[any](t, b, `(window.__ws.release(), true)`)
	b.WaitFor(t, "Nina's row", `document.querySelectorAll('#audit-table tbody tr').length === 1 && document.querySelector('#live-status').textContent === 'Live'`)
	createUser(t, admin, map[string]any{"id": "olav", "displayName": "Olav"})
	b.WaitFor(t, "Olav's row", `document.querySelectorAll('#audit-table tbody tr').length === 2`)
	if got, want := tableIDs(t, b), ids(auditLog(t, admin, nil)); !slices.Equal(got, want) {
		t.Errorf("table rows %v, API %v", got, want)
	}
	noProblems(t, b)
}

// TestAdminDefaultSettingsConflict: a save based on settings someone else
// changed since is refused, says so, and shows the settings as they are.
func TestAdminDefaultSettingsConflict(t *testing.T) {
	p := startEmbedded(t)
	b := p.B
	openConsole(t, p, "#defaults")
	b.WaitFor(t, "the defaults to load", `!document.querySelector('#panel-defaults').hidden && document.querySelector('#defaults-status').dataset.state === 'clean'`)
	admin := p.Admin(t, p.Company)
	admin.Must(t, `mutation { updateDefaultSettings(input: {manager: true}) { userErrors { code } } }`, nil, nil)

	b.Do(t, "switch web on and save", chromedp.Click("#def-web"), chromedp.Click("#defaults-save"))
	b.WaitFor(t, "the conflict", `document.querySelector('#defaults-status').textContent.includes('someone else changed these settings')`)
	if got := browsertest.Eval[string](t, b, `[document.querySelector('#def-web').checked, document.querySelector('#def-manager').checked].join(' ')`); got != "false true" {
		t.Errorf("web, manager switches after the conflict = %q, want the current false true", got)
	}
	var d struct {
		TwoFactorSettings struct {
			Defaults struct{ Web, Manager bool } `json:"defaults"`
		} `json:"twoFactorSettings"`
	}
	admin.Must(t, `{ twoFactorSettings { defaults { web manager } } }`, nil, &d)
	if d.TwoFactorSettings.Defaults.Web || !d.TwoFactorSettings.Defaults.Manager {
		t.Errorf("defaults through the API: %+v, want the other change only", d.TwoFactorSettings.Defaults)
	}
	// Redone on the reloaded settings, the change is saved.
	b.Do(t, "switch web on again and save", chromedp.Click("#def-web"), chromedp.Click("#defaults-save"))
	b.WaitFor(t, "Saved", `document.querySelector('#defaults-status').textContent === 'Saved'`)
	noProblems(t, b)
}
