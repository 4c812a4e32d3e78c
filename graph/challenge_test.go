package graph_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/testenv"
)

// Challenge operations as the frontends and the platform send them.
const (
	challengeFields = `id app channel destination expiresAt resendAvailableAt availableChannels attemptsRemaining status`
	contactFields   = `contactPerson { name email phone }`
	mIssue          = `mutation($input: IssueChallengeInput!) { issueChallenge(input: $input) { challenge { ` + challengeFields + ` } retryAfter lockedUntil ` + contactFields + ` availableChannels userErrors { field code message } } }`
	mVerify         = `mutation($input: VerifyChallengeInput!) { verifyChallenge(input: $input) { status attemptsRemaining assertion lockedUntil ` + contactFields + ` userErrors { field code message } } }`
	qChallenge      = `query($id: ID!) { challenge(id: $id) { ` + challengeFields + ` } }`
	mUnlock         = `mutation($input: UnlockUserTwoFactorInput!) { unlockUserTwoFactor(input: $input) { user { id twoFactor { web manager lockedUntil { web manager } } } userErrors { field code message } } }`
	qLocks          = `query($id: ID!) { user(id: $id) { twoFactor { lockedUntil { web manager } } } }`
)

type challengeT struct {
	ID                string   `json:"id"`
	App               string   `json:"app"`
	Channel           string   `json:"channel"`
	Destination       string   `json:"destination"`
	ExpiresAt         string   `json:"expiresAt"`
	ResendAvailableAt string   `json:"resendAvailableAt"`
	AvailableChannels []string `json:"availableChannels"`
	AttemptsRemaining int      `json:"attemptsRemaining"`
	Status            string   `json:"status"`
}

type issuePayload struct {
	Challenge         *challengeT `json:"challenge"`
	RetryAfter        *int        `json:"retryAfter"`
	LockedUntil       *string     `json:"lockedUntil"`
	ContactPerson     *contact    `json:"contactPerson"`
	AvailableChannels []string    `json:"availableChannels"`
	UserErrors        []userError `json:"userErrors"`
}

type verifyPayload struct {
	Status            *string     `json:"status"`
	AttemptsRemaining *int        `json:"attemptsRemaining"`
	Assertion         *string     `json:"assertion"`
	LockedUntil       *string     `json:"lockedUntil"`
	ContactPerson     *contact    `json:"contactPerson"`
	UserErrors        []userError `json:"userErrors"`
}

func (v verifyPayload) status() string { return str(v.Status) }

func (v verifyPayload) remaining() int {
	if v.AttemptsRemaining == nil {
		return -1
	}
	return *v.AttemptsRemaining
}

// helpDesk is every test company's contact person.
var helpDesk = map[string]any{"name": "Help Desk", "email": "help@example.com", "phone": "+37129999999"}

func wantHelpDesk(t *testing.T, what string, c *contact) {
	t.Helper()
	if c == nil || c.Name != "Help Desk" || str(c.Email) != "help@example.com" || str(c.Phone) != "+37129999999" {
		t.Errorf("%s: contactPerson = %+v, want the help desk", what, c)
	}
}

// newCompany returns a fresh company delivering codes by method, with the
// help desk as its contact person.
func newCompany(t *testing.T, s *apptest.Server, method string) string {
	t.Helper()
	co := testenv.Company(t)
	updateGeneral(t, s.Admin(t, co), map[string]any{"deliveryMethod": method, "contactPerson": helpDesk})
	return co
}

// addresses hands out phone numbers and emails that no other test user in
// the process has, so Outbox.LastCode finds the right message.
var addresses atomic.Int64

func uniquePhone() string { return fmt.Sprintf("+3712%07d", 1000+addresses.Add(1)) }
func uniqueEmail() string { return fmt.Sprintf("user%d@example.com", addresses.Add(1)) }

// login is one 2FA user and the clients that act for it.
type login struct {
	s            *apptest.Server
	co, id, app  string
	phone, email string
	user         *apptest.Client // the user's own token
	service      *apptest.Client // the company's platform backend
	admin        *apptest.Client
}

// newLogin creates user id in co with phone and email ("" for none) and
// 2FA on for apps (the first is the app the login is for; none: WEB, with
// 2FA left off).
func newLogin(t *testing.T, s *apptest.Server, co, id, phone, email string, apps ...string) *login {
	t.Helper()
	admin := s.Admin(t, co)
	in := map[string]any{"id": id, "displayName": "User " + id}
	if phone != "" {
		in["phone"] = phone
	}
	if email != "" {
		in["email"] = email
	}
	createUser(t, admin, in)
	l := &login{s: s, co: co, id: id, app: "WEB", phone: phone, email: email,
		user: s.User(t, co, id), service: s.Service(t, co), admin: admin}
	for i, a := range apps {
		if i == 0 {
			l.app = a
		}
		setTwoFactor(t, admin, id, a, true)
	}
	return l
}

// issueAs runs issueChallenge as c for the login's app. A user token
// leaves userId out; any other names the user.
func (l *login) issueAs(t *testing.T, c *apptest.Client, channel string) issuePayload {
	t.Helper()
	in := map[string]any{"app": l.app}
	if c != l.user {
		in["userId"] = l.id
	}
	if channel != "" {
		in["channel"] = channel
	}
	return mutate[issuePayload](t, c, mIssue, "issueChallenge", in)
}

func (l *login) issue(t *testing.T, channel string) issuePayload {
	t.Helper()
	return l.issueAs(t, l.user, channel)
}

// mustIssue issues as the user and fails on user errors.
func (l *login) mustIssue(t *testing.T, channel string) challengeT {
	t.Helper()
	p := l.issue(t, channel)
	if len(p.UserErrors) > 0 || p.Challenge == nil {
		t.Fatalf("issueChallenge(%s, %q): user errors %+v", l.app, channel, p.UserErrors)
	}
	return *p.Challenge
}

func verifyAs(t *testing.T, c *apptest.Client, id, code string) verifyPayload {
	t.Helper()
	return mutate[verifyPayload](t, c, mVerify, "verifyChallenge", map[string]any{"challengeId": id, "code": code})
}

func (l *login) verify(t *testing.T, id, code string) verifyPayload {
	t.Helper()
	return verifyAs(t, l.user, id, code)
}

// get reads a challenge as the user.
func (l *login) get(t *testing.T, id string) challengeT {
	t.Helper()
	var out struct {
		Challenge *challengeT `json:"challenge"`
	}
	l.user.Must(t, qChallenge, map[string]any{"id": id}, &out)
	if out.Challenge == nil {
		t.Fatalf("challenge(%s) is null", id)
	}
	return *out.Challenge
}

