package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/browsertest"
	"github.com/twofactor/service/internal/demo"
	"github.com/twofactor/service/internal/testenv"
)

// The login screen's tests drive /demo/login in chromium, in embedded mode
// as the demo user (whose token the page gets filled in). Codes are read
// from the test outbox, as a person would read their phone.

// TestLoginApproved: send a code by SMS, type it, and the page shows
// APPROVED with the assertion's claims, checked against the JWKS in the
// page.
func TestLoginApproved(t *testing.T) {
	p := startEmbedded(t)
	l := loginScreen{t, p.B, p.URL}
	l.open()
	if !l.visible("#dev-hint") {
		t.Error("embedded mode: no hint that codes go to the server log")
	}
	if who := l.text("#who"); who != "Demo User (demo-user)" {
		t.Errorf("signing in as %q, want Demo User (demo-user)", who)
	}

	l.sendCode()
	if got := l.text("#sent-channel") + " " + l.text("#sent-destination"); got != "SMS +3712*****01" {
		t.Errorf("sent by %q, want SMS to the masked phone +3712*****01", got)
	}
	input := browsertest.Eval[map[string]any](t, p.B, `(() => { const c = document.getElementById('code');
		return { inputmode: c.inputMode, autocomplete: c.autocomplete, label: c.labels[0].textContent,
			focused: document.activeElement === c }; })()`)
	if input["inputmode"] != "numeric" || input["autocomplete"] != "one-time-code" || input["label"] == "" || input["focused"] != true {
		t.Errorf("code input: %v, want numeric, one-time-code, labelled and focused", input)
	}
	p.B.Screenshot(t, "login-code")

	// Enter submits, as from a keyboard.
	code := p.Outbox.LastCode(t, demo.User.Phone)
	p.B.Do(t, "type the code and Enter", chromedp.SendKeys(chromedp.CSS("#code"), code+"\n"))
	l.waitShown("APPROVED", "#approved")
	l.waitShown("the signature check", "#verified")
	if got := l.text("#approved-title"); !strings.Contains(got, "APPROVED") {
		t.Errorf("title %q lacks APPROVED", got)
	}
	if got := l.text("#verified"); got != "Signature verified against /.well-known/jwks.json" {
		t.Errorf("verified line %q", got)
	}
	claims := l.claims()
	for name, want := range map[string]string{
		"sub": demo.User.ID, "company": p.Company, "app": "web", "amr": "otp, sms", "iss": app.DefaultIssuer,
	} {
		if claims[name] != want {
			t.Errorf("claim %s = %q, want %q (all: %v)", name, claims[name], want, claims)
		}
	}
	// iat and exp are shown as local times, with the instant in datetime.
	times := browsertest.Eval[map[string]string](t, p.B, `Object.fromEntries(['iat', 'exp'].map((c) => {
		const el = document.querySelector('#claims tr[data-claim="' + c + '"] time');
		return [c, el ? el.dateTime : ''];
	}))`)
	iat, err1 := time.Parse(time.RFC3339, times["iat"])
	exp, err2 := time.Parse(time.RFC3339, times["exp"])
	if err1 != nil || err2 != nil || exp.Sub(iat) != 2*time.Minute || time.Since(iat).Abs() > time.Minute {
		t.Errorf("iat/exp shown as %v, want two minutes apart, from about now", times)
	}
	if alert := l.text("#alert"); alert != "" {
		t.Errorf("alert after approval: %q", alert)
	}
	p.B.Screenshot(t, "login-approved")
	noProblems(t, p.B)
}

