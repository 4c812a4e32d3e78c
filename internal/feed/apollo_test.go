package feed_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/testenv"
)

// apolloEvent is an event line of apollo.mjs.
type apolloEvent struct {
	Cursor string `json:"cursor"`
	ID     string `json:"id"`
	Action string `json:"action"`
}

// Apollo Client 3, as the frontends use it, works against the service:
// queries and mutations over its HttpLink (with the client-awareness
// headers), subscriptions over its GraphQLWsLink (graphql-ws), and errors
// as an ApolloError with the server's extensions.code.
func TestApolloClient(t *testing.T) {
	t.Parallel()
	dir := apptest.NodeClient(t) // skips (or fails on CI) without node
	s := apptest.Start(t)
	co := testenv.Company(t)
	// Two events to resume from: the script subscribes after the older,
	// and once the newer is replayed the stream is live.
	createUsers(t, s, co, "apollo", 2)
	seeded, _ := logIDs(t, s, co, nil)

	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "apollo.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"URL="+s.URL+"/query",
		"WS_URL=ws"+strings.TrimPrefix(s.URL, "http")+"/query",
		"TOKEN="+s.Token(t, admin(co)),
		"USER_TOKEN="+s.Token(t, auth.Caller{UserID: "apollo-0", Company: co, Role: auth.RoleUser}))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node apollo.mjs: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	t.Logf("apollo.mjs printed:\n%s", out)
	if stderr.Len() > 0 {
		t.Logf("apollo.mjs stderr:\n%s", stderr.String())
	}

	// One line per step, each an object with one key, in this order.
	var (
		keys []string
		got  = map[string]json.RawMessage{}
	)
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		var l map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &l); err != nil || len(l) != 1 {
			t.Fatalf("unexpected line %q (%v)", line, err)
		}
		for k, v := range l {
			keys = append(keys, k)
			got[k] = v
		}
	}
	want := []string{"headers", "query", "connected", "subscribed", "mutation", "event", "forbidden"}
	if !slices.Equal(keys, want) {
		t.Fatalf("lines %v, want %v; output:\n%s", keys, want, out)
	}
	decode := func(key string, v any) {
		t.Helper()
		if err := json.Unmarshal(got[key], v); err != nil {
			t.Fatalf("%s line %s: %v", key, got[key], err)
		}
	}

	var headers map[string]*string
	decode("headers", &headers)
	for h, v := range map[string]string{
		"apollographql-client-name": "apollo-client-check", "apollographql-client-version": "1.0.0", "authorization": "Bearer …",
	} {
		if headers[h] == nil || *headers[h] != v {
			t.Errorf("request header %s = %v, want %q", h, headers[h], v)
		}
	}

	var query struct {
		TwoFactorSettings struct {
			General  struct{ DeliveryMethod string } `json:"general"`
			Defaults struct{ Web, Manager bool }     `json:"defaults"`
		} `json:"twoFactorSettings"`
	}
	decode("query", &query)
	if q := query.TwoFactorSettings; q.General.DeliveryMethod != "SMS_WITH_EMAIL_BACKUP" || q.Defaults.Web || q.Defaults.Manager {
		t.Errorf("query gave %s, want the defaults (SMS_WITH_EMAIL_BACKUP, web and manager off)", got["query"])
	}

	var subscribed apolloEvent
	decode("subscribed", &subscribed)
	if subscribed.ID != seeded[1] || subscribed.Action != "USER_CREATED" || idOf(t, s, co, subscribed.Cursor) != seeded[1] {
		t.Errorf("replayed event %+v, want USER_CREATED %s", subscribed, seeded[1])
	}

	var mutation struct {
		UpdateDefaultSettings struct {
			Settings   struct{ Defaults struct{ Web bool } } `json:"settings"`
			UserErrors []struct{ Code string }               `json:"userErrors"`
		} `json:"updateDefaultSettings"`
	}
	decode("mutation", &mutation)
	if m := mutation.UpdateDefaultSettings; !m.Settings.Defaults.Web || len(m.UserErrors) > 0 {
		t.Errorf("mutation gave %s, want web on and no userErrors", got["mutation"])
	}

	var event apolloEvent
	decode("event", &event)
	all, _ := logIDs(t, s, co, nil)
	if want := append(slices.Clone(seeded), event.ID); !slices.Equal(all, want) {
		t.Errorf("log %v, want the seeded events and the one the client got: %v", all, want)
	}
	if event.Action != "DEFAULT_SETTINGS_CHANGED" || event.ID != lastID(t, s, co) || idOf(t, s, co, event.Cursor) != event.ID {
		t.Errorf("live event %+v, want DEFAULT_SETTINGS_CHANGED %s", event, lastID(t, s, co))
	}

	var forbidden struct {
		Name, Code string
		Path       []string
	}
	decode("forbidden", &forbidden)
	if forbidden.Name != "ApolloError" || forbidden.Code != "FORBIDDEN" || !slices.Equal(forbidden.Path, []string{"twoFactorSettings"}) {
		t.Errorf("user's query gave %s, want an ApolloError with FORBIDDEN at twoFactorSettings", got["forbidden"])
	}

	// The change is real, not just what the client was told.
	settings, err := s.App.Settings.ForCompany(context.Background(), co)
	if err != nil {
		t.Fatal(err)
	}
	if !settings.Defaults[apps.Web] || settings.Defaults[apps.Manager] {
		t.Errorf("settings after the client: web %v manager %v, want web on, manager off", settings.Defaults[apps.Web], settings.Defaults[apps.Manager])
	}
}
