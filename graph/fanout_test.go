package graph_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// fanoutQuery renders the actor only when $actor is true.
const fanoutQuery = `subscription($after: String, $actor: Boolean!) { auditEventAdded(after: $after) {
  cursor node { id action actor @include(if: $actor) { id } } } }`

// TestFanoutRenderings: subscribers of one event that render it alike
// share one rendering (issue 12); ones whose selection or variables
// differ, or of another company, each get their own, and nothing of one
// leaks into another.
func TestFanoutRenderings(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	coA, coB := testenv.Company(t), testenv.Company(t)
	adminA, adminB := s.Admin(t, coA), s.Admin(t, coB)
	createUser(t, adminA, map[string]any{"id": "seed"})
	fromA := newestCursor(t, adminA)
	createUser(t, adminA, map[string]any{"id": "seed2"})
	fromA2 := newestCursor(t, adminA)
	createUser(t, adminB, map[string]any{"id": "seed"})
	fromB := newestCursor(t, adminB)

	subs := []struct {
		name, query string
		admin       *apptest.Client
		vars        map[string]any
	}{
		{"with actor", fanoutQuery, adminA, map[string]any{"after": fromA, "actor": true}},
		{"with actor, other cursor", fanoutQuery, adminA, map[string]any{"after": fromA2, "actor": true}},
		{"without actor", fanoutQuery, adminA, map[string]any{"after": fromA, "actor": false}},
		{"action only", `subscription($after: String) { auditEventAdded(after: $after) { node { id action } } }`,
			adminA, map[string]any{"after": fromA}},
		{"other company", fanoutQuery, adminB, map[string]any{"after": fromB, "actor": true}},
	}
	conns := make([]*gqlWS, len(subs))
	for i, sub := range subs {
		conns[i] = dialWS(t, s, sub.admin.Token)
		conns[i].send(t, map[string]any{"type": "subscribe", "id": "1",
			"payload": map[string]any{"query": sub.query, "variables": sub.vars}})
	}
	// Each resumes from a cursor, so it gets the event whenever it joins.
	createUser(t, adminB, map[string]any{"id": "b1"})
	createUser(t, adminA, map[string]any{"id": "a1"})
	event := newestID(t, adminA)

	got := make([]json.RawMessage, len(subs)-1)
	for i := range got {
		got[i] = nextEvent(t, conns[i], event)
	}
	wantNode(t, subs[0].name, got[0], event, "admin-"+coA)
	if !bytes.Equal(got[0], got[1]) {
		t.Errorf("same selection, other cursor:\n%s\nwant\n%s", got[1], got[0])
	}
	wantNode(t, subs[2].name, got[2], event, "")
	if bytes.Contains(got[3], []byte("cursor")) || bytes.Contains(got[3], []byte("actor")) {
		t.Errorf("action only: %s", got[3])
	}
	other := nextEvent(t, conns[4], newestID(t, adminB))
	wantNode(t, subs[4].name, other, newestID(t, adminB), "admin-"+coB)
}

// nextEvent reads ws's events until the one with node id, and returns
// its data.
func nextEvent(t *testing.T, ws *gqlWS, id string) json.RawMessage {
	t.Helper()
	for {
		m := ws.read(t)
		var p struct {
			Data struct {
				AuditEventAdded struct {
					Node struct{ ID string } `json:"node"`
				} `json:"auditEventAdded"`
			} `json:"data"`
			Errors json.RawMessage `json:"errors"`
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil || m.Type != "next" || p.Errors != nil {
			t.Fatalf("message %s %s, want next", m.Type, m.Payload)
		}
		if p.Data.AuditEventAdded.Node.ID == id {
			var d struct{ Data json.RawMessage }
			_ = json.Unmarshal(m.Payload, &d)
			return d.Data
		}
	}
}

// wantNode checks one rendering: the event, with the actor when actor is
// set, and without any actor field when not.
func wantNode(t *testing.T, name string, data json.RawMessage, id, actor string) {
	t.Helper()
	var d struct {
		AuditEventAdded struct {
			Cursor string
			Node   map[string]json.RawMessage
		} `json:"auditEventAdded"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %s: %v", name, data, err)
	}
	n := d.AuditEventAdded.Node
	if string(n["id"]) != fmt.Sprintf("%q", id) || d.AuditEventAdded.Cursor == "" {
		t.Errorf("%s: %s, want event %s with a cursor", name, data, id)
	}
	a, has := n["actor"]
	switch {
	case actor == "" && has:
		t.Errorf("%s: actor %s, want none", name, a)
	case actor != "" && string(a) != fmt.Sprintf(`{"id":%q}`, actor):
		t.Errorf("%s: actor %s, want %s", name, a, actor)
	}
}

func newestCursor(t *testing.T, c *apptest.Client) string {
	t.Helper()
	page := auditPage(t, c, map[string]any{"first": 1})
	if len(page.Edges) != 1 {
		t.Fatalf("no audit row: %+v", page)
	}
	return page.Edges[0].Cursor
}

func newestID(t *testing.T, c *apptest.Client) string {
	t.Helper()
	page := auditPage(t, c, map[string]any{"first": 1})
	if len(page.Edges) != 1 {
		t.Fatalf("no audit row: %+v", page)
	}
	return page.Edges[0].Node.ID
}
