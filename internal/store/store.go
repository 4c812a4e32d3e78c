// Package store opens the database and Redis, and owns the schema
// migrations. Embedded mode uses SQLite and an in-process Redis; production
// uses PostgreSQL and a real Redis.
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/glebarez/sqlite"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"
)

// OpenDB connects to PostgreSQL when url is set, else to a SQLite file in
// dataDir, and runs the migrations.
func OpenDB(ctx context.Context, url, dataDir string) (*gorm.DB, error) {
	cfg := &gorm.Config{
		Logger:  logger.Discard,
		NowFunc: Now,
		// Every write that needs a transaction opens one explicitly.
		SkipDefaultTransaction: true,
	}
	var (
		db  *gorm.DB
		err error
	)
	if url == "" {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, fmt.Errorf("open database: create data dir: %w", err)
		}
		dsn := filepath.Join(dataDir, "twofactor.db") +
			"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_txlock=immediate"
		db, err = gorm.Open(sqlite.Open(dsn), cfg)
	} else {
		db, err = openPostgres(url, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if url == "" {
		// SQLite has one writer; a single connection turns lock contention
		// into queueing instead of SQLITE_BUSY errors.
		sqlDB.SetMaxOpenConns(1)
	} else {
		sqlDB.SetMaxOpenConns(20)
		sqlDB.SetMaxIdleConns(20)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := Migrate(ctx, db); err != nil {
		_ = sqlDB.Close()
		return nil, err
	}
	return db, nil
}

// OpenPostgres connects to PostgreSQL without migrating, for
// administrative work such as creating test schemas.
func OpenPostgres(ctx context.Context, url string) (*gorm.DB, error) {
	db, err := openPostgres(url, &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	sqlDB, err := db.DB()
	if err == nil {
		err = sqlDB.PingContext(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return db, nil
}

func openPostgres(url string, cfg *gorm.Config) (*gorm.DB, error) {
	if !strings.HasPrefix(url, "postgres://") && !strings.HasPrefix(url, "postgresql://") {
		return nil, errors.New("DATABASE_URL must start with postgres://")
	}
	dsn := withExecMode(url)
	conf, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	// DSN too: GORM keeps it for whoever asks the dialector (tests that
	// open a second pool to the same database).
	return gorm.Open(postgres.New(postgres.Config{DSN: dsn, Conn: stdlib.OpenDB(*conf, stdlib.OptionShouldPing(shouldPing))}), cfg)
}

// shouldPing decides whether a pooled connection is pinged before reuse:
// when idle for more than a second (pgx's default), and also when
// something waits unread on it. PostgreSQL ends each backend it
// terminates (a restart, a failover, pg_terminate_backend) with an error
// message and a close, which an idle connection does not read: reused
// unpinged, it would fail the next statement. A failed ping makes
// database/sql take another connection.
func shouldPing(_ context.Context, p stdlib.ShouldPingParams) bool {
	return p.IdleDuration > time.Second || !quiet(p.Conn.PgConn().Conn())
}

// withExecMode makes pgx run every query as one unnamed statement
// (default_query_exec_mode=exec) unless url chooses a mode. pgx's default
// prepares named statements once per connection and reuses them, which is
// session state: behind PgBouncer in transaction pooling mode the next
// transaction may get a server connection that never saw the statement
// ("prepared statement does not exist"). exec needs no session state and
// still takes one round trip; the price is text-format results and a plan
// per execution (see BenchmarkQueryExecMode).
func withExecMode(url string) string {
	if strings.Contains(url, "default_query_exec_mode=") {
		return url
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "default_query_exec_mode=exec"
}

// Now is the clock for stored timestamps: UTC, truncated to the
// millisecond precision that the API shows, so filters and output agree.
func Now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// IsPostgres tells the dialects apart where SQL must differ.
func IsPostgres(db *gorm.DB) bool { return db.Dialector.Name() == "postgres" }

// PlanPerExecution makes PostgreSQL plan the statements of the transaction
// tx for their actual values; elsewhere it does nothing. It is for
// transactions of statements over long id lists: a prepared statement's
// cached generic plan, made while a company had few users, went on
// scanning all of them (through the (company_id, email) index) for each
// batch's 500 ids, so an import slowed with every batch (30,000 users:
// 256 ms a batch instead of 3). It is per transaction, not set on the
// connection, because a short lookup's generic plan is right and cheaper,
// and because SET LOCAL ends with the transaction, so it suits PgBouncer.
func PlanPerExecution(tx *gorm.DB) error {
	if !IsPostgres(tx) {
		return nil
	}
	if err := tx.Exec("SET LOCAL plan_cache_mode = force_custom_plan").Error; err != nil {
		return fmt.Errorf("plan per execution: %w", err)
	}
	return nil
}

// Array passes v to PostgreSQL as one array parameter, for bulk
// statements that unnest their columns; GORM would expand a bare slice
// into a list of parameters.
func Array[T any](v []T) pgtype.Array[T] {
	return pgtype.Array[T]{
		Elements: v,
		Dims:     []pgtype.ArrayDimension{{Length: int32(len(v)), LowerBound: 1}},
		Valid:    true,
	}
}
