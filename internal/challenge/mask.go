package challenge

import "strings"

// maskPhone keeps the country code area and the last two digits:
// +37120000078 → +3712*****78. Short numbers keep only the first digit,
// so that at least four digits stay hidden: +1234567 → +1****67.
func maskPhone(p string) string {
	keep := 5 // "+" and four digits
	if len(p)-keep-2 < 4 {
		keep = 2
	}
	if len(p) <= keep+2 {
		return p[:1] + strings.Repeat("*", len(p)-1)
	}
	return p[:keep] + strings.Repeat("*", len(p)-keep-2) + p[len(p)-2:]
}

// maskEmail keeps the first letter and the domain: j***@example.com.
func maskEmail(e string) string {
	at := strings.LastIndexByte(e, '@')
	if at < 1 {
		return "***"
	}
	return e[:1] + "***" + e[at:]
}
