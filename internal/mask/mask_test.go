package mask

import "testing"

func TestMask(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"+37120000078", "+3712*****78"},
		{"+4915112345678", "+4915*******78"},
		{"+37120000", "+3*****00"},
		{"+1234567", "+1****67"},
		{"+12345678901", "+1234*****01"},
		{"+123456789012345", "+1234*********45"},
		{"+12", "+**"},
		{"", ""},
	} {
		if got := Phone(tc.in); got != tc.want {
			t.Errorf("Phone(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"jane@example.com", "j***@example.com"},
		{"j@example.com", "j***@example.com"},
		{"a.b+c@sub.example.org", "a***@sub.example.org"},
		{"we@ird@example.com", "w***@example.com"},
		{"@example.com", "***"},
		{"noat", "***"},
		{"", ""},
	} {
		if got := Email(tc.in); got != tc.want {
			t.Errorf("Email(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
