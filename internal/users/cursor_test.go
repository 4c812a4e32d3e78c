package users_test

import (
	"context"
	"encoding/base64"
	"errors"
	"testing"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// TestCursorsAcceptTooMuch (issue 8, finding 10): a users cursor is
// accepted only in the company it was handed out for; forged ones and
// other kinds are cursor.ErrBad.
func TestCursorsAcceptTooMuch(t *testing.T) {
	b := testenv.Open(t)
	codec := cursor.Ephemeral()
	log := audit.NewLog(b.DB, nil, nil)
	svc := users.NewService(b.DB, log, settings.NewService(b.DB, log), users.WithCodec(codec))
	ctx := context.Background()
	adminOf := func(co string) auth.Caller { return auth.Caller{UserID: "root", Company: co, Role: auth.RoleAdmin} }
	coA, coB := testenv.Company(t), testenv.Company(t)
	for _, co := range []string{coA, coB} {
		for _, id := range []string{"u1", "u2", "u3"} {
			if _, err := svc.Create(ctx, adminOf(co), users.NewUser{ID: id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	one := 1
	first, err := svc.List(ctx, adminOf(coA), users.ListRequest{First: &one})
	if err != nil || len(first.Users) != 1 {
		t.Fatalf("first page: %+v, %v", first, err)
	}
	genuine := svc.Cursor(first.Users[0])
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ name, cursor string }{
		{"forged: the old unsigned format", enc("user:u1")},
		{"forged: base64 of a user id", enc("u1")},
		{"truncated", genuine[:len(genuine)-1]},
		{"another company's cursor", svc.Cursor(users.User{Company: coB, ID: "u1"})},
		{"an audit cursor", codec.SealID("audit", coA, 1)},
		{"an empty position", codec.Seal("user", coA, nil)},
		{"another key's cursor", users.NewService(b.DB, log, nil).Cursor(first.Users[0])},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := svc.List(ctx, adminOf(coA), users.ListRequest{After: tc.cursor}); !errors.Is(err, cursor.ErrBad) {
				t.Errorf("err = %v, want cursor.ErrBad", err)
			}
		})
	}
	next, err := svc.List(ctx, adminOf(coA), users.ListRequest{After: genuine})
	if err != nil || len(next.Users) != 2 || next.Users[0].ID != "u2" {
		t.Errorf("after the genuine cursor: %+v, %v; want u2, u3", next.Users, err)
	}
}
