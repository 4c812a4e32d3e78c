// Package validation checks user input and collects every problem at once,
// so a client can show them all next to their fields.
package validation

import (
	"fmt"
	"net/mail"
	"regexp"
	"strings"
	"unicode/utf8"
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
// name and a dotted domain.
func (e *Errors) Email(v string, field ...string) {
	if len(v) > MaxEmailLen {
		e.Add(CodeTooLong, fmt.Sprintf("must be at most %d characters", MaxEmailLen), field...)
		return
	}
	a, err := mail.ParseAddress(v)
	at := strings.LastIndexByte(v, '@')
	if err != nil || a.Address != v || at < 1 || !strings.Contains(v[at+1:], ".") ||
		strings.HasSuffix(v, ".") {
		e.Add(CodeInvalidEmail, "must be an email address such as jane@example.com", field...)
	}
}

// Text checks a required or optional free-text value: valid UTF-8, no
// control characters, at most max characters.
func (e *Errors) Text(v string, required bool, max int, field ...string) {
	switch {
	case strings.TrimSpace(v) == "":
		if required || v != "" {
			e.Add(CodeRequired, "must not be blank", field...)
		}
	case !utf8.ValidString(v) || strings.ContainsFunc(v, isControl):
		e.Add(CodeInvalidFormat, "must be printable text", field...)
	case utf8.RuneCountInString(v) > max:
		e.Add(CodeTooLong, fmt.Sprintf("must be at most %d characters", max), field...)
	}
}

// ID checks an identifier: 1 to MaxIDLen printable characters, no spaces.
func (e *Errors) ID(v string, field ...string) {
	switch {
	case v == "":
		e.Add(CodeRequired, "must not be empty", field...)
	case utf8.RuneCountInString(v) > MaxIDLen:
		e.Add(CodeTooLong, fmt.Sprintf("must be at most %d characters", MaxIDLen), field...)
	case !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return isControl(r) || r == ' ' }):
		e.Add(CodeInvalidFormat, "must be printable with no spaces", field...)
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }
