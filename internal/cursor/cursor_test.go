package cursor_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/cursor"
)

var testKey = []byte("cursor-test-key-cursor-test-key-0123456789")

func newCodec(t testing.TB, key []byte) *cursor.Codec {
	t.Helper()
	c, err := cursor.New(key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewRefusesShortKeys(t *testing.T) {
	for _, n := range []int{0, 1, cursor.MinKeyLen - 1} {
		if _, err := cursor.New(make([]byte, n)); err == nil {
			t.Errorf("a %d-byte key was accepted", n)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	c := newCodec(t, testKey)
	for _, tc := range []struct {
		name, kind, company string
		payload             []byte
	}{
		{"empty payload", "user", "acme", nil},
		{"user id", "user", "acme", []byte("jane")},
		{"longest payload", "user", "acme", bytes.Repeat([]byte("\U0010FFFF"), cursor.MaxPayload/4)},
		{"empty company", "audit", "", []byte{1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := c.Seal(tc.kind, tc.company, tc.payload)
			got, err := c.Open(tc.kind, tc.company, s)
			if err != nil || !bytes.Equal(got, tc.payload) {
				t.Fatalf("Open(Seal) = %q, %v; want %q", got, err, tc.payload)
			}
			if again := c.Seal(tc.kind, tc.company, tc.payload); again != s {
				t.Errorf("sealing is not deterministic: %q then %q", s, again)
			}
		})
	}
	for _, id := range []int64{1, 2, 42, 1 << 40, 1<<63 - 1} {
		if got, err := c.OpenID("audit", "acme", c.SealID("audit", "acme", id)); err != nil || got != id {
			t.Errorf("OpenID(SealID(%d)) = %d, %v", id, got, err)
		}
	}
}

// TestForgedCursorIsBad: every cursor the codec did not mint for exactly
// this kind and company is ErrBad, whatever it looks like.
func TestForgedCursorIsBad(t *testing.T) {
	c := newCodec(t, testKey)
	good := c.SealID("audit", "acme", 7)
	raw, err := base64.RawURLEncoding.DecodeString(good)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	flipped := func(i int) string {
		b := bytes.Clone(raw)
		b[i] ^= 1
		return enc(b)
	}
	cases := []struct{ name, kind, company, s string }{
		{"empty", "audit", "acme", ""},
		{"garbage", "audit", "acme", "not a cursor!"},
		{"the old unsigned format", "audit", "acme", enc([]byte("audit:7"))},
		{"base64 of another id", "audit", "acme", enc([]byte{0, 0, 0, 0, 0, 0, 0, 8})},
		{"all zero, right length", "audit", "acme", enc(make([]byte, len(raw)))},
		{"another company", "audit", "globex", good},
		{"another kind", "user", "acme", good},
		{"company and kind run together", "audi", "tacme", good},
		{"tag tampered", "audit", "acme", flipped(0)},
		{"payload tampered", "audit", "acme", flipped(len(raw) - 1)},
		{"truncated", "audit", "acme", enc(raw[:len(raw)-1])},
		{"tag only", "audit", "acme", enc(raw[:16])},
		{"shorter than a tag", "audit", "acme", enc(raw[:15])},
		{"extended", "audit", "acme", enc(append(bytes.Clone(raw), 0))},
		{"padded", "audit", "acme", good + "="},
		{"standard alphabet", "audit", "acme", strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+"},
		{"newline inside", "audit", "acme", good[:5] + "\n" + good[5:]},
		{"carriage return at the end", "audit", "acme", good + "\r"},
		{"huge", "audit", "acme", strings.Repeat("A", 1<<20)},
		{"another key", "audit", "acme", newCodec(t, bytes.Repeat([]byte("k"), 32)).SealID("audit", "acme", 7)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.s == good && tc.kind == "audit" && tc.company == "acme" {
				t.Fatal("the case is the genuine cursor")
			}
			if p, err := c.Open(tc.kind, tc.company, tc.s); !errors.Is(err, cursor.ErrBad) {
				t.Errorf("Open = %q, %v; want ErrBad", p, err)
			}
			if id, err := c.OpenID(tc.kind, tc.company, tc.s); !errors.Is(err, cursor.ErrBad) {
				t.Errorf("OpenID = %d, %v; want ErrBad", id, err)
			}
		})
	}
}

func TestOpenIDRefusesOtherPayloads(t *testing.T) {
	c := newCodec(t, testKey)
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"zero id", make([]byte, 8)},
		{"negative id", bytes.Repeat([]byte{0xff}, 8)},
		{"seven bytes", make([]byte, 7)},
		{"a user id", []byte("jane")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if id, err := c.OpenID("audit", "acme", c.Seal("audit", "acme", tc.payload)); !errors.Is(err, cursor.ErrBad) {
				t.Errorf("OpenID = %d, %v; want ErrBad", id, err)
			}
		})
	}
}

// TestSameKeySameCursors: instances that share the key read each other's
// cursors, so a client may resume on any instance.
func TestSameKeySameCursors(t *testing.T) {
	a, b := newCodec(t, testKey), newCodec(t, bytes.Clone(testKey))
	s := a.SealID("audit", "acme", 99)
	if s != b.SealID("audit", "acme", 99) {
		t.Fatal("two codecs with one key seal differently")
	}
	if id, err := b.OpenID("audit", "acme", s); err != nil || id != 99 {
		t.Fatalf("the other instance opened %d, %v", id, err)
	}
}

// TestIDsRevealNoCount: consecutive ids seal to unrelated strings of one
// length, with nothing of the number readable, and the same id in two
// companies seals differently.
func TestIDsRevealNoCount(t *testing.T) {
	c := newCodec(t, testKey)
	seen := map[string]bool{}
	var length int
	for id := int64(1); id <= 1000; id++ {
		s := c.SealID("audit-event", "acme", id)
		if length == 0 {
			length = len(s)
		}
		if len(s) != length {
			t.Fatalf("id %d seals to %d characters, id 1 to %d", id, len(s), length)
		}
		if seen[s] {
			t.Fatalf("id %d seals to a value seen before", id)
		}
		seen[s] = true
		raw, _ := base64.RawURLEncoding.DecodeString(s)
		if plain := binary.BigEndian.AppendUint64(nil, uint64(id)); bytes.Contains(raw, plain[4:]) {
			t.Fatalf("id %d: %q carries the id in plain", id, s)
		}
	}
	if c.SealID("audit-event", "acme", 5) == c.SealID("audit-event", "globex", 5) {
		t.Error("the same row id seals alike in two companies")
	}
	// Neighbours share no prefix beyond chance.
	a, b := c.SealID("audit-event", "acme", 500), c.SealID("audit-event", "acme", 501)
	if common := commonPrefix(a, b); common > 4 {
		t.Errorf("ids 500 and 501 share a %d-character prefix: %q %q", common, a, b)
	}
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

func TestEphemeralCodecsDiffer(t *testing.T) {
	a, b := cursor.Ephemeral(), cursor.Ephemeral()
	if _, err := b.OpenID("audit", "acme", a.SealID("audit", "acme", 1)); !errors.Is(err, cursor.ErrBad) {
		t.Errorf("one ephemeral codec opened another's cursor: %v", err)
	}
}

// FuzzCursorDecode: Open never panics, and it accepts a string only if it
// is exactly what Seal mints for that kind, company and payload: anything
// it did not mint is refused.
//
//	go test -run '^$' -fuzz FuzzCursorDecode -fuzztime 30s ./internal/cursor
func FuzzCursorDecode(f *testing.F) {
	c := newCodec(f, testKey)
	for _, s := range []string{
		c.SealID("audit", "acme", 1), c.SealID("audit", "acme", 1<<40), c.Seal("user", "acme", []byte("jane")),
		c.SealID("audit-event", "globex", 3), "", "YXVkaXQ6MQ", "not a cursor!", strings.Repeat("A", 700),
	} {
		f.Add("audit", "acme", s)
		f.Add("user", "acme", s)
	}
	f.Fuzz(func(t *testing.T, kind, company, s string) {
		p, err := c.Open(kind, company, s)
		if err != nil {
			if !errors.Is(err, cursor.ErrBad) {
				t.Fatalf("Open error %v is not ErrBad", err)
			}
		} else if minted := c.Seal(kind, company, p); minted != s {
			t.Fatalf("accepted %q, which Seal mints as %q", s, minted)
		}
		id, err := c.OpenID(kind, company, s)
		if err == nil && (id <= 0 || c.SealID(kind, company, id) != s) {
			t.Fatalf("OpenID accepted %q as %d", s, id)
		}
	})
}

// BenchmarkSealOpen: an auditLog page of 100 seals 200 values (cursor and
// id per event).
func BenchmarkSealOpen(b *testing.B) {
	c := newCodec(b, testKey)
	for b.Loop() {
		if _, err := c.OpenID("audit", "acme", c.SealID("audit", "acme", 123456789)); err != nil {
			b.Fatal(err)
		}
	}
}
