package store_test

import (
	"context"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/twofactor/service/internal/store"
)

// TestPostgresVerifyFull connects with sslmode=verify-full and the
// server's own certificate as the CA (Debian's PostgreSQL serves a
// self-signed one for "localhost"): the README's DATABASE_URL for TLS. A
// host name the certificate does not carry is refused.
func TestPostgresVerifyFull(t *testing.T) {
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		t.Skip("needs TEST_DATABASE_URL (PostgreSQL)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := store.OpenPostgres(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if db, err := admin.DB(); err == nil {
			_ = db.Close()
		}
	}()
	var ssl, certFile string
	if err := admin.Raw("SELECT current_setting('ssl'), current_setting('ssl_cert_file')").Row().Scan(&ssl, &certFile); err != nil {
		t.Fatal(err)
	}
	if ssl != "on" {
		t.Fatalf("the test PostgreSQL has ssl=%s; this test needs ssl=on (Debian's default)", ssl)
	}
	if _, err := os.Stat(certFile); err != nil {
		t.Fatalf("the server's certificate %s: %v", certFile, err)
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() == "6432" {
		t.Skip("through PgBouncer, which this CI runs without TLS")
	}
	withTLS := func(host string) string {
		v := *u
		v.Host = host + ":" + u.Port()
		q := v.Query()
		q.Set("sslmode", "verify-full")
		q.Set("sslrootcert", certFile)
		v.RawQuery = q.Encode()
		return v.String()
	}
	db, err := store.OpenPostgres(ctx, withTLS("localhost"))
	if err != nil {
		t.Fatalf("verify-full to localhost: %v", err)
	}
	var on bool
	if err := db.Raw("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Row().Scan(&on); err != nil || !on {
		t.Errorf("the connection is not encrypted (ssl=%v, err %v)", on, err)
	}
	if sqlDB, err := db.DB(); err == nil {
		_ = sqlDB.Close()
	}
	if _, err := store.OpenPostgres(ctx, withTLS("127.0.0.1")); err == nil {
		t.Error("verify-full accepted a host name the certificate does not name")
	}
}
