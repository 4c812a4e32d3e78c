package graph_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
)

// Selections shared by the tests.
const (
	settingsFields = `general { deliveryMethod contactPerson { name email phone } } defaults { web manager } updatedAt`
	userFields     = `id email phone displayName twoFactor { web manager } createdAt`
	eventFields    = `id action actor { id displayName role } targetUser { id displayName } app details createdAt`
	pageInfoFields = `pageInfo { hasNextPage hasPreviousPage startCursor endCursor }`
)

// Mutations and queries as the frontends send them.
const (
	qSettings         = `query { twoFactorSettings { ` + settingsFields + ` } }`
	qUser             = `query($id: ID!) { user(id: $id) { ` + userFields + ` } }`
	qMe               = `query { me { ` + userFields + ` } }`
	qUsers            = `query($first: Int, $after: String, $query: String) { users(first: $first, after: $after, query: $query) { edges { cursor node { ` + userFields + ` } } ` + pageInfoFields + ` } }`
	qAudit            = `query($first: Int, $after: String, $last: Int, $before: String, $filter: AuditLogFilter) { auditLog(first: $first, after: $after, last: $last, before: $before, filter: $filter) { edges { cursor node { ` + eventFields + ` } } ` + pageInfoFields + ` } }`
	mUpdateGeneral    = `mutation($input: UpdateGeneralSettingsInput!) { updateGeneralSettings(input: $input) { settings { ` + settingsFields + ` } userErrors { field code message } } }`
	mUpdateDefaults   = `mutation($input: UpdateDefaultSettingsInput!) { updateDefaultSettings(input: $input) { settings { ` + settingsFields + ` } userErrors { field code message } } }`
	mCreateUser       = `mutation($input: CreateUserInput!) { createUser(input: $input) { user { ` + userFields + ` } userErrors { field code message } } }`
	mSetUserTwoFactor = `mutation($input: SetUserTwoFactorInput!) { setUserTwoFactor(input: $input) { user { ` + userFields + ` } userErrors { field code message } } }`
)

type contact struct {
	Name  string  `json:"name"`
	Email *string `json:"email"`
	Phone *string `json:"phone"`
}

type settingsT struct {
	General struct {
		DeliveryMethod string   `json:"deliveryMethod"`
		ContactPerson  *contact `json:"contactPerson"`
	} `json:"general"`
	Defaults struct {
		Web     bool `json:"web"`
		Manager bool `json:"manager"`
	} `json:"defaults"`
	UpdatedAt string `json:"updatedAt"`
}

type userT struct {
	ID          string  `json:"id"`
	Email       *string `json:"email"`
	Phone       *string `json:"phone"`
	DisplayName *string `json:"displayName"`
	TwoFactor   struct {
		Web     bool `json:"web"`
		Manager bool `json:"manager"`
	} `json:"twoFactor"`
	CreatedAt string `json:"createdAt"`
}

type actorT struct {
	ID          string  `json:"id"`
	DisplayName *string `json:"displayName"`
	Role        *string `json:"role"`
}

type eventT struct {
	ID         string          `json:"id"`
	Action     string          `json:"action"`
	Actor      actorT          `json:"actor"`
	TargetUser *actorT         `json:"targetUser"`
	App        *string         `json:"app"`
	Details    json.RawMessage `json:"details"`
	CreatedAt  string          `json:"createdAt"`
}

type pageInfoT struct {
	HasNextPage     bool    `json:"hasNextPage"`
	HasPreviousPage bool    `json:"hasPreviousPage"`
	StartCursor     *string `json:"startCursor"`
	EndCursor       *string `json:"endCursor"`
}

type userConn struct {
	Edges []struct {
		Cursor string `json:"cursor"`
		Node   userT  `json:"node"`
	} `json:"edges"`
	PageInfo pageInfoT `json:"pageInfo"`
}

func (c userConn) ids() []string {
	out := make([]string, len(c.Edges))
	for i, e := range c.Edges {
		out[i] = e.Node.ID
	}
	return out
}

type eventConn struct {
	Edges []struct {
		Cursor string `json:"cursor"`
		Node   eventT `json:"node"`
	} `json:"edges"`
	PageInfo pageInfoT `json:"pageInfo"`
}

func (c eventConn) nodes() []eventT {
	out := make([]eventT, len(c.Edges))
	for i, e := range c.Edges {
		out[i] = e.Node
	}
	return out
}

type userError struct {
	Field   []string `json:"field"`
	Code    string   `json:"code"`
	Message string   `json:"message"`
}

type settingsPayload struct {
	Settings   *settingsT  `json:"settings"`
	UserErrors []userError `json:"userErrors"`
}

