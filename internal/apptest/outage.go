package apptest

import (
	"context"
	"errors"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/store"
)

// ErrDatabaseDown is what every statement fails with on SQLite while a
// DatabaseSwitch is down.
var ErrDatabaseDown = errors.New("apptest: the database is down")

// DatabaseSwitch takes the database away from one app and gives it back:
// on PostgreSQL a TCP proxy in front of the server that Down cuts (the
// server is shared by parallel tests, so stopping it is not an option);
// on SQLite, which has no connection to cut, a GORM callback that fails
// every statement while down.
type DatabaseSwitch struct {
	proxy *Proxy
	down  atomic.Bool
}

// Down makes every statement of the app fail from now on.
func (d *DatabaseSwitch) Down() {
	d.down.Store(true)
	if d.proxy != nil {
		d.proxy.Cut()
	}
}

// Up gives the database back.
func (d *DatabaseSwitch) Up() {
	d.down.Store(false)
	if d.proxy != nil {
		d.proxy.Restore()
	}
}

// DatabaseOutage is a Start tweak that puts the app's database behind a
// new switch, stored in *sw. On PostgreSQL the app gets a connection pool
// of its own, through the proxy; the test's own handle (Backends.DB)
// stays direct.
func DatabaseOutage(t testing.TB, sw **DatabaseSwitch) func(*app.Options) {
	return func(o *app.Options) {
		t.Helper()
		d := &DatabaseSwitch{}
		*sw = d
		if pg, ok := o.DB.Dialector.(*postgres.Dialector); ok {
			o.DB = throughProxy(t, d, pg.Config.DSN)
			return
		}
		failWhileDown(t, o.DB, &d.down)
	}
}

// throughProxy opens dsn's database through a new proxy owned by d.
func throughProxy(t testing.TB, d *DatabaseSwitch, dsn string) *gorm.DB {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("database outage: %v", err)
	}
	d.proxy = NewProxy(t, u.Host)
	u.Host = d.proxy.Addr
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.OpenDB(ctx, u.String(), "")
	if err != nil {
		t.Fatalf("database outage: open through the proxy: %v", err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return db
}

// failWhileDown registers callbacks that fail every kind of statement
// before it runs while down is set.
func failWhileDown(t testing.TB, db *gorm.DB, down *atomic.Bool) {
	t.Helper()
	fail := func(tx *gorm.DB) {
		if down.Load() {
			_ = tx.AddError(ErrDatabaseDown)
		}
	}
	cb := db.Callback()
	for name, err := range map[string]error{
		"create": cb.Create().Before("gorm:create").Register("apptest:outage", fail),
		"query":  cb.Query().Before("gorm:query").Register("apptest:outage", fail),
		"update": cb.Update().Before("gorm:update").Register("apptest:outage", fail),
		"delete": cb.Delete().Before("gorm:delete").Register("apptest:outage", fail),
		"row":    cb.Row().Before("gorm:row").Register("apptest:outage", fail),
		"raw":    cb.Raw().Before("gorm:raw").Register("apptest:outage", fail),
	} {
		if err != nil {
			t.Fatalf("database outage: register the %s callback: %v", name, err)
		}
	}
}
