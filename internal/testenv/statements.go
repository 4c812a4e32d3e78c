package testenv

import (
	"fmt"
	"sync/atomic"
	"testing"

	"gorm.io/gorm"
)

var counters atomic.Int64

// Statements counts every statement GORM runs on db from now on: what a
// test or benchmark asserts or reports as SQL per operation.
func Statements(t testing.TB, db *gorm.DB) *atomic.Int64 {
	t.Helper()
	n := &atomic.Int64{}
	count := func(*gorm.DB) { n.Add(1) }
	name := fmt.Sprintf("testenv:statements:%d", counters.Add(1)) // one per call, never replaced
	cb := db.Callback()
	for kind, err := range map[string]error{
		"create": cb.Create().After("gorm:create").Register(name, count),
		"query":  cb.Query().After("gorm:query").Register(name, count),
		"update": cb.Update().After("gorm:update").Register(name, count),
		"delete": cb.Delete().After("gorm:delete").Register(name, count),
		"row":    cb.Row().After("gorm:row").Register(name, count),
		"raw":    cb.Raw().After("gorm:raw").Register(name, count),
	} {
		if err != nil {
			t.Fatalf("count %s statements: %v", kind, err)
		}
	}
	return n
}
