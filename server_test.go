package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/testenv"
)

// TestEndToEnd builds the real binary, runs it on a free port in a temp
// dir and drives it over HTTP: health checks, a token from the `token`
// subcommand, real mutations and queries, the embedded-mode banner, and a
// graceful SIGTERM with a request in flight. With TEST_DATABASE_URL and
// TEST_REDIS_URL set it runs the binary in production mode against them.
func TestEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()

	env := cleanEnv("DATA_DIR="+dir, "LISTEN_ADDR=127.0.0.1:0", "LOG_LEVEL=info")
	embedded := !testenv.Real()
	// Production mode is DATABASE_URL set; the configuration is checked
	// before anything is reached, so any URL shows the refusal.
	backends := []string{"DATABASE_URL=postgres://nobody@127.0.0.1:1/none", "REDIS_URL=redis://127.0.0.1:1/0"}
	if !embedded {
		b := testenv.Open(t)
		backends = []string{"DATABASE_URL=" + b.DatabaseURL, "REDIS_URL=" + b.RedisURL}
	}
	out, err := runBinary(t, bin, dir, append(env, backends...))
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("DATABASE_URL without AUTH_JWT_SECRET: want a non-zero exit, got %v; output:\n%s", err, out)
	}
	if !strings.Contains(out, "AUTH_JWT_SECRET") {
		t.Fatalf("DATABASE_URL without AUTH_JWT_SECRET: the message should name it; output:\n%s", out)
	}
	if !embedded {
		// Everything production mode requires, the same as every instance
		// would get; codes are never sent in this test.
		keyFile := filepath.Join(t.TempDir(), "assertion.pem")
		if _, err := assertion.LoadOrCreateKey(keyFile); err != nil {
			t.Fatal(err)
		}
		env = append(env, backends...)
		env = append(env, "AUTH_JWT_SECRET="+randomHex(t, 32), "CODE_HMAC_KEY="+randomHex(t, 32),
			"ASSERTION_PRIVATE_KEY_FILE="+keyFile, "DEV_LOG_DELIVERY=true")
	}

	p := startBinary(t, bin, dir, env)
	base := "http://" + p.addr
	for _, path := range []string{"/healthz", "/readyz"} {
		waitOK(t, base+path)
	}

	// A token from the CLI, signed with the same secret (the same DATA_DIR
	// in embedded mode, the same AUTH_JWT_SECRET otherwise).
	tokOut, err := runBinary(t, bin, dir, env, "token", "--company", "acme", "--role", "admin", "--sub", "alice", "--name", "Alice")
	if err != nil {
		t.Fatalf("token command: %v\n%s", err, tokOut)
	}
	alice := &apptest.Client{URL: base + "/query", Token: strings.TrimSpace(tokOut)}

	var gen struct {
		UpdateGeneralSettings struct {
			Settings struct {
				General struct {
					DeliveryMethod string
					ContactPerson  struct{ Name, Email, Phone string }
				}
			}
			UserErrors []any
		}
	}
	alice.Must(t, `mutation { updateGeneralSettings(input: { deliveryMethod: EMAIL_ONLY,
		contactPerson: { name: "IT desk", email: "it@acme.example", phone: "+37120000000" } }) {
		settings { general { deliveryMethod contactPerson { name email phone } } } userErrors { code } } }`, nil, &gen)
	if g := gen.UpdateGeneralSettings; len(g.UserErrors) != 0 || g.Settings.General.DeliveryMethod != "EMAIL_ONLY" ||
		g.Settings.General.ContactPerson.Phone != "+37120000000" {
		t.Fatalf("updateGeneralSettings: %+v", g)
	}
	alice.Must(t, `mutation { updateDefaultSettings(input: { web: true }) { userErrors { code } } }`, nil, nil)

	var created struct {
		CreateUser struct {
			User struct {
				ID        string
				TwoFactor struct{ Web, Manager bool }
			}
			UserErrors []any
		}
	}
	alice.Must(t, `mutation { createUser(input: { id: "jane", email: "jane@acme.example", displayName: "Jane" }) {
		user { id twoFactor { web manager } } userErrors { code } } }`, nil, &created)
	if u := created.CreateUser; len(u.UserErrors) != 0 || u.User.ID != "jane" || !u.User.TwoFactor.Web || u.User.TwoFactor.Manager {
		t.Fatalf("createUser should follow the defaults (web on, manager off): %+v", u)
	}

	var set struct {
		SetUserTwoFactor struct {
			User       struct{ TwoFactor struct{ Web, Manager bool } }
			UserErrors []any
		}
	}
	alice.Must(t, `mutation { setUserTwoFactor(input: { userId: "jane", app: MANAGER, enabled: true }) {
		user { twoFactor { web manager } } userErrors { code } } }`, nil, &set)
	if s := set.SetUserTwoFactor; len(s.UserErrors) != 0 || !s.User.TwoFactor.Web || !s.User.TwoFactor.Manager {
		t.Fatalf("setUserTwoFactor: %+v", s)
	}

	const auditQuery = `{ auditLog(first: 10) { edges { node { action actor { id displayName } targetUser { id } app } } } }`
	var log struct {
		AuditLog struct {
			Edges []struct {
				Node struct {
					Action     string
					Actor      struct{ ID, DisplayName string }
					TargetUser *struct{ ID string }
					App        *string
				}
			}
		}
	}
	alice.Must(t, auditQuery, nil, &log)
	var actions []string
	for _, e := range log.AuditLog.Edges {
		actions = append(actions, e.Node.Action)
		if e.Node.Actor.ID != "alice" || e.Node.Actor.DisplayName != "Alice" {
			t.Errorf("audit actor = %+v, want alice/Alice", e.Node.Actor)
		}
	}
	want := []string{"USER_TWO_FACTOR_ENABLED", "USER_CREATED", "DEFAULT_SETTINGS_CHANGED", "GENERAL_SETTINGS_CHANGED"}
	if strings.Join(actions, ",") != strings.Join(want, ",") {
		t.Fatalf("audit log actions = %v, want %v (newest first)", actions, want)
	}
	if top := log.AuditLog.Edges[0].Node; top.TargetUser == nil || top.TargetUser.ID != "jane" || top.App == nil || *top.App != "MANAGER" {
		t.Fatalf("newest audit event = %+v", top)
	}

	// No token: HTTP 401 with extensions.code UNAUTHENTICATED.
	anon := (&apptest.Client{URL: base + "/query"}).Do(t, `{ __typename }`, nil)
	if anon.Status != http.StatusUnauthorized || len(anon.Errors) != 1 || anon.Errors[0].Code() != "UNAUTHENTICATED" {
		t.Fatalf("request without token: status %d, errors %+v", anon.Status, anon.Errors)
	}

	if metrics := get(t, "http://"+p.logged(t, "metrics listening")+"/metrics"); !strings.Contains(metrics, "twofactor_http_requests_total") {
		t.Fatalf("/metrics lacks the request counter:\n%.500s", metrics)
	}

	stdout := p.stdout.String()
	if embedded {
		// The banner names the pages and a working admin token for company
		// demo; each page load from this machine gets a token of its own.
		playground := regexp.MustCompile(`Playground:\s+(http://\S+)`).FindStringSubmatch(stdout)
		demoTok := regexp.MustCompile(`Admin token for company "demo"[^\n]*\n(\S+)`).FindStringSubmatch(stdout)
		if playground == nil || demoTok == nil {
			t.Fatalf("embedded mode should print the playground URL and a demo admin token; stdout:\n%s", stdout)
		}
		if want := strings.Replace(base, "127.0.0.1", "localhost", 1) + "/"; playground[1] != want {
			t.Errorf("playground URL = %s, want %s", playground[1], want)
		}
		for _, page := range []string{"Admin console:", "Demo login:"} {
			if !strings.Contains(stdout, page+" ") {
				t.Errorf("banner lacks %q; stdout:\n%s", page, stdout)
			}
		}
		pageTok := regexp.MustCompile(`&#34;token&#34;:&#34;([^&]+)&#34;`).FindStringSubmatch(get(t, playground[1]))
		if pageTok == nil {
			t.Fatalf("playground page for a loopback visitor carries no token")
		}
		var who struct{ TwoFactorSettings struct{ UpdatedAt string } }
		(&apptest.Client{URL: base + "/query", Token: pageTok[1]}).Must(t, `{ twoFactorSettings { updatedAt } }`, nil, &who)
		demo := &apptest.Client{URL: base + "/query", Token: demoTok[1]}
		var s struct {
			TwoFactorSettings struct {
				General struct{ DeliveryMethod string }
			}
		}
		demo.Must(t, `{ twoFactorSettings { general { deliveryMethod } } }`, nil, &s)
		if s.TwoFactorSettings.General.DeliveryMethod != "SMS_WITH_EMAIL_BACKUP" {
			t.Errorf("demo company settings = %+v, want the defaults (acme's changes must not show)", s)
		}
		var demoLog struct{ AuditLog struct{ Edges []any } }
		demo.Must(t, auditQuery, nil, &demoLog)
		if n := len(demoLog.AuditLog.Edges); n != 0 {
			t.Errorf("demo company audit log has %d events; the token should be for company demo, not acme", n)
		}
	} else if strings.Contains(stdout, "token") {
		t.Errorf("production mode must not print a token; stdout:\n%s", stdout)
	}

	// SIGTERM with a request in flight: the server stops accepting, lets
	// the request finish, then exits 0. The request's body is held open
	// until the listener is gone; "Expect: 100-continue" tells us the
	// handler has started reading it.
	body, _ := json.Marshal(map[string]string{"query": `{ twoFactorSettings { general { deliveryMethod } } }`})
	pr, pw := io.Pipe()
	reading := make(chan struct{})
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got100Continue: func() { close(reading) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/query", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+alice.Token)
	req.Header.Set("Expect", "100-continue")
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{status: resp.StatusCode, body: string(b), err: err}
	}()
	if _, err := pw.Write(body[:10]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-reading:
	case r := <-done:
		t.Fatalf("request ended before its body was sent: %+v", r)
	case <-time.After(30 * time.Second):
		t.Fatal("server never started reading the request body")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the listener to close after SIGTERM", func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-p.exited:
		t.Fatalf("server exited (%v) with a request in flight; stderr:\n%s", err, p.stderr.String())
	default:
	}
	if _, err := pw.Write(body[10:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"deliveryMethod":"EMAIL_ONLY"`) {
		t.Fatalf("in-flight request: status %d, err %v, body %s; stderr:\n%s", r.status, r.err, r.body, p.stderr.String())
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("server exit after SIGTERM: %v; stderr:\n%s", err, p.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not exit after SIGTERM; stderr:\n%s", p.stderr.String())
	}
	if strings.Contains(p.stderr.String(), alice.Token) {
		t.Error("a token was logged")
	}
}

// buildBinary compiles this package into a temp dir.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "twofactor")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// cleanEnv is a minimal environment plus extra, so no configuration of
// the machine running the tests reaches the binary. Metrics listen on a
// free port, so binaries running at once never compete for the default.
func cleanEnv(extra ...string) []string {
	env := []string{"METRICS_ADDR=127.0.0.1:0"}
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOCOVERDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}

// runBinary runs bin to completion and returns its combined output.
func runBinary(t *testing.T, bin, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

type process struct {
	cmd            *exec.Cmd
	addr           string
	stdout, stderr *apptest.Buffer
	exited         chan error
}

// startBinary starts the server and waits until it logs its address.
func startBinary(t *testing.T, bin, dir string, env []string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin), stdout: &apptest.Buffer{}, stderr: &apptest.Buffer{}, exited: make(chan error, 1)}
	p.cmd.Dir, p.cmd.Env = dir, env
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill() // no-op once it has exited
		if t.Failed() {
			t.Logf("server stderr:\n%s", p.stderr.String())
		}
	})
	listening := regexp.MustCompile(`"msg":"listening","addr":"([^"]+)"`)
	waitUntil(t, "the server to log its address", func() bool {
		select {
		case err := <-p.exited:
			t.Fatalf("server exited at startup: %v\nstdout:\n%s\nstderr:\n%s", err, p.stdout.String(), p.stderr.String())
		default:
		}
		if m := listening.FindStringSubmatch(p.stderr.String()); m != nil {
			p.addr = m[1]
			return true
		}
		return false
	})
	return p
}