// TestLoginLockedShowsContactPerson: each wrong code says how many
// attempts are left; the third locks, and the page shows the company's
// contact person and when the lock ends. Asking for a new code while
// locked shows the same.
func TestLoginLockedShowsContactPerson(t *testing.T) {
	p := startEmbedded(t)
	l := loginScreen{t, p.B, p.URL}
	var set struct {
		UpdateGeneralSettings struct{ UserErrors []struct{ Code string } }
	}
	p.Admin(t, p.Company).Must(t, `mutation { updateGeneralSettings(input: {contactPerson: {name: "IT desk", email: "it@example.com", phone: "+37120000000"}}) { userErrors { code } } }`, nil, &set)
	if len(set.UpdateGeneralSettings.UserErrors) > 0 {
		t.Fatalf("set the contact person: %+v", set.UpdateGeneralSettings.UserErrors)
	}

	l.open()
	l.sendCode()
	wrong := l.wrongCode(p.Outbox.LastCode(t, demo.User.Phone))
	for i, want := range []string{"Wrong code. 2 attempts left.", "Wrong code. 1 attempt left."} {
		l.typeCode(wrong)
		l.waitAlert(fmt.Sprintf("%q after wrong code %d", want, i+1), want)
		if i == 0 {
			// A wrong code is an unsuccessful attempt: the service now
			// allows email, and a new code at once.
			l.waitShown("Send by email instead", "#email-instead")
			p.B.WaitFor(t, "Resend enabled", `(() => { const r = document.getElementById('resend');
				return !r.disabled && r.textContent === 'Resend code'; })()`)
		}
	}
	l.typeCode(wrong)
	l.waitShown("the locked screen", "#locked")
	l.checkLocked()
	p.B.Screenshot(t, "login-locked")

	// Starting over and asking again: issueChallenge refuses with LOCKED,
	// and the page shows the same.
	l.click("start over", "#locked .start-over")
	l.waitShown("the send step", "#send-step")
	l.click("ask for a code while locked", "#send")
	l.waitShown("the locked screen again", "#locked")
	l.checkLocked()

	// Without a contact person, the page says whom to ask instead.
	p.Admin(t, p.Company).Must(t, `mutation { updateGeneralSettings(input: {contactPerson: null}) { userErrors { code } } }`, nil, nil)
	l.click("start over", "#locked .start-over")
	l.waitShown("the send step", "#send-step")
	l.click("ask for a code while locked", "#send")
	l.waitShown("the no-contact message", "#no-contact")
	if l.visible("#contact") {
		t.Error("a contact person shows after it was removed")
	}
	if got := l.text("#no-contact"); !strings.Contains(got, "Ask your administrator") {
		t.Errorf("no-contact message %q", got)
	}
	noProblems(t, p.B)
}

// TestLoginResendCountdownAndEmailInstead: Resend counts down to
// resendAvailableAt; "Send by email instead" appears only once the
// service allows email (here after the SMS could not be delivered), and
// then sends the code to the user's email address.
func TestLoginResendCountdownAndEmailInstead(t *testing.T) {
	p := startEmbedded(t)
	l := loginScreen{t, p.B, p.URL}
	l.open()
	l.sendCode()
	p.B.WaitFor(t, "a disabled Resend counting down", `(() => { const r = document.getElementById('resend');
		return r.getClientRects().length > 0 && r.disabled && /^Resend in 0:[0-3][0-9]$/.test(r.textContent); })()`)
	if l.visible("#email-instead") {
		t.Error("Send by email instead shows before email is available")
	}

	// The SMS provider fails. After the cooldown (on the service's clock)
	// a new page asks again: the SMS cannot be delivered, which opens email.
	p.Outbox.SetFail("sms", true)
	p.Clock.Advance(31 * time.Second)
	l.open()
	if l.visible("#email-instead") {
		t.Error("Send by email instead shows on a fresh page")
	}
	l.click("send a code", "#send")
	l.waitAlert("the delivery failure", "The code could not be delivered. Try again, or send the code by email instead.")
	l.waitShown("Send by email instead", "#email-instead")

	l.click("send by email instead", "#email-instead")
	l.waitShown("the code step", "#code-step")
	if got := l.text("#sent-channel") + " " + l.text("#sent-destination"); got != "email d***@example.com" {
		t.Errorf("sent by %q, want email to d***@example.com", got)
	}
	if l.visible("#email-instead") {
		t.Error("Send by email instead still shows after the code went by email")
	}
	p.B.WaitFor(t, "a disabled Resend counting down", `(() => { const r = document.getElementById('resend');
		return r.disabled && /^Resend in [0-9]+:[0-9]{2}$/.test(r.textContent); })()`)
	if all := p.Outbox.All(); len(all) == 0 || all[len(all)-1].Channel != "email" {
		t.Fatalf("the last message did not go by email: %+v", all)
	}
	l.typeCode(p.Outbox.LastCode(t, demo.User.Email))
	l.waitShown("APPROVED", "#verified")
	if got := l.claims()["amr"]; got != "otp, email" {
		t.Errorf("amr %q, want otp, email", got)
	}
	noProblems(t, p.B)
}