// code is the code last delivered for ch.
func (l *login) code(t *testing.T, ch challengeT) string {
	t.Helper()
	if ch.Channel == "EMAIL" {
		return l.s.Outbox.LastCode(t, l.email)
	}
	return l.s.Outbox.LastCode(t, l.phone)
}

// wrong is a well-formed code that is not code.
func wrong(code string) string {
	last := code[len(code)-1]
	return code[:len(code)-1] + string('0'+(last-'0'+1)%10)
}

// lockedUntil reads the user's locks as the admin.
func (l *login) lockedUntil(t *testing.T) (web, manager *string) {
	t.Helper()
	var out struct {
		User *struct {
			TwoFactor struct {
				LockedUntil struct {
					Web     *string `json:"web"`
					Manager *string `json:"manager"`
				} `json:"lockedUntil"`
			} `json:"twoFactor"`
		} `json:"user"`
	}
	l.admin.Must(t, qLocks, map[string]any{"id": l.id}, &out)
	if out.User == nil {
		t.Fatalf("user %s not found", l.id)
	}
	return out.User.TwoFactor.LockedUntil.Web, out.User.TwoFactor.LockedUntil.Manager
}

// wantUserError asserts exactly one user error, of code.
func wantUserError(t *testing.T, what string, ues []userError, code string) userError {
	t.Helper()
	if len(ues) != 1 || ues[0].Code != code {
		t.Fatalf("%s: user errors %+v, want one %s", what, ues, code)
	}
	if ues[0].Message == "" {
		t.Errorf("%s: %s has no message", what, code)
	}
	return ues[0]
}

// wantStatus asserts a verify outcome without user errors.
func wantStatus(t *testing.T, what string, v verifyPayload, status string, remaining int) {
	t.Helper()
	if len(v.UserErrors) > 0 || v.status() != status || v.remaining() != remaining {
		t.Fatalf("%s: status %s attemptsRemaining %d userErrors %+v, want %s with %d remaining",
			what, v.status(), v.remaining(), v.UserErrors, status, remaining)
	}
	if status != "APPROVED" && v.Assertion != nil {
		t.Errorf("%s: %s carries an assertion", what, status)
	}
}

func parseTime(t *testing.T, what, v string) time.Time {
	t.Helper()
	wantDateTime(t, what, v)
	tm, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("%s = %q: %v", what, v, err)
	}
	return tm
}

func maskedPhone(p string) string { return p[:5] + strings.Repeat("*", len(p)-7) + p[len(p)-2:] }
func maskedEmail(e string) string { return e[:1] + "***" + e[strings.IndexByte(e, '@'):] }