// logged returns the addr of the first log line with message msg.
func (p *process) logged(t *testing.T, msg string) string {
	t.Helper()
	re := regexp.MustCompile(`"msg":"` + regexp.QuoteMeta(msg) + `","addr":"([^"]+)"`)
	m := re.FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("no %q log line; stderr:\n%s", msg, p.stderr.String())
	}
	return m[1]
}

func waitOK(t *testing.T, url string) {
	t.Helper()
	waitUntil(t, url+" to answer 200", func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitUntil polls ok until it holds, failing the test after a generous
// deadline. It waits for readiness; it measures nothing.
func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestCommands: every command answers --help on stdout with exit 0, a
// mistake exits 1 with a message, and `token` warns (on stderr, so the
// token on stdout stays usable) when it had to create a secret the server
// does not have.
func TestCommands(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	env := cleanEnv()
	cases := []struct {
		args           []string
		wantExit       int
		stdout, stderr string
	}{
		{[]string{"--help"}, 0, "twofactor token [flags]", ""},
		{[]string{"help"}, 0, "twofactor COMMAND --help", ""},
		{[]string{"serve", "--help"}, 0, "/admin/", ""},
		{[]string{"-h"}, 0, "Usage:", ""},
		{[]string{"token", "--help"}, 0, "-company", ""},
		{[]string{"token", "--role", "boss"}, 1, "", "--role must be admin, service or user"},
		{[]string{"token", "extra"}, 1, "", "unexpected argument"},
		{[]string{"serve", "extra"}, 1, "", `serve: unexpected argument "extra" (see serve --help)`},
		{[]string{"bogus"}, 1, "", `unknown command "bogus"`},
		{[]string{"token"}, 0, "eyJ", "warning: no secret was configured, so a new one was created"},
		{[]string{"token"}, 0, "eyJ", ""}, // the secret exists now: no warning
	}
	for _, tc := range cases {
		cmd := exec.Command(bin, tc.args...)
		cmd.Dir, cmd.Env = dir, env
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		exit := 0
		if ee, ok := err.(*exec.ExitError); ok {
			exit = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.Join(tc.args, " ")
		if exit != tc.wantExit {
			t.Errorf("%s: exit %d, want %d (stderr %q)", name, exit, tc.wantExit, stderr.String())
		}
		if !strings.Contains(stdout.String(), tc.stdout) {
			t.Errorf("%s: stdout %q lacks %q", name, stdout.String(), tc.stdout)
		}
		if tc.stderr == "" && stderr.Len() > 0 {
			t.Errorf("%s: unexpected stderr %q", name, stderr.String())
		}
		if !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%s: stderr %q lacks %q", name, stderr.String(), tc.stderr)
		}
	}
}

// startEmbedded builds the binary and runs it in embedded mode (whatever
// backends the tests use: these checks are about the HTTP edge) with env
// added.
func startEmbedded(t *testing.T, env ...string) *process {
	t.Helper()
	bin := buildBinary(t)
	dir := t.TempDir()
	p := startBinary(t, bin, dir, cleanEnv(append([]string{"DATA_DIR=" + dir, "LISTEN_ADDR=127.0.0.1:0"}, env...)...))
	waitOK(t, "http://"+p.addr+"/healthz")
	return p
}

// Finding 1 (the listener half): /metrics is not on the public port but
// on METRICS_ADDR, and METRICS_ADDR set empty turns it off.
func TestUnboundedMetricLabels(t *testing.T) {
	p := startEmbedded(t)
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on LISTEN_ADDR = %d, want 404", resp.StatusCode)
	}
	addr := p.logged(t, "metrics listening")
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Errorf("metrics listen on %s, want loopback", addr)
	}
	if text := get(t, "http://"+addr+"/metrics"); !strings.Contains(text, `twofactor_http_requests_total{method="GET",route="/healthz",status="200"}`) {
		t.Errorf("metrics listener lacks the request counter:\n%.500s", text)
	}

	off := startEmbedded(t, "METRICS_ADDR=")
	if !strings.Contains(off.stderr.String(), "metrics are off") || strings.Contains(off.stderr.String(), "metrics listening") {
		t.Errorf("METRICS_ADDR= should turn metrics off; stderr:\n%s", off.stderr.String())
	}
}

