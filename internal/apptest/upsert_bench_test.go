package apptest_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
)

// Sizes of BenchmarkUpsertImport, overridable by environment.
const (
	importUsersEnv     = "BENCH_UPSERT_USERS"
	defaultImportUsers = 100_000
	createUsersEnv     = "BENCH_CREATE_USERS"
	defaultCreateUsers = 2_000
	importBatch        = 500 // upsertUsers' maximum
)

const (
	benchUpsert = `mutation($input: UpsertUsersInput!) { upsertUsers(input: $input) { results { status } userErrors { field code } } }`
	benchCreate = `mutation($input: CreateUserInput!) { createUser(input: $input) { user { id } userErrors { field code } } }`
)

// BenchmarkUpsertImport imports BENCH_UPSERT_USERS users (default 100,000)
// into a fresh company by upsertUsers, 500 per call, one call after
// another, through the real HTTP handler on PostgreSQL and Redis; then
// creates BENCH_CREATE_USERS users (default 2,000) in another company by
// createUser, one call at a time. It reports both rates in users per
// second and their ratio (target ≥ 20). Each call of the function is one
// such run whatever b.N is: run it with -benchtime 1x.
func BenchmarkUpsertImport(b *testing.B) {
	if os.Getenv("TEST_DATABASE_URL") == "" || os.Getenv("TEST_REDIS_URL") == "" {
		b.Fatal(benchHowTo)
	}
	nImport, nCreate := envCount(b, importUsersEnv, defaultImportUsers), envCount(b, createUsersEnv, defaultCreateUsers)
	srv := apptest.Start(b)
	svc := srv.Service(b, "bench-upsert")
	admin := srv.Admin(b, "bench-create")
	createOneByOne(b, admin, "warm", 20) // connections, prepared statements, settings rows
	importByUpsert(b, svc, "warm", importBatch)

	b.ResetTimer()
	upsertTime := importByUpsert(b, svc, "u", nImport)
	createTime := createOneByOne(b, admin, "c", nCreate)
	b.StopTimer()

	upsertRate := float64(nImport) / upsertTime.Seconds()
	createRate := float64(nCreate) / createTime.Seconds()
	b.ReportMetric(upsertRate, "upsert-users/s")
	b.ReportMetric(createRate, "create-users/s")
	b.ReportMetric(upsertRate/createRate, "upsert/create")
	fmt.Printf("upsertUsers: %d users in %v (%.0f users/s); createUser: %d in %v (%.0f users/s); ratio %.1f\n",
		nImport, upsertTime.Round(time.Millisecond), upsertRate, nCreate, createTime.Round(time.Millisecond), createRate, upsertRate/createRate)
}

// envCount reads a positive count from the environment, or def.
func envCount(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}

// benchUser is the record of user prefix-i: every field set.
func benchUser(prefix string, i int) map[string]any {
	id := fmt.Sprintf("%s%07d", prefix, i)
	return map[string]any{
		"id": id, "email": id + "@bench.example",
		"phone": fmt.Sprintf("+3712%07d", i), "displayName": "User " + id,
	}
}

// importByUpsert upserts n new users in batches of importBatch, checking
// that each comes back CREATED, and returns the time taken.
func importByUpsert(b *testing.B, c *apptest.Client, prefix string, n int) time.Duration {
	b.Helper()
	start := time.Now()
	for from := 0; from < n; from += importBatch {
		items := make([]map[string]any, 0, importBatch)
		for i := from; i < min(from+importBatch, n); i++ {
			items = append(items, benchUser(prefix, i))
		}
		var out struct {
			UpsertUsers struct {
				Results    []struct{ Status string }
				UserErrors []struct{ Code string }
			}
		}
		c.Must(b, benchUpsert, map[string]any{"input": map[string]any{"users": items}}, &out)
		r := out.UpsertUsers
		if len(r.UserErrors) > 0 || len(r.Results) != len(items) || r.Results[len(items)-1].Status != "CREATED" {
			b.Fatalf("upsertUsers from %d: %d results, user errors %+v", from, len(r.Results), r.UserErrors)
		}
	}
	return time.Since(start)
}

// createOneByOne creates n users by createUser, one request each, and
// returns the time taken.
func createOneByOne(b *testing.B, c *apptest.Client, prefix string, n int) time.Duration {
	b.Helper()
	start := time.Now()
	for i := range n {
		var out struct {
			CreateUser struct {
				User       *struct{ ID string }
				UserErrors []struct{ Code string }
			}
		}
		c.Must(b, benchCreate, map[string]any{"input": benchUser(prefix, i)}, &out)
		if out.CreateUser.User == nil {
			b.Fatalf("createUser %d: user errors %+v", i, out.CreateUser.UserErrors)
		}
	}
	return time.Since(start)
}