// fetchJWKS reads the public keys the way a relying party does: from
// /.well-known/jwks.json and nothing else.
func fetchJWKS(t *testing.T, s *apptest.Server) jwk.Set {
	t.Helper()
	resp, err := http.Get(s.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.Contains(ct, "json") {
		t.Fatalf("GET /.well-known/jwks.json: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if strings.Contains(string(body), `"d"`) {
		t.Fatalf("JWKS publishes a private key: %s", body)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatalf("JWKS does not parse: %v\n%s", err, body)
	}
	if set.Len() != 1 {
		t.Fatalf("JWKS has %d keys, want 1", set.Len())
	}
	return set
}

// assertionClaims verifies an assertion with the JWKS alone, with a
// standard JOSE library, and checks its claims.
type assertionWant struct {
	company, user, app, channel, challengeID string
}

func checkAssertion(t *testing.T, s *apptest.Server, set jwk.Set, token string, want assertionWant) {
	t.Helper()
	msg, err := jws.Parse([]byte(token))
	if err != nil {
		t.Fatalf("assertion is not a JWS: %v", err)
	}
	if alg, _ := msg.Signatures()[0].ProtectedHeaders().Algorithm(); alg != jwa.EdDSA() {
		t.Errorf("alg = %v, want EdDSA", alg)
	}
	tok, err := jwt.Parse([]byte(token), jwt.WithKeySet(set), jwt.WithValidate(true),
		jwt.WithClock(jwt.ClockFunc(s.Clock.Now)), jwt.WithIssuer(app.DefaultIssuer))
	if err != nil {
		t.Fatalf("assertion does not verify with the JWKS: %v", err)
	}
	if sub, _ := tok.Subject(); sub != want.user {
		t.Errorf("sub = %q, want %q", sub, want.user)
	}
	if jti, _ := tok.JwtID(); jti != want.challengeID {
		t.Errorf("jti = %q, want the challenge id %q", jti, want.challengeID)
	}
	iat, okI := tok.IssuedAt()
	exp, okE := tok.Expiration()
	if !okI || !okE || exp.Sub(iat) != 2*time.Minute {
		t.Errorf("iat %v exp %v, want exp = iat + 120s", iat, exp)
	}
	if d := iat.Sub(s.Clock.Now()); d > time.Second || d < -time.Minute {
		t.Errorf("iat %v is not the service's now %v", iat, s.Clock.Now())
	}
	var company, appClaim string
	var amr []any
	if err := tok.Get("company", &company); err != nil || company != want.company {
		t.Errorf("company = %q (%v), want %q", company, err, want.company)
	}
	if err := tok.Get("app", &appClaim); err != nil || appClaim != want.app {
		t.Errorf("app = %q (%v), want %q", appClaim, err, want.app)
	}
	if err := tok.Get("amr", &amr); err != nil || fmt.Sprint(amr) != fmt.Sprint([]any{"otp", want.channel}) {
		t.Errorf("amr = %v (%v), want [otp %s]", amr, err, want.channel)
	}
}

// TestChallengeFlow runs the whole login for both delivery methods, both
// apps and both callers: issue, delivery, a wrong code, the right code,
// and an assertion that verifies with the published JWKS alone.
func TestChallengeFlow(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	set := fetchJWKS(t, s)
	for _, method := range []string{"SMS_WITH_EMAIL_BACKUP", "EMAIL_ONLY"} {
		co := newCompany(t, s, method)
		for _, appName := range []string{"WEB", "MANAGER"} {
			for _, caller := range []string{"user", "service"} {
				t.Run(method+"/"+appName+"/"+caller, func(t *testing.T) {
					t.Parallel()
					id := strings.ToLower(appName) + "-" + caller
					l := newLogin(t, s, co, id, uniquePhone(), uniqueEmail(), appName)
					c := l.user
					if caller == "service" {
						c = l.service
					}
					before := len(s.Outbox.All())

					p := l.issueAs(t, c, "")
					if len(p.UserErrors) > 0 || p.Challenge == nil {
						t.Fatalf("issue: %+v", p.UserErrors)
					}
					ch := *p.Challenge
					channel, to, dest, avail := "SMS", l.phone, maskedPhone(l.phone), []string{"SMS"}
					if method == "EMAIL_ONLY" {
						channel, to, dest, avail = "EMAIL", l.email, maskedEmail(l.email), []string{"EMAIL"}
					}
					if ch.App != appName || ch.Channel != channel || ch.Destination != dest || ch.Status != "PENDING" ||
						ch.AttemptsRemaining != 3 || !slices.Equal(ch.AvailableChannels, avail) {
						t.Errorf("issued %+v, want %s by %s to %s, PENDING, 3 attempts, available %v", ch, appName, channel, dest, avail)
					}
					exp := parseTime(t, "expiresAt", ch.ExpiresAt)
					resend := parseTime(t, "resendAvailableAt", ch.ResendAvailableAt)
					if d := exp.Sub(resend); d != 5*time.Minute-30*time.Second {
						t.Errorf("expiresAt - resendAvailableAt = %v, want 4m30s (5m lifetime, 30s cooldown)", d)
					}
					if d := exp.Sub(s.Clock.Now()); d <= 4*time.Minute || d > 5*time.Minute {
						t.Errorf("expiresAt is %v from now, want 5m", d)
					}

					// Delivered once, to the user's address, code in the
					// subject and both parts of an email.
					sent := s.Outbox.All()[before:]
					var mine []apptest.Sent
					for _, m := range sent {
						if m.To == l.phone || m.To == l.email {
							mine = append(mine, m)
						}
					}
					if len(mine) != 1 || mine[0].Channel != strings.ToLower(channel) || mine[0].To != to {
						t.Fatalf("delivered %+v, want one %s to %s", mine, channel, to)
					}
					code := l.code(t, ch)
					if len(code) != 6 {
						t.Fatalf("code %q is not 6 digits", code)
					}
					if channel == "EMAIL" && (!strings.Contains(mine[0].Subject, code) || !strings.Contains(mine[0].HTML, code)) {
						t.Errorf("email subject %q / HTML do not hold the code", mine[0].Subject)
					}

					if got := l.get(t, ch.ID); !reflect.DeepEqual(got, ch) {
						t.Errorf("challenge(id) = %+v, want what issue returned: %+v", got, ch)
					}
					wantStatus(t, "wrong code", verifyAs(t, c, ch.ID, wrong(code)), "REJECTED", 2)
					got := l.get(t, ch.ID)
					// After a failure a new code may be asked for at once.
					if d := s.Clock.Now().Sub(parseTime(t, "resendAvailableAt", got.ResendAvailableAt)); d < 0 || d > time.Minute {
						t.Errorf("resendAvailableAt after a wrong code is %v before now, want now", d)
					}
					wantAvail := []string{"SMS", "EMAIL"}
					if method == "EMAIL_ONLY" {
						wantAvail = []string{"EMAIL"}
					}
					if got.Status != "PENDING" || got.AttemptsRemaining != 2 || !slices.Equal(got.AvailableChannels, wantAvail) {
						t.Errorf("after a wrong code: %+v, want PENDING, 2 left, available %v", got, wantAvail)
					}

					v := verifyAs(t, c, ch.ID, code)
					wantStatus(t, "right code", v, "APPROVED", 2)
					if v.Assertion == nil {
						t.Fatal("APPROVED without an assertion")
					}
					checkAssertion(t, s, set, *v.Assertion, assertionWant{
						company: co, user: id, app: strings.ToLower(appName),
						channel: strings.ToLower(channel), challengeID: ch.ID,
					})

					// Single use.
					again := verifyAs(t, c, ch.ID, code)
					wantUserError(t, "second use", again.UserErrors, "ALREADY_USED")
					if again.Assertion != nil || again.status() == "APPROVED" {
						t.Errorf("second use: %+v", again)
					}
					if got := l.get(t, ch.ID); got.Status != "APPROVED" {
						t.Errorf("challenge after approval: %s, want APPROVED", got.Status)
					}
				})
			}
		}
	}
}

// TestChallengeMaskedDestination pins the masking format.
func TestChallengeMaskedDestination(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "jane", "+37120000078", "jane@example.com", "WEB")
	ch := l.mustIssue(t, "")
	if ch.Destination != "+3712*****78" {
		t.Errorf("SMS destination %q, want +3712*****78", ch.Destination)
	}
	wantStatus(t, "wrong", l.verify(t, ch.ID, wrong(l.code(t, ch))), "REJECTED", 2)
	ch = l.mustIssue(t, "EMAIL")
	if ch.Destination != "j***@example.com" {
		t.Errorf("email destination %q, want j***@example.com", ch.Destination)
	}
	if got := l.get(t, ch.ID); got.Destination != "j***@example.com" {
		t.Errorf("challenge(id).destination %q, want j***@example.com", got.Destination)
	}
}

// TestChallengeChannelRules walks the channel rules step by step.
func TestChallengeChannelRules(t *testing.T) {
	t.Parallel()
	// Subtests run in turn: some move the clock or fail the SMS sender.
	s := apptest.Start(t)
	se := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	eo := newCompany(t, s, "EMAIL_ONLY")

	t.Run("first code by SMS, EMAIL refused before any failure", func(t *testing.T) {
		l := newLogin(t, s, se, "first", uniquePhone(), uniqueEmail(), "WEB")
		ch := l.mustIssue(t, "")
		if ch.Channel != "SMS" || !slices.Equal(ch.AvailableChannels, []string{"SMS"}) {
			t.Fatalf("first code: %+v, want SMS with [SMS]", ch)
		}
		s.Clock.Advance(31 * time.Second) // past the resend cooldown
		p := l.issue(t, "EMAIL")
		ue := wantUserError(t, "EMAIL first", p.UserErrors, "CHANNEL_NOT_AVAILABLE")
		if !slices.Equal(ue.Field, []string{"input", "channel"}) || !slices.Equal(p.AvailableChannels, []string{"SMS"}) || p.Challenge != nil {
			t.Errorf("EMAIL first: field %v available %v challenge %v", ue.Field, p.AvailableChannels, p.Challenge)
		}
		// The refused request did not void the code that was sent.
		if got := l.get(t, ch.ID); got.Status != "PENDING" {
			t.Errorf("first code after the refusal: %s, want PENDING", got.Status)
		}
		// SMS asked for explicitly is fine.
		if ch2 := l.mustIssue(t, "SMS"); ch2.Channel != "SMS" {
			t.Errorf("explicit SMS went by %s", ch2.Channel)
		}
	})

	// Each unsuccessful attempt opens the email fallback without spending
	// an attempt, except the wrong code, which spends one.
	for _, tc := range []struct {
		name      string
		fail      func(t *testing.T, l *login, ch challengeT)
		remaining int
	}{
		{"after a wrong code", func(t *testing.T, l *login, ch challengeT) {
			wantStatus(t, "wrong", l.verify(t, ch.ID, wrong(l.code(t, ch))), "REJECTED", 2)
		}, 2},
		{"after an expired code is tried", func(t *testing.T, l *login, ch challengeT) {
			s.Clock.Advance(5 * time.Minute)
			wantStatus(t, "expired", l.verify(t, ch.ID, l.code(t, ch)), "EXPIRED", 3)
		}, 3},
		{"after a code expires untried", func(t *testing.T, l *login, ch challengeT) {
			s.Clock.Advance(5 * time.Minute)
		}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLogin(t, s, se, strings.ReplaceAll(tc.name, " ", "-"), uniquePhone(), uniqueEmail(), "WEB")
			ch := l.mustIssue(t, "")
			tc.fail(t, l, ch)
			if got := l.get(t, ch.ID); !slices.Equal(got.AvailableChannels, []string{"SMS", "EMAIL"}) {
				t.Errorf("challenge(id).availableChannels = %v, want [SMS EMAIL]", got.AvailableChannels)
			}
			em := l.mustIssue(t, "EMAIL")
			if em.Channel != "EMAIL" || em.Destination != maskedEmail(l.email) ||
				!slices.Equal(em.AvailableChannels, []string{"SMS", "EMAIL"}) || em.AttemptsRemaining != tc.remaining {
				t.Errorf("email code: %+v, want EMAIL to %s with [SMS EMAIL] and %d attempts", em, maskedEmail(l.email), tc.remaining)
			}
			wantStatus(t, "email code", l.verify(t, em.ID, l.code(t, em)), "APPROVED", tc.remaining)
		})
	}

	t.Run("after an SMS the provider refused", func(t *testing.T) {
		l := newLogin(t, s, se, "refused", uniquePhone(), uniqueEmail(), "WEB")
		s.Outbox.SetFail("sms", true)
		p := l.issue(t, "")
		s.Outbox.SetFail("sms", false)
		wantUserError(t, "refused SMS", p.UserErrors, "DELIVERY_FAILED")
		if p.Challenge != nil || !slices.Equal(p.AvailableChannels, []string{"SMS", "EMAIL"}) {
			t.Errorf("refused SMS: challenge %v available %v, want none and [SMS EMAIL]", p.Challenge, p.AvailableChannels)
		}
		// No cooldown after a failed delivery, and no attempt spent.
		em := l.mustIssue(t, "EMAIL")
		if em.Channel != "EMAIL" || em.AttemptsRemaining != 3 || !slices.Equal(em.AvailableChannels, []string{"SMS", "EMAIL"}) {
			t.Errorf("email after refused SMS: %+v", em)
		}
		wantStatus(t, "email code", l.verify(t, em.ID, l.code(t, em)), "APPROVED", 3)
	})

	t.Run("EMAIL_ONLY refuses SMS", func(t *testing.T) {
		l := newLogin(t, s, eo, "eo", uniquePhone(), uniqueEmail(), "MANAGER")
		ch := l.mustIssue(t, "")
		if ch.Channel != "EMAIL" || !slices.Equal(ch.AvailableChannels, []string{"EMAIL"}) {
			t.Errorf("EMAIL_ONLY: %+v", ch)
		}
		s.Clock.Advance(31 * time.Second)
		p := l.issue(t, "SMS")
		wantUserError(t, "SMS under EMAIL_ONLY", p.UserErrors, "CHANNEL_NOT_AVAILABLE")
		if !slices.Equal(p.AvailableChannels, []string{"EMAIL"}) {
			t.Errorf("available %v, want [EMAIL]", p.AvailableChannels)
		}
		if em := l.mustIssue(t, "EMAIL"); em.Channel != "EMAIL" {
			t.Errorf("explicit EMAIL went by %s", em.Channel)
		}
	})

	t.Run("user without a phone gets email", func(t *testing.T) {
		l := newLogin(t, s, se, "nophone", "", uniqueEmail(), "WEB")
		ch := l.mustIssue(t, "")
		if ch.Channel != "EMAIL" || ch.Destination != maskedEmail(l.email) || !slices.Equal(ch.AvailableChannels, []string{"EMAIL"}) {
			t.Errorf("no phone: %+v", ch)
		}
		wantStatus(t, "email code", l.verify(t, ch.ID, l.code(t, ch)), "APPROVED", 3)
		s.Clock.Advance(31 * time.Second)
		wantUserError(t, "SMS without a phone", l.issue(t, "SMS").UserErrors, "CHANNEL_NOT_AVAILABLE")
	})

	t.Run("user without an email has no fallback", func(t *testing.T) {
		l := newLogin(t, s, se, "noemail", uniquePhone(), "", "WEB")
		ch := l.mustIssue(t, "")
		wantStatus(t, "wrong", l.verify(t, ch.ID, wrong(l.code(t, ch))), "REJECTED", 2)
		if got := l.get(t, ch.ID); !slices.Equal(got.AvailableChannels, []string{"SMS"}) {
			t.Errorf("available %v, want [SMS]", got.AvailableChannels)
		}
		p := l.issue(t, "EMAIL")
		wantUserError(t, "EMAIL without an email", p.UserErrors, "CHANNEL_NOT_AVAILABLE")
		if !slices.Equal(p.AvailableChannels, []string{"SMS"}) {
			t.Errorf("available %v, want [SMS]", p.AvailableChannels)
		}
	})

	for _, tc := range []struct {
		name, co, phone, email string
		on                     []string
		askApp, want           string
	}{
		{"neither phone nor email", se, "", "", []string{"WEB"}, "WEB", "NO_DELIVERY_ADDRESS"},
		{"EMAIL_ONLY and no email", eo, uniquePhone(), "", []string{"WEB"}, "WEB", "NO_DELIVERY_ADDRESS"},
		{"2FA off", se, uniquePhone(), uniqueEmail(), nil, "WEB", "TWO_FACTOR_NOT_ENABLED"},
		{"2FA off for that app", se, uniquePhone(), uniqueEmail(), []string{"WEB"}, "MANAGER", "TWO_FACTOR_NOT_ENABLED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLogin(t, s, tc.co, strings.ReplaceAll(tc.name, " ", "-"), tc.phone, tc.email, tc.on...)
			l.app = tc.askApp
			before := len(s.Outbox.All())
			p := l.issue(t, "")
			wantUserError(t, tc.name, p.UserErrors, tc.want)
			if p.Challenge != nil || len(s.Outbox.All()) != before {
				t.Errorf("%s: challenge %v, %d messages sent", tc.name, p.Challenge, len(s.Outbox.All())-before)
			}
		})
	}
}

