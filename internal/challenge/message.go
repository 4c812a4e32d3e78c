package challenge

import (
	"fmt"
	"html"
	"time"

	"github.com/twofactor/service/internal/delivery"
)

func smsMessage(code string, ttl time.Duration) delivery.Message {
	return delivery.Message{Text: fmt.Sprintf("Your verification code is %s. It expires in %s. Never share it.", code, human(ttl))}
}

func emailMessage(code string, ttl time.Duration) delivery.Message {
	text := fmt.Sprintf("Your verification code is %s.\n\nIt expires in %s. If you did not try to sign in, ignore this email and tell your administrator.\n", code, human(ttl))
	page := fmt.Sprintf(`<!doctype html><html><body style="font-family:sans-serif">
<p>Your verification code is</p><p style="font-size:28px;letter-spacing:4px"><strong>%s</strong></p>
<p>It expires in %s. If you did not try to sign in, ignore this email and tell your administrator.</p>
</body></html>`, html.EscapeString(code), html.EscapeString(human(ttl)))
	return delivery.Message{Subject: code + " is your verification code", Text: text, HTML: page}
}

func human(d time.Duration) string {
	if d%time.Minute == 0 {
		if m := int(d / time.Minute); m == 1 {
			return "1 minute"
		} else {
			return fmt.Sprintf("%d minutes", m)
		}
	}
	return d.String()
}