type userPayload struct {
	User       *userT      `json:"user"`
	UserErrors []userError `json:"userErrors"`
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// getSettings reads the company settings as its admin.
func getSettings(t *testing.T, c *apptest.Client) settingsT {
	t.Helper()
	var out struct {
		TwoFactorSettings settingsT `json:"twoFactorSettings"`
	}
	c.Must(t, qSettings, nil, &out)
	return out.TwoFactorSettings
}

// updateGeneral runs updateGeneralSettings and fails on user errors.
func updateGeneral(t *testing.T, c *apptest.Client, input map[string]any) settingsT {
	t.Helper()
	p := mutate[settingsPayload](t, c, mUpdateGeneral, "updateGeneralSettings", input)
	if len(p.UserErrors) > 0 || p.Settings == nil {
		t.Fatalf("updateGeneralSettings(%v): user errors %+v", input, p.UserErrors)
	}
	return *p.Settings
}

// updateDefaults runs updateDefaultSettings and fails on user errors.
func updateDefaults(t *testing.T, c *apptest.Client, input map[string]any) settingsT {
	t.Helper()
	p := mutate[settingsPayload](t, c, mUpdateDefaults, "updateDefaultSettings", input)
	if len(p.UserErrors) > 0 || p.Settings == nil {
		t.Fatalf("updateDefaultSettings(%v): user errors %+v", input, p.UserErrors)
	}
	return *p.Settings
}

// createUser runs createUser and fails on user errors.
func createUser(t *testing.T, c *apptest.Client, input map[string]any) userT {
	t.Helper()
	p := mutate[userPayload](t, c, mCreateUser, "createUser", input)
	if len(p.UserErrors) > 0 || p.User == nil {
		t.Fatalf("createUser(%v): user errors %+v", input, p.UserErrors)
	}
	return *p.User
}

// setTwoFactor runs setUserTwoFactor and fails on user errors.
func setTwoFactor(t *testing.T, c *apptest.Client, userID, app string, enabled bool) userT {
	t.Helper()
	p := mutate[userPayload](t, c, mSetUserTwoFactor, "setUserTwoFactor",
		map[string]any{"userId": userID, "app": app, "enabled": enabled})
	if len(p.UserErrors) > 0 || p.User == nil {
		t.Fatalf("setUserTwoFactor(%s, %s, %v): user errors %+v", userID, app, enabled, p.UserErrors)
	}
	return *p.User
}

// mutate runs a mutation with $input and returns its payload, which may
// hold user errors; GraphQL errors fail the test.
func mutate[P any](t *testing.T, c *apptest.Client, query, field string, input map[string]any) P {
	t.Helper()
	var out map[string]P
	c.Must(t, query, map[string]any{"input": input}, &out)
	p, ok := out[field]
	if !ok {
		t.Fatalf("response has no %s", field)
	}
	return p
}

// getUser reads one user; nil when the result is null.
func getUser(t *testing.T, c *apptest.Client, id string) *userT {
	t.Helper()
	var out struct {
		User *userT `json:"user"`
	}
	c.Must(t, qUser, map[string]any{"id": id}, &out)
	return out.User
}

// listUsers runs users(...) with vars.
func listUsers(t *testing.T, c *apptest.Client, vars map[string]any) userConn {
	t.Helper()
	var out struct {
		Users userConn `json:"users"`
	}
	c.Must(t, qUsers, vars, &out)
	return out.Users
}

// auditPage runs auditLog(...) with vars.
func auditPage(t *testing.T, c *apptest.Client, vars map[string]any) eventConn {
	t.Helper()
	var out struct {
		AuditLog eventConn `json:"auditLog"`
	}
	c.Must(t, qAudit, vars, &out)
	return out.AuditLog
}

// allEvents walks the whole (filtered) log, newest first.
func allEvents(t *testing.T, c *apptest.Client, filter map[string]any) []eventT {
	t.Helper()
	var all []eventT
	vars := map[string]any{"first": 100, "filter": filter}
	for {
		p := auditPage(t, c, vars)
		all = append(all, p.nodes()...)
		if !p.PageInfo.HasNextPage {
			return all
		}
		vars["after"] = *p.PageInfo.EndCursor
	}
}

// wantCode asserts that r failed with exactly one GraphQL error of code,
// and with HTTP 200 (GraphQL errors are not transport errors).
func wantCode(t *testing.T, r apptest.Response, code string) {
	t.Helper()
	if r.Status != 200 {
		t.Fatalf("status %d, want 200; errors %+v", r.Status, r.Errors)
	}
	if got := r.Codes(); !slices.Equal(got, []string{code}) {
		t.Fatalf("error codes %v, want [%s]; errors %+v", got, code, r.Errors)
	}
}

// adminNamed is an admin client whose token carries a display name.
func adminNamed(t *testing.T, s *apptest.Server, company, sub, name string) *apptest.Client {
	t.Helper()
	return s.As(t, auth.Caller{UserID: sub, Company: company, Role: auth.RoleAdmin, Name: name})
}
