package otp_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/otp"
)

var key = bytes.Repeat([]byte("k"), otp.MinKeyLen)

func newHasher(t *testing.T, length int) *otp.Hasher {
	t.Helper()
	h, err := otp.NewHasher(key, length)
	if err != nil {
		t.Fatalf("NewHasher(%d): %v", length, err)
	}
	return h
}

func TestNewHasherRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name   string
		key    []byte
		length int
	}{
		{"short key", key[:otp.MinKeyLen-1], 6},
		{"too short", key, otp.MinLength - 1},
		{"too long", key, otp.MaxLength + 1},
		{"zero", key, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := otp.NewHasher(tc.key, tc.length); err == nil {
				t.Errorf("NewHasher(%d-byte key, %d) succeeded", len(tc.key), tc.length)
			}
		})
	}
}

func TestCodesHaveConfiguredLengthAndDigitsOnly(t *testing.T) {
	for length := otp.MinLength; length <= otp.MaxLength; length++ {
		h := newHasher(t, length)
		if h.Length() != length {
			t.Errorf("Length() = %d, want %d", h.Length(), length)
		}
		for range 200 {
			c, err := h.NewCode()
			if err != nil {
				t.Fatal(err)
			}
			if len(c) != length || strings.Trim(c, "0123456789") != "" {
				t.Fatalf("length %d: code %q", length, c)
			}
			if err := h.Check(c); err != nil {
				t.Fatalf("Check(%q) of an issued code: %v", c, err)
			}
		}
	}
}

// TestFirstDigitUniform is a sanity check that codes are not biased (for
// example by a modulo reduction): the first digit of 20,000 codes should
// be spread evenly over 0–9. With 9 degrees of freedom, chi² exceeds 45
// with probability about 1e-6 for a uniform source, so this does not
// flake; a real bias of a few percent on one digit pushes chi² far past
// it.
func TestFirstDigitUniform(t *testing.T) {
	h := newHasher(t, 6)
	const n = 20000
	var counts [10]int
	for range n {
		c, err := h.NewCode()
		if err != nil {
			t.Fatal(err)
		}
		counts[c[0]-'0']++
	}
	expected := float64(n) / 10
	chi2 := 0.0
	for _, got := range counts {
		d := float64(got) - expected
		chi2 += d * d / expected
	}
	if chi2 > 45 {
		t.Errorf("first digits %v: chi² = %.1f > 45, not uniform", counts, chi2)
	}
}

func TestHashBindsChallengeAndCode(t *testing.T) {
	h := newHasher(t, 6)
	base := h.Hash("challenge-a", "123456")
	if base != h.Hash("challenge-a", "123456") {
		t.Fatal("Hash is not deterministic")
	}
	if len(base) != 64 || strings.Trim(base, "0123456789abcdef") != "" {
		t.Errorf("Hash = %q, want 64 hex digits", base)
	}
	if strings.Contains(base, "123456") {
		t.Errorf("Hash %q shows the code", base)
	}
	other, err := otp.NewHasher(bytes.Repeat([]byte("z"), otp.MinKeyLen), 6)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]string{
		"another challenge":        h.Hash("challenge-b", "123456"),
		"another code":             h.Hash("challenge-a", "123457"),
		"boundary moved":           h.Hash("challenge-a1", "23456"),
		"another key":              other.Hash("challenge-a", "123456"),
		"empty challenge, id+code": h.Hash("", "challenge-a123456"),
	} {
		if got == base {
			t.Errorf("%s: same hash as the original", name)
		}
	}
}

func TestCheckRejectsMalformedCodes(t *testing.T) {
	h := newHasher(t, 6)
	for _, code := range []string{
		"", "12345", "1234567", "12345a", "a23456", "12 456", "-12345", "+12345",
		"12345\x00", "１２３４５６", "١٢٣٤٥٦", "12.456", " 123456", "123456 ",
	} {
		if err := h.Check(code); !errors.Is(err, otp.ErrMalformed) {
			t.Errorf("Check(%q) = %v, want ErrMalformed", code, err)
		}
	}
	for _, code := range []string{"000000", "123456", "999999"} {
		if err := h.Check(code); err != nil {
			t.Errorf("Check(%q) = %v, want nil", code, err)
		}
	}
	eight := newHasher(t, 8)
	if err := eight.Check("123456"); err == nil {
		t.Error("an 8-digit hasher accepted a 6-digit code")
	}
	if err := eight.Check("12345678"); err != nil {
		t.Errorf("8-digit Check: %v", err)
	}
}

// DeriveKey: the same label gives the same key for the same code key (so
// instances agree), other labels and other code keys give other keys, and
// no derived key is a code hash.
func TestDeriveKey(t *testing.T) {
	a, _ := otp.NewHasher([]byte("0123456789abcdef0123456789abcdef"), 6)
	b, _ := otp.NewHasher([]byte("fedcba9876543210fedcba9876543210"), 6)
	k := a.DeriveKey("twofactor/cursor-key/v1")
	if len(k) != 32 || !bytes.Equal(k, a.DeriveKey("twofactor/cursor-key/v1")) {
		t.Fatalf("derived key %x: want 32 bytes, the same each time", k)
	}
	for name, other := range map[string][]byte{
		"other label":    a.DeriveKey("twofactor/other/v1"),
		"other code key": b.DeriveKey("twofactor/cursor-key/v1"),
		"a code hash":    []byte(a.Hash("twofactor/cursor-key/v1", "")),
	} {
		if bytes.Equal(k, other) || bytes.Contains(other, k) {
			t.Errorf("%s gives the same key", name)
		}
	}
}