// TestChallengeLock counts wrong codes per login across re-issued codes,
// locks on the third, and unlocks by admin or by time.
func TestChallengeLock(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "locky", uniquePhone(), uniqueEmail(), "WEB", "MANAGER")
	// Lock rows come through the outbox, a moment after the answer.
	failedRows := func(n int) []eventT {
		t.Helper()
		return waitEvents(t, l.admin, map[string]any{"actions": []string{"FAILED_ATTEMPTS_LIMIT_REACHED"}}, n)
	}

	// Three wrong codes over three codes: a new code never resets the count.
	var last challengeT
	var v verifyPayload
	for i := range 3 {
		channel := ""
		if i == 2 {
			channel = "EMAIL"
		}
		ch := l.mustIssue(t, channel)
		if ch.AttemptsRemaining != 3-i {
			t.Fatalf("code %d: attemptsRemaining %d, want %d", i+1, ch.AttemptsRemaining, 3-i)
		}
		v = l.verify(t, ch.ID, wrong(l.code(t, ch)))
		if i < 2 {
			wantStatus(t, fmt.Sprintf("wrong code %d", i+1), v, "REJECTED", 2-i)
		}
		last = ch
	}
	wantStatus(t, "third wrong code", v, "LOCKED", 0)
	until := parseTime(t, "lockedUntil", str(v.LockedUntil))
	if d := until.Sub(s.Clock.Now()); d <= 14*time.Minute || d > 15*time.Minute {
		t.Errorf("locked for %v, want 15m", d)
	}
	wantHelpDesk(t, "verify LOCKED", v.ContactPerson)

	// Locked: verify, issue and reads all say so.
	again := l.verify(t, last.ID, l.code(t, last))
	wantStatus(t, "right code while locked", again, "LOCKED", 0)
	if str(again.LockedUntil) != str(v.LockedUntil) {
		t.Errorf("lockedUntil %s, then %s", str(v.LockedUntil), str(again.LockedUntil))
	}
	p := l.issue(t, "")
	wantUserError(t, "issue while locked", p.UserErrors, "LOCKED")
	if p.Challenge != nil || str(p.LockedUntil) != str(v.LockedUntil) {
		t.Errorf("issue while locked: challenge %v lockedUntil %s, want none and %s", p.Challenge, str(p.LockedUntil), str(v.LockedUntil))
	}
	wantHelpDesk(t, "issue LOCKED", p.ContactPerson)
	if got := l.get(t, last.ID); got.Status != "LOCKED" || got.AttemptsRemaining != 0 {
		t.Errorf("challenge(id) while locked: %+v", got)
	}
	if web, manager := l.lockedUntil(t); str(web) != str(v.LockedUntil) || manager != nil {
		t.Errorf("user lockedUntil web %s manager %s, want %s and null", str(web), str(manager), str(v.LockedUntil))
	}
	// The other app has its own lock.
	l.app = "MANAGER"
	if ch := l.mustIssue(t, ""); ch.AttemptsRemaining != 3 {
		t.Errorf("MANAGER while WEB is locked: %+v", ch)
	}
	l.app = "WEB"

	rows := failedRows(1)
	if len(rows) != 1 {
		t.Fatalf("FAILED_ATTEMPTS_LIMIT_REACHED rows: %d, want 1", len(rows))
	}
	e := rows[0]
	if e.Actor.ID != "locky" || str(e.Actor.Role) != "USER" || e.TargetUser == nil || e.TargetUser.ID != "locky" || str(e.App) != "WEB" {
		t.Errorf("audit row %+v, want the user as actor and target, app WEB", e)
	}

	// Only an admin unlocks.
	unlock := map[string]any{"input": map[string]any{"userId": "locky", "app": "WEB"}}
	for _, c := range []*apptest.Client{l.user, l.service} {
		wantCode(t, c.Do(t, mUnlock, unlock), "FORBIDDEN")
	}
	var out struct {
		UnlockUserTwoFactor userPayload `json:"unlockUserTwoFactor"`
	}
	adminNamed(t, s, co, "boss", "The Boss").Must(t, mUnlock, unlock, &out)
	if len(out.UnlockUserTwoFactor.UserErrors) > 0 || out.UnlockUserTwoFactor.User == nil {
		t.Fatalf("unlock: %+v", out.UnlockUserTwoFactor)
	}
	if web, _ := l.lockedUntil(t); web != nil {
		t.Errorf("lockedUntil after unlock: %s", *web)
	}
	// The unlock's row comes through the user's outbox, like the sign-in events.
	unlocked := waitEvents(t, l.admin, map[string]any{"actions": []string{"USER_TWO_FACTOR_UNLOCKED"}}, 1)
	if len(unlocked) != 1 || unlocked[0].Actor.ID != "boss" || unlocked[0].TargetUser == nil ||
		unlocked[0].TargetUser.ID != "locky" || str(unlocked[0].App) != "WEB" {
		t.Fatalf("USER_TWO_FACTOR_UNLOCKED rows %+v, want one by boss for locky on WEB", unlocked)
	}
	// A fresh login after the unlock, and unlocking again records nothing.
	ch := l.mustIssue(t, "")
	if ch.AttemptsRemaining != 3 || ch.Channel != "SMS" || !slices.Equal(ch.AvailableChannels, []string{"SMS"}) {
		t.Errorf("first code after unlock: %+v, want a fresh login", ch)
	}
	l.admin.Must(t, mUnlock, unlock, nil) // recorded below, once later rows of the user are in

	// Lock again in a new window (at most 5 codes per 15 minutes); this
	// time the lock ends by itself.
	s.Clock.Advance(15 * time.Minute)
	ch = l.mustIssue(t, "")
	for i := range 3 {
		v = l.verify(t, ch.ID, wrong(l.code(t, ch)))
		if i < 2 {
			ch = l.mustIssue(t, "")
		}
	}
	wantStatus(t, "locked again", v, "LOCKED", 0)
	if n := len(failedRows(2)); n != 2 {
		t.Errorf("FAILED_ATTEMPTS_LIMIT_REACHED rows after the second lock: %d, want 2", n)
	}
	// One user's events arrive in order: a row of the second unlock would
	// be in by now.
	if n := len(allEvents(t, l.admin, map[string]any{"actions": []string{"USER_TWO_FACTOR_UNLOCKED"}})); n != 1 {
		t.Errorf("unlocking an unlocked user wrote a row: %d rows", n)
	}
	s.Clock.Advance(15 * time.Minute)
	if web, _ := l.lockedUntil(t); web != nil {
		t.Errorf("lockedUntil after the lock duration: %s", *web)
	}
	// The code that locked is now just a rejected one.
	if got := l.get(t, ch.ID); got.Status != "REJECTED" {
		t.Errorf("locking challenge after the lock: %s, want REJECTED", got.Status)
	}
	v = l.verify(t, ch.ID, l.code(t, ch))
	wantStatus(t, "locking challenge after the lock", v, "REJECTED", 3)
	if v.LockedUntil != nil {
		t.Errorf("lockedUntil %s after the lock", *v.LockedUntil)
	}
	ch = l.mustIssue(t, "")
	if ch.AttemptsRemaining != 3 {
		t.Errorf("after the lock ended: %+v", ch)
	}
	wantStatus(t, "after the lock ended", l.verify(t, ch.ID, l.code(t, ch)), "APPROVED", 3)
}

