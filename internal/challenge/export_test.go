package challenge

import "github.com/twofactor/service/internal/apps"

// OutboxKey is the user's outbox key, for tests that read it.
func OutboxKey(company, user string) string { return keysFor(company, user).outbox() }

// LockKey is the user's lock key of app, for tests that set a lock.
func LockKey(company, user string, app apps.App) string { return keysFor(company, user).lock(app) }
