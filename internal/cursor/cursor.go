// Package cursor encodes the opaque pagination cursors handed to clients.
// A cursor names its kind, so one list's cursor is refused by another.
package cursor

import (
	"encoding/base64"
	"errors"
	"strings"
)

// ErrBad is a cursor this service did not hand out.
var ErrBad = errors.New("malformed cursor")

// Encode wraps a position of the given kind.
func Encode(kind, pos string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(kind + ":" + pos))
}

// Decode returns the position in a cursor of the given kind.
func Decode(kind, s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return "", ErrBad
	}
	pos, ok := strings.CutPrefix(string(b), kind+":")
	if !ok || pos == "" {
		return "", ErrBad
	}
	return pos, nil
}