// TestChallengeResendAndRateLimits covers the cooldown, the per-user rate,
// and that a new code voids the previous one.
func TestChallengeResendAndRateLimits(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "resender", uniquePhone(), uniqueEmail(), "WEB")

	first := l.mustIssue(t, "")
	firstCode := l.code(t, first)
	p := l.issue(t, "")
	wantUserError(t, "at once", p.UserErrors, "RESEND_TOO_SOON")
	// Real time passes too, so allow a few seconds of it.
	if p.RetryAfter == nil || *p.RetryAfter > 30 || *p.RetryAfter < 25 {
		t.Errorf("retryAfter %v, want 30", p.RetryAfter)
	}
	s.Clock.Advance(10 * time.Second)
	if p := l.issue(t, ""); p.RetryAfter == nil || *p.RetryAfter > 20 || *p.RetryAfter < 15 {
		t.Errorf("10s later: retryAfter %v, want 20", p.RetryAfter)
	}
	s.Clock.Advance(21 * time.Second)

	second := l.mustIssue(t, "")
	// The first code is void now, even the right one, and trying it does
	// not count.
	wantStatus(t, "voided code", l.verify(t, first.ID, firstCode), "EXPIRED", 3)
	if got := l.get(t, first.ID); got.Status != "EXPIRED" {
		t.Errorf("voided challenge: %s, want EXPIRED", got.Status)
	}
	if got := l.get(t, second.ID); got.Status != "PENDING" || got.AttemptsRemaining != 3 {
		t.Errorf("current challenge: %+v", got)
	}

	for i := 3; i <= 5; i++ {
		s.Clock.Advance(31 * time.Second)
		l.mustIssue(t, "")
	}
	s.Clock.Advance(31 * time.Second)
	p = l.issue(t, "")
	wantUserError(t, "sixth code", p.UserErrors, "RATE_LIMITED")
	// The first code was issued 5×31s ago; it leaves the 15m window then.
	if p.RetryAfter == nil || *p.RetryAfter > 15*60-5*31 || *p.RetryAfter < 15*60-5*31-5 {
		t.Errorf("retryAfter %v, want %d", p.RetryAfter, 15*60-5*31)
	}
	s.Clock.Advance(time.Duration(15*60-5*31) * time.Second)
	l.mustIssue(t, "")
}

