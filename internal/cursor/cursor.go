// Package cursor seals the positions and ids handed to clients, and is the
// one place that opens them again. A sealed value is
//
//   - opaque: the position is encrypted, so a cursor or id says nothing
//     about how many rows exist, in this company or any other;
//   - authenticated: a value this service did not mint (forged, tampered,
//     truncated) is refused with ErrBad;
//   - bound to its kind and company: a users cursor is refused by the audit
//     log, and company A's cursor is refused in company B;
//   - deterministic: the same position always seals to the same string, on
//     every instance that shares the key, so ids stay stable and clients may
//     deduplicate by them.
//
// The construction is SIV (synthetic IV, as in RFC 5297) from the standard
// library: the tag is HMAC-SHA256 over (kind, company, payload), truncated
// to 16 bytes, and is also the IV of AES-256-CTR over the payload. The
// value is base64url(tag || ciphertext).
package cursor

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// ErrBad is a cursor (or id) this service did not hand out.
var ErrBad = errors.New("malformed cursor")

const (
	// MinKeyLen is the shortest key New accepts.
	MinKeyLen = 32
	// MaxPayload bounds what a value may carry: user ids are at most 128
	// characters, so at most 512 bytes of UTF-8.
	MaxPayload = 512
	// DeriveLabel names the cursor key derived from CODE_HMAC_KEY when
	// CURSOR_KEY is not set (HKDF, otp.Hasher.DeriveKey), so that every
	// instance with that secret derives the same key.
	DeriveLabel = "twofactor/cursor-key/v1"

	tagLen = 16
)

var (
	// Strict: no stray bits in the last character, so one value has one
	// spelling.
	encoding = base64.RawURLEncoding.Strict()
	// The longest string Open looks at; anything longer is refused before
	// it is decoded.
	maxEncodedLen = encoding.EncodedLen(tagLen + MaxPayload)
)

// Codec seals and opens values under one key.
type Codec struct {
	block cipher.Block
	macs  sync.Pool // of keyed HMAC-SHA256: keying one costs more than using it
}

// New returns a codec for key, which must be at least MinKeyLen bytes. The
// encryption and MAC keys are derived from it with HKDF, so the same key
// gives the same codec on every instance.
func New(key []byte) (*Codec, error) {
	if len(key) < MinKeyLen {
		return nil, fmt.Errorf("cursor key must be at least %d bytes", MinKeyLen)
	}
	encKey, err := hkdf.Key(sha256.New, key, nil, "twofactor cursor v1 encryption", 32)
	if err != nil {
		return nil, fmt.Errorf("derive cursor encryption key: %w", err)
	}
	macKey, err := hkdf.Key(sha256.New, key, nil, "twofactor cursor v1 authentication", 32)
	if err != nil {
		return nil, fmt.Errorf("derive cursor MAC key: %w", err)
	}
	block, err := aes.NewCipher(encKey)
	if err != nil {
		return nil, fmt.Errorf("cursor cipher: %w", err)
	}
	c := &Codec{block: block}
	c.macs.New = func() any { return hmac.New(sha256.New, macKey) }
	return c, nil
}

// Ephemeral returns a codec under a random key that only this process
// knows: for tests and tools that build a service piece on its own. The
// app passes a shared key instead, so that all instances agree.
func Ephemeral() *Codec {
	c, err := New([]byte(rand.Text() + rand.Text()))
	if err != nil {
		panic(err) // the key is long enough; nothing else can fail
	}
	return c
}

// Seal returns the value carrying payload for kind and company.
func (c *Codec) Seal(kind, company string, payload []byte) string {
	out := make([]byte, tagLen+len(payload))
	tag := c.tag(kind, company, payload)
	copy(out, tag)
	cipher.NewCTR(c.block, tag).XORKeyStream(out[tagLen:], payload)
	return encoding.EncodeToString(out)
}

// Open returns the payload of s if this codec sealed s for kind and
// company, and ErrBad otherwise.
func (c *Codec) Open(kind, company, s string) ([]byte, error) {
	// The decoder skips CR and LF; refuse them so that only the exact
	// string that was handed out is accepted.
	if len(s) > maxEncodedLen || strings.ContainsAny(s, "\r\n") {
		return nil, ErrBad
	}
	raw, err := encoding.DecodeString(s)
	if err != nil || len(raw) < tagLen {
		return nil, ErrBad
	}
	tag := raw[:tagLen]
	payload := make([]byte, len(raw)-tagLen)
	cipher.NewCTR(c.block, tag).XORKeyStream(payload, raw[tagLen:])
	if !hmac.Equal(tag, c.tag(kind, company, payload)) {
		return nil, ErrBad
	}
	return payload, nil
}

// SealID seals a positive row id.
func (c *Codec) SealID(kind, company string, id int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(id))
	return c.Seal(kind, company, b[:])
}

// OpenID returns the row id in s, sealed by SealID for kind and company.
func (c *Codec) OpenID(kind, company, s string) (int64, error) {
	b, err := c.Open(kind, company, s)
	if err != nil || len(b) != 8 {
		return 0, ErrBad
	}
	id := int64(binary.BigEndian.Uint64(b))
	if id <= 0 {
		return 0, ErrBad
	}
	return id, nil
}

// tag MACs kind and company (length-prefixed, so no two pairs run
// together) and then the payload.
func (c *Codec) tag(kind, company string, payload []byte) []byte {
	m := c.macs.Get().(hash.Hash)
	defer c.macs.Put(m)
	m.Reset()
	writeField(m, kind)
	writeField(m, company)
	m.Write(payload)
	return m.Sum(nil)[:tagLen]
}

func writeField(h hash.Hash, s string) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
	h.Write([]byte(s))
}
