package audit_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"testing"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/testenv"
)

// twoCompanies writes n events for each of two companies, alternating, so
// that neither company's row ids are consecutive. It returns them in
// writing order.
func twoCompanies(t *testing.T, db *gorm.DB, log *audit.Log, n int) (a, b []audit.Event) {
	t.Helper()
	coA, coB := testenv.Company(t), testenv.Company(t)
	err := db.Transaction(func(tx *gorm.DB) error {
		for i := range n {
			for _, co := range []string{coA, coB} {
				e := eventOf(row(co, i))
				if err := log.Write(tx, e); err != nil {
					return err
				}
				if co == coA {
					a = append(a, *e)
				} else {
					b = append(b, *e)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// tamper changes the i-th character of s to another base64url one.
func tamper(s string, i int) string {
	c := byte('A')
	if s[i] == c {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// TestCursorsAcceptTooMuch (issue 8, finding 10): a cursor is accepted
// only by the company and the list it was handed out for; forged,
// tampered, foreign and other-kind cursors are all cursor.ErrBad, both as
// after and as before.
func TestCursorsAcceptTooMuch(t *testing.T) {
	b := testenv.Open(t)
	codec := cursor.Ephemeral()
	log := audit.NewLog(b.DB, nil, nil, audit.WithCodec(codec))
	evA, evB := twoCompanies(t, b.DB, log, 3)
	coA, mid := evA[0].Company, evA[1]
	admin := auth.Caller{UserID: "a", Company: coA, Role: auth.RoleAdmin}
	enc := func(p []byte) string { return base64.RawURLEncoding.EncodeToString(p) }
	genuine := log.Cursor(mid)
	cases := []struct{ name, cursor string }{
		{"forged: the old unsigned format", enc([]byte("audit:" + strconv.FormatInt(mid.ID, 10)))},
		{"forged: base64 of another id", enc(binary.BigEndian.AppendUint64(nil, uint64(evA[2].ID)))},
		{"tampered", tamper(genuine, 5)},
		{"truncated", genuine[:len(genuine)-1]},
		{"another company's cursor", log.Cursor(evB[1])},
		{"this row sealed for another company", log.Cursor(audit.Event{ID: mid.ID, Company: evB[0].Company})},
		{"a users cursor", codec.Seal("user", coA, []byte("u1"))},
		{"a public id", log.PublicID(mid)},
		{"another key's cursor", audit.NewLog(b.DB, nil, nil).Cursor(mid)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, req := range []audit.PageRequest{{After: tc.cursor}, {Before: tc.cursor}} {
				if _, err := log.List(context.Background(), admin, req); !errors.Is(err, cursor.ErrBad) {
					t.Errorf("List(%+v) err = %v, want cursor.ErrBad", req, err)
				}
			}
		})
	}
	// The genuine cursor still pages, both ways.
	one := 1
	for _, tc := range []struct {
		req  audit.PageRequest
		want int64
	}{
		{audit.PageRequest{First: &one, After: genuine}, evA[0].ID},
		{audit.PageRequest{Last: &one, Before: genuine}, evA[2].ID},
	} {
		p, err := log.List(context.Background(), admin, tc.req)
		if err != nil || len(p.Events) != 1 || p.Events[0].ID != tc.want {
			t.Errorf("List(%+v) = %+v, %v; want event %d", tc.req, p.Events, err, tc.want)
		}
	}
}

// TestIDsRevealTooMuch (issue 8, finding 10): public ids are not the row
// ids, which count every company's events: consecutive events of one
// company get unrelated ids that open only with the key and only for that
// company.
func TestIDsRevealTooMuch(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	evA, evB := twoCompanies(t, b.DB, log, 4)
	coA, coB := evA[0].Company, evB[0].Company
	seen := map[string]bool{}
	for i, e := range evA {
		id := log.PublicID(e)
		if _, err := strconv.ParseInt(id, 10, 64); err == nil {
			t.Fatalf("event %d: public id %q is a number", i, id)
		}
		if seen[id] {
			t.Fatalf("event %d: public id %q repeats", i, id)
		}
		seen[id] = true
		if i > 0 && len(id) != len(log.PublicID(evA[0])) {
			t.Errorf("event %d: id length %d differs from the first's", i, len(id))
		}
		if got, err := log.ParseID(coA, id); err != nil || got != e.ID {
			t.Errorf("event %d: ParseID = %d, %v; want %d", i, got, err, e.ID)
		}
		if _, err := log.ParseID(coB, id); !errors.Is(err, cursor.ErrBad) {
			t.Errorf("event %d: company B opened company A's id: %v", i, err)
		}
		if _, err := audit.NewLog(b.DB, nil, nil).ParseID(coA, id); !errors.Is(err, cursor.ErrBad) {
			t.Errorf("event %d: another key opened the id: %v", i, err)
		}
		if id == log.PublicID(audit.Event{ID: e.ID, Company: coB}) {
			t.Errorf("event %d: the same row id gives the same public id in company B", i)
		}
	}
	// What List returns carries the same ids as Write's events.
	p, err := log.List(context.Background(), auth.Caller{UserID: "a", Company: coA, Role: auth.RoleAdmin}, audit.PageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Events {
		if !seen[log.PublicID(e)] {
			t.Errorf("listed event %d has an id Write's event did not", e.ID)
		}
	}
}