// TestChallengeSMSText pins what the user reads.
func TestChallengeSMSText(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "texter", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	code := l.code(t, ch)
	want := "Your verification code is " + code + ". It expires in 5 minutes. Never share it."
	if got := s.Outbox.All()[0].Text; got != want {
		t.Errorf("SMS text %q, want %q", got, want)
	}
}

// TestChallengeSMSCompanyCap stops SMS for a company past its hourly cap,
// offers email instead, and lets SMS through again the next hour.
func TestChallengeSMSCompanyCap(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, func(o *app.Options) { o.Challenge.SMSPerCompanyPerHour = 2 })
	// Start at the top of an hour so the test's own clock moves stay in it.
	now := s.Clock.Now()
	s.Clock.Advance(now.Truncate(time.Hour).Add(time.Hour).Sub(now))
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	other := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	var ls []*login
	for i := range 3 {
		ls = append(ls, newLogin(t, s, co, fmt.Sprintf("cap%d", i), uniquePhone(), uniqueEmail(), "WEB"))
	}
	ls[0].mustIssue(t, "")
	ls[1].mustIssue(t, "")
	before := len(s.Outbox.All())
	p := ls[2].issue(t, "")
	wantUserError(t, "third SMS this hour", p.UserErrors, "RATE_LIMITED")
	if p.RetryAfter == nil || *p.RetryAfter <= 0 || *p.RetryAfter > 3600 {
		t.Errorf("retryAfter %v, want the rest of the hour", p.RetryAfter)
	}
	if len(s.Outbox.All()) != before {
		t.Error("an SMS past the cap was sent")
	}
	if !slices.Equal(p.AvailableChannels, []string{"SMS", "EMAIL"}) {
		t.Errorf("available %v, want [SMS EMAIL]", p.AvailableChannels)
	}
	if em := ls[2].mustIssue(t, "EMAIL"); em.Channel != "EMAIL" {
		t.Errorf("email past the SMS cap went by %s", em.Channel)
	}
	// The cap is per company.
	if ch := newLogin(t, s, other, "cap0", uniquePhone(), uniqueEmail(), "WEB").mustIssue(t, ""); ch.Channel != "SMS" {
		t.Errorf("another company's SMS: %+v", ch)
	}
	s.Clock.Advance(time.Hour)
	if ch := ls[2].mustIssue(t, ""); ch.Channel != "SMS" {
		t.Errorf("next hour: %+v", ch)
	}
}

