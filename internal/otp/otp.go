// Package otp makes one-time codes and the keyed hashes that stand in for
// them. A code is never stored: only HMAC-SHA256(key, challengeID ‖ code).
package otp

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
)

// Code lengths allowed by configuration.
const (
	MinLength = 6
	MaxLength = 10
)

// MinKeyLen is the shortest HMAC key accepted.
const MinKeyLen = 32

// Hasher makes codes and hashes them under one secret key.
type Hasher struct {
	key    []byte
	length int
	limit  *big.Int // 10^length
}

// NewHasher returns a hasher for codes of length digits.
func NewHasher(key []byte, length int) (*Hasher, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("code HMAC key must be at least %d bytes", MinKeyLen)
	}
	if length < MinLength || length > MaxLength {
		return nil, fmt.Errorf("code length must be %d to %d digits", MinLength, MaxLength)
	}
	return &Hasher{
		key:    key,
		length: length,
		limit:  new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(length)), nil),
	}, nil
}

// Length is the number of digits in a code.
func (h *Hasher) Length() int { return h.length }

// NewCode returns a code drawn uniformly from all codes of the configured
// length, zero-padded.
func (h *Hasher) NewCode() (string, error) {
	n, err := rand.Int(rand.Reader, h.limit)
	if err != nil {
		return "", fmt.Errorf("new code: %w", err)
	}
	return fmt.Sprintf("%0*d", h.length, n), nil
}

// Hash returns the hex HMAC of the code bound to its challenge, so a hash
// is worthless for any other challenge.
func (h *Hasher) Hash(challengeID, code string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(challengeID))
	m.Write([]byte{0}) // ids never hold NUL, so the pair is unambiguous
	m.Write([]byte(code))
	return hex.EncodeToString(m.Sum(nil))
}

// ErrMalformed is a code that cannot be right: wrong length or not digits.
var ErrMalformed = errors.New("malformed code")

// Check tells whether code could have been issued: the right length and
// digits only. It does not say whether it is the right code.
func (h *Hasher) Check(code string) error {
	if len(code) != h.length {
		return ErrMalformed
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return ErrMalformed
		}
	}
	return nil
}

// DeriveKey returns a 32-byte key for another purpose, named by label,
// derived from the code key with HKDF-SHA256: instances that share
// CODE_HMAC_KEY agree on it, and it reveals nothing of the code key nor
// of other labels' keys.
func (h *Hasher) DeriveKey(label string) []byte {
	key, err := hkdf.Key(sha256.New, h.key, nil, label, 32)
	if err != nil { // only for lengths HKDF cannot give; 32 always fits
		panic(fmt.Sprintf("otp: derive key: %v", err))
	}
	return key
}