// TestLoginTokenForm: outside embedded mode (DEMO_PAGES only) the page
// gets no token: it asks for one, explains a token of the wrong role,
// keeps a user token in sessionStorage only, and then works as that user.
// Without either setting there is no /demo/login at all.
func TestLoginTokenForm(t *testing.T) {
	company := testenv.Company(t)
	s := apptest.Start(t, func(o *app.Options) { o.DemoPages = true })
	b := browsertest.Open(t, s.URL)
	l := loginScreen{t, b, s.URL}
	b.Do(t, "open the login screen", chromedp.Navigate(s.URL+"/demo/login"))
	l.waitShown("the token form", "#token-step")
	if l.visible("#dev-hint") || l.visible("#send-step") {
		t.Error("outside embedded mode the page shows the development hint or the send step")
	}

	l.submitToken(s.Token(t, auth.Caller{UserID: "admin", Company: company, Role: auth.RoleAdmin}))
	b.WaitFor(t, "the wrong-role message", `document.getElementById('alert').textContent.startsWith('This is an admin token.')`)

	admin := s.Admin(t, company)
	admin.Must(t, `mutation { createUser(input: {id: "jane", email: "jane@example.com", phone: "+37120000002", displayName: "Jane"}) { userErrors { code } } }`, nil, nil)
	admin.Must(t, `mutation { setUserTwoFactor(input: {userId: "jane", app: WEB, enabled: true}) { userErrors { code } } }`, nil, nil)
	user := s.Token(t, auth.Caller{UserID: "jane", Company: company, Role: auth.RoleUser})
	l.submitToken(user)
	l.waitShown("the send step", "#send-step")
	if who := l.text("#who"); who != "Jane (jane)" {
		t.Errorf("signing in as %q, want Jane (jane)", who)
	}
	stored := browsertest.Eval[map[string]string](t, b, `({ session: JSON.stringify(Object.assign({}, sessionStorage)),
		local: JSON.stringify(Object.assign({}, localStorage)) })`)
	want, _ := json.Marshal(map[string]string{"twofactor.login.token": user})
	if stored["session"] != string(want) || stored["local"] != "{}" {
		t.Errorf("storage: %v, want the token in sessionStorage only", stored)
	}

	// The token outlives a reload of the tab, and codes work for Jane.
	l.open()
	l.sendCode()
	if got := l.text("#sent-destination"); got != "+3712*****02" {
		t.Errorf("destination %q, want Jane's masked phone", got)
	}
	// 2FA is off for Jane in the Manager app: a readable refusal.
	l.click("start over", "#code-step .start-over")
	l.waitShown("the send step", "#send-step")
	l.click("choose the Manager app", `input[value="MANAGER"]`)
	l.click("ask for a Manager app code", "#send")
	b.WaitFor(t, "TWO_FACTOR_NOT_ENABLED", `document.getElementById('alert').textContent.startsWith('Two-factor sign-in is off for you in the Manager app')`)
	noProblems(t, b)

	off := apptest.Start(t)
	res, err := http.Get(off.URL + "/demo/login")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("/demo/login without embedded mode or DEMO_PAGES: status %d, want 404", res.StatusCode)
	}
}

// loginScreen drives /demo/login in one browser.
type loginScreen struct {
	t    *testing.T
	b    *browsertest.Browser
	base string // the service's URL
}

// open loads the page and waits until it has checked the token and
// offers to send a code.
func (l loginScreen) open() {
	l.t.Helper()
	l.b.Do(l.t, "open the login screen", chromedp.Navigate(l.base+"/demo/login"))
	l.waitShown("the send step", "#send-step")
}

// click clicks sel once the page is not busy with a request (it ignores
// clicks until then, as a guard against double submission).
func (l loginScreen) click(what, sel string) {
	l.t.Helper()
	l.idle()
	l.b.Do(l.t, what, chromedp.Click(chromedp.CSS(sel)))
}

func (l loginScreen) idle() {
	l.t.Helper()
	l.b.WaitFor(l.t, "no request in flight", `!document.querySelector('main').hasAttribute('aria-busy')`)
}

