package challenge

import "strings"

// maskPhone keeps the country code area and the last two digits:
// +37120000078 → +3712*****78.
func maskPhone(p string) string {
	if len(p) <= 7 {
		return p[:1] + strings.Repeat("*", len(p)-1)
	}
	return p[:5] + strings.Repeat("*", len(p)-7) + p[len(p)-2:]
}

// maskEmail keeps the first letter and the domain: j***@example.com.
func maskEmail(e string) string {
	at := strings.LastIndexByte(e, '@')
	if at < 1 {
		return "***"
	}
	return e[:1] + "***" + e[at:]
}
