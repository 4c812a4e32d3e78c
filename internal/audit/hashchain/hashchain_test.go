package hashchain_test

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"github.com/twofactor/service/internal/audit/hashchain"
)

func ptr(s string) *string { return &s }

func sample() hashchain.Row {
	return hashchain.Row{
		Company: "acme", Category: "SETTINGS", Action: "USER_CREATED", ActorID: "u1", ActorName: ptr("Ann"),
		ActorRole: "admin", Details: `{"a":1}`, CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 678_000_000, time.UTC),
	}
}

// TestFrozenFormat pins the encoding and the hash: every stored chain was
// made by them. The expected values were computed from the package
// comment's description by a separate implementation (Python's struct and
// hashlib), not by this code. If this test fails, the format changed:
// that breaks every stored chain, so add a new version instead.
func TestFrozenFormat(t *testing.T) {
	const (
		wantEncoding = "010000001874776f666163746f722d61756469742d636861696e2d7631010000000461636d65" +
			"010000000853455454494e4753010000000c555345525f43524541544544010000000275310100000003416e6e" +
			"010000000561646d696e00000001000000077b2261223a317d0000019424f8632e00"
		wantHash = "264d89ed9b57cdb7b0ae69f662365e203674350dd065fe8d83992057c6dc2ff6"
	)
	r := sample()
	if got := hashchain.Encode(r); hex.EncodeToString(got) != wantEncoding {
		t.Errorf("Encode = %s\nwant     %s", hex.EncodeToString(got), wantEncoding)
	}
	got, err := hashchain.Next(hashchain.Genesis, r)
	if err != nil || got != wantHash {
		t.Errorf("Next(Genesis) = %s, %v; want %s", got, err, wantHash)
	}
	// The time zone of the value does not matter, the instant does.
	r.CreatedAt = r.CreatedAt.In(time.FixedZone("x", 3*3600))
	if again, _ := hashchain.Next(hashchain.Genesis, r); again != wantHash {
		t.Errorf("the same instant in another zone hashes to %s", again)
	}
}

// TestEncodingIsUnambiguous: rows that differ in any field, or that split
// the same characters differently between fields, encode differently.
func TestEncodingIsUnambiguous(t *testing.T) {
	base := sample()
	cases := map[string]func(r *hashchain.Row){
		"text moved between fields": func(r *hashchain.Row) { r.Company, r.Category = "acmeS", "ETTINGS" },
		"NULL name vs empty name":   func(r *hashchain.Row) { r.ActorName = ptr("") },
		"name moved to target":      func(r *hashchain.Row) { r.ActorName, r.TargetName = nil, ptr("Ann") },
		"app set":                   func(r *hashchain.Row) { r.App = ptr("web") },
		"uid set":                   func(r *hashchain.Row) { r.UID = ptr("x") },
		"one millisecond later":     func(r *hashchain.Row) { r.CreatedAt = r.CreatedAt.Add(time.Millisecond) },
		"details reformatted":       func(r *hashchain.Row) { r.Details = `{"a": 1}` },
		"role":                      func(r *hashchain.Row) { r.ActorRole = "user" },
	}
	seen := map[string]string{string(hashchain.Encode(base)): "base"}
	for name, change := range cases {
		r := base
		change(&r)
		enc := string(hashchain.Encode(r))
		if other, dup := seen[enc]; dup {
			t.Errorf("%s encodes like %s", name, other)
		}
		seen[enc] = name
	}
	// Sub-millisecond differences are below what is stored.
	r := base
	r.CreatedAt = r.CreatedAt.Add(999 * time.Microsecond)
	if !bytes.Equal(hashchain.Encode(r), hashchain.Encode(base)) {
		t.Error("a sub-millisecond difference changed the encoding")
	}
}

func TestNextRefusesAMalformedPrevious(t *testing.T) {
	for _, prev := range []string{"", "zz", hashchain.Genesis[:62], hashchain.Genesis + "00"} {
		if h, err := hashchain.Next(prev, sample()); err == nil {
			t.Errorf("Next(%q) = %s, want an error", prev, h)
		}
	}
	a, _ := hashchain.Next(hashchain.Genesis, sample())
	b, _ := hashchain.Next(a, sample())
	if a == b {
		t.Error("the same row after a different previous hash has the same hash")
	}
}
