package model

// UserTwoFactor is hand-written so the lock resolver knows whose locks to
// read.
type UserTwoFactor struct {
	Web     bool   `json:"web"`
	Manager bool   `json:"manager"`
	UserID  string `json:"-"`
}
