package graph_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twofactor/service/graph"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

const qIntegrity = `query($from: DateTime, $to: DateTime, $category: AuditCategory) {
	auditLogIntegrity(from: $from, to: $to, category: $category) { ok checkedRows firstBrokenEventId problems } }`

type integrityT struct {
	OK                 bool     `json:"ok"`
	CheckedRows        int      `json:"checkedRows"`
	FirstBrokenEventID *string  `json:"firstBrokenEventId"`
	Problems           []string `json:"problems"`
}

func integrity(t *testing.T, c *apptest.Client, vars map[string]any) integrityT {
	t.Helper()
	var out struct {
		AuditLogIntegrity integrityT `json:"auditLogIntegrity"`
	}
	c.Must(t, qIntegrity, vars, &out)
	return out.AuditLogIntegrity
}

// TestAuditLogIntegrity: admins check their company's chains; a row
// changed with plain SQL is named by the id auditLog shows; other
// companies, other roles and backwards windows are refused or unaffected.
func TestAuditLogIntegrity(t *testing.T) {
	s := apptest.Start(t)
	company, other := testenv.Company(t), testenv.Company(t)
	admin := s.Admin(t, company)
	for _, id := range []string{"ann", "bob", "cy"} {
		createUser(t, admin, map[string]any{"id": id})
	}
	createUser(t, s.Admin(t, other), map[string]any{"id": "dan"})
	if got := integrity(t, admin, nil); !got.OK || got.CheckedRows != 3 || got.FirstBrokenEventID != nil || got.Problems == nil || len(got.Problems) != 0 {
		t.Fatalf("intact log: %+v, want ok over 3 rows", got)
	}
	var log struct {
		AuditLog eventConn `json:"auditLog"`
	}
	admin.Must(t, qAudit, map[string]any{"first": 10}, &log)
	nodes := log.AuditLog.nodes()
	if len(nodes) != 3 {
		t.Fatalf("%d audit rows, want 3", len(nodes))
	}
	changed := nodes[1] // newest first: the middle one
	rowID, err := s.Audit.ParseID(company, changed.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Backends.DB.Exec(`UPDATE audit_events SET details = '{"forged":true}' WHERE company_id = ? AND id = ?`,
		company, rowID).Error; err != nil {
		t.Fatal(err)
	}
	got := integrity(t, admin, nil)
	if got.OK || got.FirstBrokenEventID == nil || *got.FirstBrokenEventID != changed.ID || got.CheckedRows != 2 {
		t.Errorf("after the change: %+v, want row %s named after 2 rows", got, changed.ID)
	}
	if len(got.Problems) != 0 {
		t.Errorf("a changed row: problems %q, want none (the row is named)", got.Problems)
	}
	if got := integrity(t, admin, map[string]any{"category": "AUTHENTICATION"}); !got.OK || got.CheckedRows != 0 {
		t.Errorf("the sign-in chain: %+v, want ok and empty", got)
	}
	if got := integrity(t, s.Admin(t, other), nil); !got.OK || got.CheckedRows != 1 {
		t.Errorf("another company: %+v, want ok over its 1 row", got)
	}
	now := time.Now().UTC()
	for name, tc := range map[string]struct {
		c    *apptest.Client
		vars map[string]any
		code string
	}{
		"user":           {s.User(t, company, "ann"), nil, "FORBIDDEN"},
		"service":        {s.Service(t, company), nil, "FORBIDDEN"},
		"no token":       {&apptest.Client{URL: s.URL + "/query"}, nil, "UNAUTHENTICATED"},
		"to before from": {admin, map[string]any{"from": now, "to": now.Add(-time.Minute)}, "BAD_USER_INPUT"},
	} {
		r := tc.c.Do(t, qIntegrity, tc.vars)
		if !slices.Contains(r.Codes(), tc.code) {
			t.Errorf("%s: codes %v, want %s", name, r.Codes(), tc.code)
		}
	}
}

// TestIntegrityAliases is red-team finding 3: auditLogIntegrity walks up
// to the company's whole log, so it costs more than half the complexity
// budget: one per operation, never a walk per alias.
func TestIntegrityAliases(t *testing.T) {
	s := apptest.Start(t)
	company := testenv.Company(t)
	admin := s.Admin(t, company)
	createUser(t, admin, map[string]any{"id": "ann"})
	many := "{"
	for i := range 178 {
		many += fmt.Sprintf(" a%d: auditLogIntegrity { checkedRows }", i)
	}
	many += " }"
	for name, tc := range map[string]struct {
		query string
		code  string // "": accepted
	}{
		"one":               {`{ auditLogIntegrity { ok checkedRows } }`, ""},
		"one beside a page": {`{ auditLogIntegrity { ok } auditLog(first: 20) { edges { node { id action } } } }`, ""},
		"two aliases":       {`{ a: auditLogIntegrity { ok } b: auditLogIntegrity(category: SETTINGS) { ok } }`, graph.CodeComplexityLimitExceeded},
		"178 aliases":       {many, graph.CodeComplexityLimitExceeded},
	} {
		r := admin.Do(t, tc.query, nil)
		ran := len(r.Data) > 0 && string(r.Data) != "null"
		switch {
		case tc.code == "" && (len(r.Errors) > 0 || !ran):
			t.Errorf("%s: refused with %v", name, r.Codes())
		case tc.code != "" && (!slices.Contains(r.Codes(), tc.code) || ran):
			t.Errorf("%s: codes %v, data %s; want %s before anything runs", name, r.Codes(), r.Data, tc.code)
		}
	}
}

// TestIntegrityProblemWithoutARow: a chain broken by something other than
// a row (here a retention checkpoint on the settings chain, which
// retention never cuts) is not ok and says why, though no row is named.
func TestIntegrityProblemWithoutARow(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	company := testenv.Company(t)
	admin := s.Admin(t, company)
	createUser(t, admin, map[string]any{"id": "ann"})
	if err := s.Backends.DB.Exec(`INSERT INTO audit_checkpoints (company_id, category, last_id, hash, prev_hash, last_row, removed, updated_at)
		VALUES (?, 'SETTINGS', 0, ?, '', '', 1, ?)`, company, strings.Repeat("0", 64), time.Now().UTC()).Error; err != nil {
		t.Fatal(err)
	}
	got := integrity(t, admin, nil)
	if got.OK || got.FirstBrokenEventID != nil || len(got.Problems) != 1 ||
		!strings.HasPrefix(got.Problems[0], "SETTINGS: ") || !strings.Contains(got.Problems[0], "checkpoint") {
		t.Errorf("integrity %+v, want not ok, no row, and the settings chain's checkpoint named", got)
	}
}
