package challenge

import "github.com/twofactor/service/internal/mask"

// The masking lives in internal/mask, shared with the users' audit rows.

func maskPhone(p string) string { return mask.Phone(p) }

func maskEmail(e string) string { return mask.Email(e) }