// TestChallengeWhoMayCall is the role and tenant matrix of issue, verify
// and challenge(id).
func TestChallengeWhoMayCall(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	a := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	b := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	ua := newLogin(t, s, a, "alice", uniquePhone(), uniqueEmail(), "WEB")
	mate := newLogin(t, s, a, "mate", uniquePhone(), uniqueEmail(), "WEB")
	// The same user id in company B.
	ub := newLogin(t, s, b, "alice", uniquePhone(), uniqueEmail(), "WEB")

	// A's challenge that everyone below pokes at.
	ch := ua.mustIssue(t, "")
	code := ua.code(t, ch)

	issueVars := func(userID string) map[string]any {
		in := map[string]any{"app": "WEB"}
		if userID != "" {
			in["userId"] = userID
		}
		return map[string]any{"input": in}
	}
	verifyVars := map[string]any{"input": map[string]any{"challengeId": ch.ID, "code": code}}
	getVars := map[string]any{"id": ch.ID}

	// Outcomes: "ok", a user error code ("ue:X"), or a GraphQL error code.
	cases := []struct {
		who    string
		c      *apptest.Client
		query  string
		vars   map[string]any
		result string
	}{
		{"A admin issues", ua.admin, mIssue, issueVars("alice"), "FORBIDDEN"},
		{"A admin verifies", ua.admin, mVerify, verifyVars, "FORBIDDEN"},
		{"A admin reads", ua.admin, qChallenge, getVars, "FORBIDDEN"},
		{"A user issues for a mate", ua.user, mIssue, issueVars("mate"), "ue:NOT_FOUND"},
		{"A mate verifies", mate.user, mVerify, verifyVars, "ue:NOT_FOUND"},
		{"A mate reads", mate.user, qChallenge, getVars, "NOT_FOUND"},
		{"A service issues without userId", ua.service, mIssue, issueVars(""), "ue:REQUIRED"},
		{"A service issues for a stranger", ua.service, mIssue, issueVars("nobody"), "ue:NOT_FOUND"},
		{"B service issues for A's user", ub.service, mIssue, issueVars("alice"), "ok"}, // B's own alice
		{"B service verifies", ub.service, mVerify, verifyVars, "ue:NOT_FOUND"},
		{"B service reads", ub.service, qChallenge, getVars, "NOT_FOUND"},
		{"B user with the same id verifies", ub.user, mVerify, verifyVars, "ue:NOT_FOUND"},
		{"B user with the same id reads", ub.user, qChallenge, getVars, "NOT_FOUND"},
		{"B admin verifies", ub.admin, mVerify, verifyVars, "FORBIDDEN"},
		{"B service issues for A's mate", ub.service, mIssue, issueVars("mate"), "ue:NOT_FOUND"},
	}
	for _, tc := range cases {
		t.Run(tc.who, func(t *testing.T) {
			r := tc.c.Do(t, tc.query, tc.vars)
			switch {
			case tc.result == "ok":
				var out map[string]issuePayload
				r.Decode(t, &out)
				if p := out["issueChallenge"]; len(p.UserErrors) > 0 || p.Challenge == nil {
					t.Fatalf("want success, got %+v", p)
				}
			case strings.HasPrefix(tc.result, "ue:"):
				var out map[string]struct {
					UserErrors []userError `json:"userErrors"`
				}
				r.Decode(t, &out)
				for _, p := range out {
					wantUserError(t, tc.who, p.UserErrors, strings.TrimPrefix(tc.result, "ue:"))
				}
			default:
				wantCode(t, r, tc.result)
			}
			if strings.Contains(string(r.Data), code) {
				t.Errorf("response holds the code: %s", r.Data)
			}
		})
	}
	// Nothing above touched A's challenge: still pending, no attempt spent.
	if got := ua.get(t, ch.ID); got.Status != "PENDING" || got.AttemptsRemaining != 3 {
		t.Errorf("A's challenge after the others: %+v", got)
	}
	// B's alice got her own code, to her own phone.
	if len(s.Outbox.All()) != 2 || s.Outbox.All()[1].To != ub.phone {
		t.Errorf("outbox %+v", s.Outbox.All())
	}

	// The user herself, by omitting userId or naming herself, and the
	// service for her, may all act on it.
	wantStatus(t, "user names herself", verifyAs(t, ua.user, ch.ID, wrong(code)), "REJECTED", 2)
	var got struct {
		Challenge *challengeT `json:"challenge"`
	}
	ua.service.Must(t, qChallenge, getVars, &got)
	if got.Challenge == nil || got.Challenge.AttemptsRemaining != 2 {
		t.Errorf("service reads: %+v", got.Challenge)
	}
	wantStatus(t, "service verifies", verifyAs(t, ua.service, ch.ID, code), "APPROVED", 2)
	p := mutate[issuePayload](t, ua.user, mIssue, "issueChallenge", map[string]any{"app": "WEB", "userId": "alice"})
	if len(p.UserErrors) > 0 || p.Challenge == nil {
		t.Errorf("user issues naming herself: %+v", p.UserErrors)
	}
}

