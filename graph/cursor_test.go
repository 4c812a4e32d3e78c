package graph_test

import (
	"encoding/base64"
	"encoding/binary"
	"slices"
	"strconv"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// interleaved creates n users in each of two companies, alternating, so
// that each company's audit rows are every other row of the table.
func interleaved(t *testing.T, s *apptest.Server, n int) (coA, coB string) {
	t.Helper()
	coA, coB = testenv.Company(t), testenv.Company(t)
	a, b := s.Admin(t, coA), s.Admin(t, coB)
	for i := range n {
		createUser(t, a, map[string]any{"id": "u" + strconv.Itoa(i)})
		createUser(t, b, map[string]any{"id": "u" + strconv.Itoa(i)})
	}
	return coA, coB
}

// TestCursorsAcceptTooMuch (issue 8, finding 10): auditLog and users take
// only cursors this service handed out to the same company for the same
// list: forged, foreign and other-kind cursors are BAD_CURSOR.
func TestCursorsAcceptTooMuch(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	coA, coB := interleaved(t, s, 3)
	a, b := s.Admin(t, coA), s.Admin(t, coB)
	auditA, usersA := auditPage(t, a, nil), listUsers(t, a, map[string]any{"first": 1})
	auditB := auditPage(t, b, nil)
	enc := func(p []byte) string { return base64.RawURLEncoding.EncodeToString(p) }
	cases := []struct {
		name, query, arg, cursor string
	}{
		{"audit: forged, the old unsigned format", qAudit, "after", enc([]byte("audit:2"))},
		{"audit: forged, base64 of an id", qAudit, "before", enc(binary.BigEndian.AppendUint64(nil, 2))},
		{"audit: company B's cursor in company A, after", qAudit, "after", auditB.Edges[1].Cursor},
		{"audit: company B's cursor in company A, before", qAudit, "before", auditB.Edges[1].Cursor},
		{"audit: a users cursor", qAudit, "after", usersA.Edges[0].Cursor},
		{"audit: an event id", qAudit, "after", auditA.Edges[1].Node.ID},
		{"audit: truncated", qAudit, "after", auditA.Edges[1].Cursor[:20]},
		{"users: forged, the old unsigned format", qUsers, "after", enc([]byte("user:u0"))},
		{"users: company B's cursor in company A", qUsers, "after", listUsers(t, b, map[string]any{"first": 1}).Edges[0].Cursor},
		{"users: an audit cursor", qUsers, "after", auditA.Edges[0].Cursor},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, a.Do(t, tc.query, map[string]any{tc.arg: tc.cursor}), "BAD_CURSOR")
		})
	}
	// Each company's own cursors still page.
	if p := auditPage(t, a, map[string]any{"first": 1, "after": auditA.Edges[0].Cursor}); len(p.Edges) != 1 || p.Edges[0].Node.ID != auditA.Edges[1].Node.ID {
		t.Errorf("after A's own cursor: %+v", p.Edges)
	}
	if p := listUsers(t, a, map[string]any{"after": usersA.Edges[0].Cursor}); !slices.Equal(p.ids(), []string{"u1", "u2"}) {
		t.Errorf("users after A's own cursor: %v", p.ids())
	}
}

// TestIDsRevealTooMuch (issue 8, finding 10): audit event ids do not count
// the events of every company. Consecutive events of one company have
// ids that are not numbers, not in sequence and unrelated to another
// company's; another instance with the same keys gives the same ids and
// cursors, and takes them.
func TestIDsRevealTooMuch(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	coA, coB := interleaved(t, s, 4)
	a := s.Admin(t, coA)
	evA, evB := auditPage(t, a, nil), auditPage(t, s.Admin(t, coB), nil)
	if len(evA.Edges) != 4 || len(evB.Edges) != 4 {
		t.Fatalf("%d and %d events, want 4 each", len(evA.Edges), len(evB.Edges))
	}
	seen := map[string]bool{}
	for _, p := range []eventConn{evA, evB} {
		for _, e := range p.Edges {
			id := e.Node.ID
			if _, err := strconv.ParseInt(id, 10, 64); err == nil {
				t.Errorf("event id %q is a number", id)
			}
			if seen[id] || seen[e.Cursor] || id == e.Cursor {
				t.Errorf("id %q or cursor %q repeats", id, e.Cursor)
			}
			seen[id], seen[e.Cursor] = true, true
		}
	}
	// A peer instance, as behind a load balancer: same ids, same cursors,
	// and it takes the first instance's cursors.
	peer := apptest.StartPeer(t, s).Admin(t, coA)
	if got := auditPage(t, peer, nil); !slices.Equal(idsAndCursors(got), idsAndCursors(evA)) {
		t.Errorf("the peer gives other ids or cursors:\n%+v\nwant\n%+v", got.Edges, evA.Edges)
	}
	p := auditPage(t, peer, map[string]any{"last": 2, "before": evA.Edges[2].Cursor})
	if len(p.Edges) != 2 || p.Edges[0].Node.ID != evA.Edges[0].Node.ID || p.Edges[1].Node.ID != evA.Edges[1].Node.ID {
		t.Errorf("the peer, before the first instance's cursor: %+v", p.Edges)
	}
}

func idsAndCursors(c eventConn) []string {
	var out []string
	for _, e := range c.Edges {
		out = append(out, e.Node.ID, e.Cursor)
	}
	return out
}
