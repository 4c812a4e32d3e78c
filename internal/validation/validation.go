// Package validation checks user input and collects every problem at once,
// so a client can show them all next to their fields.
package validation

import (
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Codes shared by every input check.
const (
	CodeRequired      = "REQUIRED"
	CodeTooLong       = "TOO_LONG"
	CodeInvalidEmail  = "INVALID_EMAIL"
	CodeInvalidPhone  = "INVALID_PHONE"
	CodeInvalidFormat = "INVALID_FORMAT"
	CodeInvalidValue  = "INVALID_VALUE"
)

// Bounds on stored strings.
const (
	MaxIDLen    = 128
	MaxNameLen  = 200
	MaxEmailLen = 254 // RFC 5321 path limit
)

// FieldError is one problem with one input field. Field is the path below
// the mutation's input, e.g. ["contactPerson", "email"].
type FieldError struct {
	Field   []string
	Code    string
	Message string
}

// Errors is a list of field problems; it is returned as an error so that
// services can reject input with one value.
type Errors []FieldError

func (e Errors) Error() string {
	parts := make([]string, len(e))
	for i, fe := range e {
		parts[i] = fmt.Sprintf("%s: %s", strings.Join(fe.Field, "."), fe.Message)
	}
	return "invalid input: " + strings.Join(parts, "; ")
}

// Add records a problem.
func (e *Errors) Add(code, message string, field ...string) {
	*e = append(*e, FieldError{Field: field, Code: code, Message: message})
}

// Err returns nil when nothing was recorded.
func (e Errors) Err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// e164 is "+" then up to 15 digits, the first not 0.
var e164 = regexp.MustCompile(`^\+[1-9][0-9]{6,14}$`)

// Phone checks an E.164 number such as +37120000000.
func (e *Errors) Phone(v string, field ...string) {
	if !e164.MatchString(v) {
		e.Add(CodeInvalidPhone, "must be an E.164 phone number such as +37120000000", field...)
	}
}

// Email checks a bare address such as jane@example.com, with no display
// name and a dotted domain. Only printable ASCII: the senders do not speak
// SMTPUTF8, and an invisible or bidi character would let an address shown
// to a locked-out user read as another one.
func (e *Errors) Email(v string, field ...string) {
	if len(v) > MaxEmailLen {
		e.Add(CodeTooLong, fmt.Sprintf("must be at most %d characters", MaxEmailLen), field...)
		return
	}
	a, err := mail.ParseAddress(v)
	at := strings.LastIndexByte(v, '@')
	if err != nil || a.Address != v || at < 1 || !strings.Contains(v[at+1:], ".") ||
		strings.HasSuffix(v, ".") || strings.ContainsFunc(v, notPrintableASCII) {
		e.Add(CodeInvalidEmail, "must be an email address such as jane@example.com", field...)
	}
}

func notPrintableASCII(r rune) bool { return r <= ' ' || r > '~' }

// Text checks a required or optional free-text value (a display name):
// valid UTF-8, no invisible or control characters (see Printable), at most
// max characters. It returns v in NFC, the form to store, so that
// canonically equal names are equal bytes.
func (e *Errors) Text(v string, required bool, max int, field ...string) string {
	n := v
	if utf8.ValidString(v) {
		n = norm.NFC.String(v)
	}
	switch {
	case strings.TrimSpace(v) == "":
		if required || v != "" {
			e.Add(CodeRequired, "must not be blank", field...)
		}
	case !Printable(v):
		e.Add(CodeInvalidFormat, "must be printable text", field...)
	case utf8.RuneCountInString(n) > max:
		e.Add(CodeTooLong, fmt.Sprintf("must be at most %d characters", max), field...)
	}
	return n
}

// ID checks an identifier: 1 to MaxIDLen printable characters, no spaces.
// Ids are keys, so they are checked but never rewritten.
func (e *Errors) ID(v string, field ...string) {
	switch {
	case v == "":
		e.Add(CodeRequired, "must not be empty", field...)
	case utf8.RuneCountInString(v) > MaxIDLen:
		e.Add(CodeTooLong, fmt.Sprintf("must be at most %d characters", MaxIDLen), field...)
	case !Printable(v) || strings.ContainsFunc(v, unicode.IsSpace):
		e.Add(CodeInvalidFormat, "must be printable with no spaces", field...)
	}
}

// Printable reports whether s is valid UTF-8 free of characters that are
// invisible or rewrite how text around them looks: controls (Cc), format
// characters (Cf: zero-width, bidi overrides and isolates), line and
// paragraph separators (Zl, Zp), non-characters and U+FFFD (the mark of
// mangled input). Such characters let "admin" and "ad\u200bmin", or a
// reversed name, pass for one another in the audit log.
func Printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, hidden)
}

func hidden(r rune) bool {
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) ||
		nonCharacter(r) || r == utf8.RuneError
}

// nonCharacter: U+FDD0..U+FDEF and the last two code points of every
// plane (U+FFFE, U+FFFF, U+1FFFE, ...), reserved never to be text.
func nonCharacter(r rune) bool {
	return (r >= 0xFDD0 && r <= 0xFDEF) || r&0xFFFE == 0xFFFE
}