// TestChallengeAliases refuses whole any operation with more than one
// challenge field, so aliases cannot multiply guesses.
func TestChallengeAliases(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "aliaser", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	code := l.code(t, ch)
	sent := len(s.Outbox.All())

	var guesses strings.Builder
	for i := range 10 {
		fmt.Fprintf(&guesses, `g%d: verifyChallenge(input: {challengeId: $id, code: "%06d"}) { status attemptsRemaining assertion }
`, i, i)
	}
	for _, tc := range []struct{ name, query string }{
		{"ten aliases", `mutation($id: ID!) { ` + guesses.String() + ` }`},
		{"two aliases, one right", `mutation($id: ID!, $code: String!) {
			a: verifyChallenge(input: {challengeId: $id, code: "000000"}) { status }
			b: verifyChallenge(input: {challengeId: $id, code: $code}) { status assertion } }`},
		{"fragment spread", `mutation($id: ID!, $code: String!) { ...guess a: verifyChallenge(input: {challengeId: $id, code: "111111"}) { status } }
			fragment guess on Mutation { verifyChallenge(input: {challengeId: $id, code: $code}) { status assertion } }`},
		{"fragment used twice", `mutation($id: ID!, $code: String!) { ...guess ...{ ...guess } }
			fragment guess on Mutation { verifyChallenge(input: {challengeId: $id, code: $code}) { status assertion } }`},
		{"inline fragments", `mutation($id: ID!, $code: String!) { ... on Mutation { x: verifyChallenge(input: {challengeId: $id, code: $code}) { status } }
			... { y: verifyChallenge(input: {challengeId: $id, code: "222222"}) { status } } }`},
		{"issue and verify", `mutation($id: ID!, $code: String!) { issueChallenge(input: {app: WEB}) { challenge { id } }
			verifyChallenge(input: {challengeId: $id, code: $code}) { status assertion } }`},
		{"two issues", `mutation { a: issueChallenge(input: {app: WEB}) { challenge { id } } b: issueChallenge(input: {app: WEB, channel: SMS}) { challenge { id } } }`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := l.user.Do(t, tc.query, map[string]any{"id": ch.ID, "code": code})
			if len(r.Errors) != 1 || r.Errors[0].Code() != "TOO_MANY_CHALLENGE_FIELDS" {
				t.Fatalf("status %d errors %+v, want one TOO_MANY_CHALLENGE_FIELDS", r.Status, r.Errors)
			}
			if !strings.Contains(r.Errors[0].Message, "at most one") {
				t.Errorf("message %q does not explain the limit", r.Errors[0].Message)
			}
			if d := strings.TrimSpace(string(r.Data)); d != "" && d != "null" {
				t.Errorf("refused operation returned data %s", d)
			}
		})
	}
	// Nothing ran: no attempt counted, nothing sent, the code still works.
	if got := l.get(t, ch.ID); got.Status != "PENDING" || got.AttemptsRemaining != 3 {
		t.Errorf("after the refused operations: %+v, want PENDING with 3 attempts", got)
	}
	if n := len(s.Outbox.All()); n != sent {
		t.Errorf("refused operations sent %d messages", n-sent)
	}
	// One field, even inside a fragment, is fine.
	var out struct {
		VerifyChallenge verifyPayload `json:"verifyChallenge"`
	}
	l.user.Must(t, `mutation($id: ID!, $code: String!) { ...v } fragment v on Mutation { verifyChallenge(input: {challengeId: $id, code: $code}) { status attemptsRemaining } }`,
		map[string]any{"id": ch.ID, "code": code}, &out)
	wantStatus(t, "one field in a fragment", out.VerifyChallenge, "APPROVED", 3)
}

// TestChallengeExpiry: a code past its lifetime is EXPIRED, opens email,
// and is not a wrong code.
func TestChallengeExpiry(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "slow", uniquePhone(), uniqueEmail(), "WEB")

	ch := l.mustIssue(t, "")
	wantStatus(t, "wrong", l.verify(t, ch.ID, wrong(l.code(t, ch))), "REJECTED", 2)
	ch = l.mustIssue(t, "")
	code := l.code(t, ch)
	s.Clock.Advance(5*time.Minute - 10*time.Second)
	if got := l.get(t, ch.ID); got.Status != "PENDING" {
		t.Fatalf("just before expiry: %s", got.Status)
	}
	s.Clock.Advance(10 * time.Second)
	if got := l.get(t, ch.ID); got.Status != "EXPIRED" || got.AttemptsRemaining != 2 {
		t.Errorf("at expiry: %+v, want EXPIRED with 2 attempts", got)
	}
	wantStatus(t, "expired code", l.verify(t, ch.ID, code), "EXPIRED", 2)
	wantStatus(t, "expired code again", l.verify(t, ch.ID, wrong(code)), "EXPIRED", 2)
	got := l.get(t, ch.ID)
	if got.Status != "EXPIRED" || got.AttemptsRemaining != 2 || !slices.Equal(got.AvailableChannels, []string{"SMS", "EMAIL"}) {
		t.Errorf("after verifying the expired code: %+v", got)
	}
	em := l.mustIssue(t, "EMAIL")
	if em.AttemptsRemaining != 2 {
		t.Errorf("email code after expiry: %d attempts, want 2 (expiry is not a failure)", em.AttemptsRemaining)
	}
	// Two more wrong codes lock: the expiries never counted.
	wantStatus(t, "wrong 2", l.verify(t, em.ID, wrong(l.code(t, em))), "REJECTED", 1)
	em = l.mustIssue(t, "EMAIL")
	wantStatus(t, "wrong 3", l.verify(t, em.ID, wrong(l.code(t, em))), "LOCKED", 0)

	// The login window ends a login (email fallback, cooldown), but not
	// the count of wrong codes in a row: only a right code resets it
	// (NIST SP 800-63B 5.2.2).
	l2 := newLogin(t, s, co, "window", uniquePhone(), uniqueEmail(), "WEB")
	ch = l2.mustIssue(t, "")
	wantStatus(t, "wrong", l2.verify(t, ch.ID, wrong(l2.code(t, ch))), "REJECTED", 2)
	s.Clock.Advance(15 * time.Minute)
	ch = l2.mustIssue(t, "")
	if ch.AttemptsRemaining != 2 || !slices.Equal(ch.AvailableChannels, []string{"SMS"}) {
		t.Errorf("new login after the window: %+v, want SMS only and the wrong code still counted", ch)
	}
	wantStatus(t, "right code after the window", l2.verify(t, ch.ID, l2.code(t, ch)), "APPROVED", 2)
	s.Clock.Advance(31 * time.Second)
	if ch = l2.mustIssue(t, ""); ch.AttemptsRemaining != 3 {
		t.Errorf("after a right code: %d attempts, want 3", ch.AttemptsRemaining)
	}
}

// TestChallengeConfigurable honours CODE_LENGTH and CODE_TTL.
func TestChallengeConfigurable(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, func(o *app.Options) {
		h, err := otp.NewHasher(apptest.CodeKey, 8)
		if err != nil {
			t.Fatal(err)
		}
		o.Codes = h
		o.Challenge = challenge.Config{CodeTTL: time.Minute, ResendCooldown: 5 * time.Second}
	})
	co := newCompany(t, s, "EMAIL_ONLY")
	l := newLogin(t, s, co, "conf", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	code := l.code(t, ch)
	if len(code) != 8 {
		t.Errorf("code %q, want 8 digits", code)
	}
	if d := parseTime(t, "expiresAt", ch.ExpiresAt).Sub(parseTime(t, "resendAvailableAt", ch.ResendAvailableAt)); d != 55*time.Second {
		t.Errorf("expiresAt - resendAvailableAt = %v, want 55s", d)
	}
	v := l.verify(t, ch.ID, code[:6])
	wantUserError(t, "6 digits for an 8-digit code", v.UserErrors, "INVALID_CODE")
	if got := l.get(t, ch.ID); got.AttemptsRemaining != 3 {
		t.Errorf("a malformed code counted: %+v", got)
	}
	s.Clock.Advance(time.Minute)
	wantStatus(t, "after 1m", l.verify(t, ch.ID, code), "EXPIRED", 3)
}

// ctxT is a short context for helpers that talk to Redis directly.
func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
