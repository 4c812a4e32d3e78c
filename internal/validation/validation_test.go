package validation_test

import (
	"reflect"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/validation"
)

// lookAlikes are characters that hide in text or change how the text
// around them looks, one or more per class that ids and names refuse.
var lookAlikes = []struct{ class, char string }{
	{"Cc NUL", "\x00"},
	{"Cc escape", "\x1b"},
	{"Cc DEL", "\x7f"},
	{"Cc U+0085 next line", "\u0085"},
	{"Cc U+009B CSI", "\u009b"},
	{"Cf U+200B zero-width space", "\u200b"},
	{"Cf U+200D zero-width joiner", "\u200d"},
	{"Cf U+FEFF byte order mark", "\ufeff"},
	{"Cf U+00AD soft hyphen", "\u00ad"},
	{"bidi U+061C arabic letter mark", "\u061c"},
	{"bidi U+200E left-to-right mark", "\u200e"},
	{"bidi U+200F right-to-left mark", "\u200f"},
	{"bidi U+202A left-to-right embedding", "\u202a"},
	{"bidi U+202E right-to-left override", "\u202e"},
	{"bidi U+2066 left-to-right isolate", "\u2066"},
	{"bidi U+2069 pop directional isolate", "\u2069"},
	{"Cf U+E0041 tag latin A", "\U000e0041"},
	{"Zl U+2028 line separator", "\u2028"},
	{"Zp U+2029 paragraph separator", "\u2029"},
	{"non-character U+FDD0", "\ufdd0"},
	{"non-character U+FDEF", "\ufdef"},
	{"non-character U+FFFE", "\ufffe"},
	{"non-character U+FFFF", "\uffff"},
	{"non-character U+1FFFE", "\U0001fffe"},
	{"non-character U+10FFFF", "\U0010ffff"},
	{"replacement U+FFFD", "\ufffd"},
	{"invalid UTF-8 byte", "\xff"},
	{"invalid UTF-8 truncated", "\xe2\x80"},
	{"invalid UTF-8 surrogate", "\xed\xa0\x80"},
	{"invalid UTF-8 overlong slash", "\xc0\xaf"},
}

// TestLookAlikeText is issue 8, finding 8: ids and display names took
// U+200B, U+202E, U+0085 and U+2028. Every class is refused in both, with
// INVALID_FORMAT, at the start, in the middle and at the end.
func TestLookAlikeText(t *testing.T) {
	for _, la := range lookAlikes {
		for _, v := range []string{la.char + "jane", "ja" + la.char + "ne", "jane" + la.char} {
			var e validation.Errors
			e.ID(v, "id")
			e.Text(v, false, validation.MaxNameLen, "displayName")
			e.Text(v, true, validation.MaxNameLen, "contactPerson", "name")
			want := validation.Errors{
				{Field: []string{"id"}, Code: validation.CodeInvalidFormat},
				{Field: []string{"displayName"}, Code: validation.CodeInvalidFormat},
				{Field: []string{"contactPerson", "name"}, Code: validation.CodeInvalidFormat},
			}
			if got := codes(e); !reflect.DeepEqual(got, want) {
				t.Errorf("%s in %q: %v, want INVALID_FORMAT for each", la.class, v, got)
			}
			if validation.Printable(v) {
				t.Errorf("Printable(%q) with %s", v, la.class)
			}
		}
	}
}

func codes(e validation.Errors) validation.Errors {
	out := make(validation.Errors, len(e))
	for i, fe := range e {
		out[i] = validation.FieldError{Field: fe.Field, Code: fe.Code}
	}
	return out
}

// Text returns names in NFC, and counts their length in that form;
// everyday scripts, emoji and symbols stay allowed.
func TestTextNormalisesToNFC(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Jane", "Jane"},
		{"Jose\u0301", "José"},             // e + combining acute
		{"\u212bngstr\u00f6m", "Ångström"}, // ANGSTROM SIGN is canonically Å
		{"Ivan Иванов 李雷 👍 ©", "Ivan Иванов 李雷 👍 ©"},
	} {
		var e validation.Errors
		got := e.Text(tc.in, true, validation.MaxNameLen, "name")
		if len(e) > 0 || got != tc.want {
			t.Errorf("Text(%q) = %q, %v; want %q", tc.in, got, e, tc.want)
		}
	}
	var e validation.Errors
	if e.Text(strings.Repeat("e\u0301", validation.MaxNameLen), true, validation.MaxNameLen, "name"); len(e) > 0 {
		t.Errorf("%d decomposed characters, %d in NFC: %v", 2*validation.MaxNameLen, validation.MaxNameLen, e)
	}
	for _, ok := range []string{"ünïcode-ид", "a.b@c", "x/y+z==", "李"} {
		var e validation.Errors
		if e.ID(ok, "id"); len(e) > 0 {
			t.Errorf("ID(%q): %v", ok, e)
		}
	}
	for _, space := range []string{"a b", "a\u00a0b", "a\u3000b", "a\tb"} {
		var e validation.Errors
		if e.ID(space, "id"); len(e) != 1 || e[0].Code != validation.CodeInvalidFormat {
			t.Errorf("ID(%q): %v, want INVALID_FORMAT", space, e)
		}
	}
}

// TestLookAlikeEmail: an address shown to a locked-out user could read as
// another one with an invisible or bidi character in it (found by a
// red-team pass: "it\u202egro.live@a.example"). Every look-alike class,
// and any non-ASCII letter, is INVALID_EMAIL; plain addresses pass.
func TestLookAlikeEmail(t *testing.T) {
	bad := []string{"jane\u00e9@example.com", "jane@exämple.com", "jane @example.com"}
	for _, la := range lookAlikes {
		bad = append(bad, "ja"+la.char+"ne@example.com", "jane@exa"+la.char+"mple.com")
	}
	for _, v := range bad {
		var e validation.Errors
		e.Email(v, "email")
		if err := e.Err(); err == nil || len(e) != 1 || e[0].Code != validation.CodeInvalidEmail {
			t.Errorf("Email(%q) = %v, want INVALID_EMAIL", v, e)
		}
	}
	for _, v := range []string{"jane@example.com", "it.desk+2fa@mail.example.co", "o'brien@example.org"} {
		var e validation.Errors
		e.Email(v, "email")
		if err := e.Err(); err != nil {
			t.Errorf("Email(%q) = %v, want no error", v, err)
		}
	}
}