// sendCode clicks "Send code" and waits for the code step.
func (l loginScreen) sendCode() {
	l.t.Helper()
	l.click("send a code", "#send")
	l.waitShown("the code step", "#code-step")
}

// typeCode replaces the code input's text and clicks Verify.
func (l loginScreen) typeCode(code string) {
	l.t.Helper()
	l.idle()
	l.b.Do(l.t, "type code "+code,
		chromedp.Clear(chromedp.CSS("#code")),
		chromedp.SendKeys(chromedp.CSS("#code"), code),
		chromedp.Click(chromedp.CSS("#verify")))
}

func (l loginScreen) submitToken(token string) {
	l.t.Helper()
	l.idle()
	l.b.Do(l.t, "submit a token",
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS(`#token-step button[type="submit"]`)))
}

// claims reads the claims table: claim name → value as shown.
func (l loginScreen) claims() map[string]string {
	l.t.Helper()
	return browsertest.Eval[map[string]string](l.t, l.b, `Object.fromEntries([...document.querySelectorAll('#claims tbody tr')]
		.map((r) => [r.dataset.claim, r.querySelector('td').textContent]))`)
}

// checkLocked: the locked screen names the contact person set by the test
// and the end of a 15-minute lock.
func (l loginScreen) checkLocked() {
	t := l.t
	t.Helper()
	got := browsertest.Eval[map[string]string](t, l.b, `(() => {
		const $ = (id) => document.getElementById(id);
		return { name: $('contact-name').textContent, email: $('contact-email').textContent,
			mailto: $('contact-email').getAttribute('href'), phone: $('contact-phone').textContent,
			tel: $('contact-phone').getAttribute('href'), until: $('locked-until').dateTime,
			untilText: $('locked-until').textContent, untilTitle: $('locked-until').title };
	})()`)
	for k, want := range map[string]string{
		"name": "IT desk", "email": "it@example.com", "mailto": "mailto:it@example.com",
		"phone": "+37120000000", "tel": "tel:+37120000000",
	} {
		if got[k] != want {
			t.Errorf("contact %s = %q, want %q", k, got[k], want)
		}
	}
	// LOCK_DURATION is 15 minutes from the third wrong code.
	until, err := time.Parse(time.RFC3339, got["until"])
	if left := time.Until(until); err != nil || left < 14*time.Minute || left > 15*time.Minute+5*time.Second {
		t.Errorf("lock ends %q (%v from now), want about 15 minutes from now", got["until"], left)
	}
	if got["untilText"] == "" || !strings.HasSuffix(got["untilTitle"], " UTC") {
		t.Errorf("lock end shown as %q (hover %q), want local time with UTC on hover", got["untilText"], got["untilTitle"])
	}
	if l.visible("#no-contact") {
		t.Error("the no-contact message shows beside a contact person")
	}
}

func (l loginScreen) text(sel string) string {
	l.t.Helper()
	return browsertest.Eval[string](l.t, l.b, `(document.querySelector(`+l.quote(sel)+`) || {}).textContent || ''`)
}

func (l loginScreen) visible(sel string) bool {
	l.t.Helper()
	return browsertest.Eval[bool](l.t, l.b, l.shownJS(sel))
}

// waitShown waits until sel is rendered (neither it nor an ancestor is
// hidden).
func (l loginScreen) waitShown(what, sel string) {
	l.t.Helper()
	l.b.WaitFor(l.t, what, l.shownJS(sel))
}

func (l loginScreen) shownJS(sel string) string {
	return `(() => { const e = document.querySelector(` + l.quote(sel) + `);
		return !!e && e.getClientRects().length > 0; })()`
}

// waitAlert waits until the alert region says exactly want.
func (l loginScreen) waitAlert(what, want string) {
	l.t.Helper()
	l.b.WaitFor(l.t, what, `document.getElementById('alert').textContent === `+l.quote(want))
}

// quote makes s a JavaScript string literal.
func (loginScreen) quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// wrongCode is a code of the same length as right that is not right.
func (l loginScreen) wrongCode(right string) string {
	l.t.Helper()
	n, err := strconv.Atoi(right)
	if err != nil {
		l.t.Fatalf("code %q is not digits", right)
	}
	mod := 1
	for range right {
		mod *= 10
	}
	return fmt.Sprintf("%0*d", len(right), (n+1)%mod)
}
