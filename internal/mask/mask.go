// Package mask hides most of a phone number or email address, for
// challenges and audit rows alike.
package mask

import "strings"

// Phone keeps the country code area and the last two digits:
// +37120000078 → +3712*****78. Short numbers keep only the first digit,
// so that at least four digits stay hidden: +1234567 → +1****67. An empty
// number stays empty.
func Phone(p string) string {
	if p == "" {
		return ""
	}
	keep := 5 // "+" and four digits
	if len(p)-keep-2 < 4 {
		keep = 2
	}
	if len(p) <= keep+2 {
		return p[:1] + strings.Repeat("*", len(p)-1)
	}
	return p[:keep] + strings.Repeat("*", len(p)-keep-2) + p[len(p)-2:]
}

// Email keeps the first letter and the domain: j***@example.com. An empty
// address stays empty.
func Email(e string) string {
	if e == "" {
		return ""
	}
	at := strings.LastIndexByte(e, '@')
	if at < 1 {
		return "***"
	}
	return e[:1] + "***" + e[at:]
}