// Finding 3: a request that declares a body and never sends it is
// answered and its connection closed, not held; headers are bounded.
func TestNoBodyDeadline(t *testing.T) {
	p := startEmbedded(t)
	cases := []struct {
		name, raw string
		status    int
	}{
		{"anonymous POST, body never sent",
			"POST /query HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n", 401},
		{"20 KiB of headers",
			"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n", 431},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A safety net: the server is expected to close at once.
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.WriteString(c, tc.raw); err != nil {
				t.Fatal(err)
			}
			all, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("the server held the connection (%v) after %q", err, firstLine(all))
			}
			if want := fmt.Sprintf("HTTP/1.1 %d ", tc.status); !strings.HasPrefix(string(all), want) {
				t.Errorf("response %q, want %s", firstLine(all), want)
			}
		})
	}
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line
}

// Finding 4: embedded mode on a loopback LISTEN_ADDR refuses a Host that
// is not this machine (DNS rebinding); an explicit LISTEN_ADDR open to the
// network serves any Host.
func TestDNSRebinding(t *testing.T) {
	cases := []struct {
		listen string
		host   string
		status int
	}{
		{"127.0.0.1:0", "rebind.attacker.example", http.StatusMisdirectedRequest},
		{"127.0.0.1:0", "localhost", http.StatusOK},
		{"0.0.0.0:0", "rebind.attacker.example", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.listen+" "+tc.host, func(t *testing.T) {
			p := startEmbedded(t, "LISTEN_ADDR="+tc.listen)
			_, port, err := net.SplitHostPort(p.addr)
			if err != nil {
				t.Fatal(err)
			}
			req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+port+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tc.status, body)
			}
			if tc.status != http.StatusOK && !strings.Contains(string(body), `"code":"MISDIRECTED_REQUEST"`) {
				t.Errorf("body %s, want a MISDIRECTED_REQUEST error", body)
			}
		})
	}
}
