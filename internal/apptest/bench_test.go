package apptest_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/models"
)

// benchRows is the size of the audit log the pagination benchmark walks.
const benchRows = 1_000_000

// deepRow is how deep (counting from the newest row, 1-based) the deep
// page's cursor sits.
const deepRow = 999_900

// otherRowsEnv sets how many older rows another company has in the same
// table (default defaultOtherRows; 0 for none), to see what a neighbour
// does to the plans.
const (
	otherRowsEnv     = "BENCH_OTHER_COMPANY_ROWS"
	defaultOtherRows = 10_000
)

const benchHowTo = "these benchmarks need PostgreSQL and Redis; run them as\n" +
	"  TEST_DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' " +
	"TEST_REDIS_URL='redis://127.0.0.1:6379/0' go test -run '^$' -bench . -benchtime 1000x ./internal/apptest"

// BenchmarkService runs the whole service (real HTTP handler, PostgreSQL,
// Redis) on one server with an audit log of benchRows rows in one company,
// inserted with one INSERT ... SELECT FROM generate_series, next to a
// smaller, older company (see otherRowsEnv). It reports:
//
//   - AuditLogPages: the median latency (p50-ms) of these auditLog pages,
//     20 events each with every field: the newest; the second (a shallow
//     control: like every page after a cursor it also probes for
//     hasPreviousPage); the page deepRow rows deep reached with
//     first/after; the same page reached with last/before; and the oldest
//     (the log's far end, 10 events). Also each deep page's p50 over the
//     newest's (target ≤ 1.5). The pages are requested in turn within each
//     iteration, so drift on the machine affects them alike.
//   - Throughput/typename and Throughput/twoFactorSettings: requests per
//     second sent in parallel, and their ratio.
//
// It prints the query plans of the deep page and a summary to stdout.
// Nothing here asserts a time.
func BenchmarkService(b *testing.B) {
	if os.Getenv("TEST_DATABASE_URL") == "" || os.Getenv("TEST_REDIS_URL") == "" {
		b.Fatal(benchHowTo)
	}
	otherRows := defaultOtherRows
	if v := os.Getenv(otherRowsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("%s=%q: want a row count", otherRowsEnv, v)
		}
		otherRows = n
	}
	srv := apptest.Start(b)
	db := srv.Backends.DB
	const company, other = "bench-co", "bench-other"

	start := time.Now()
	if otherRows > 0 {
		seedAuditLog(b, db, other, otherRows) // ids 1..otherRows
	}
	seedAuditLog(b, db, company, benchRows)
	// Leave the table as autovacuum would, so it does not start working
	// in the middle of the measurements.
	if err := db.Exec("VACUUM ANALYZE audit_events").Error; err != nil {
		b.Fatalf("vacuum analyze: %v", err)
	}
	fmt.Printf("seeded %d audit rows in one company, after %d in another, in %s, then VACUUM ANALYZE\n",
		benchRows, otherRows, time.Since(start).Round(time.Millisecond))

	var maxID int64
	if err := db.Model(&models.AuditEvent{}).Where("company_id = ?", company).Select("MAX(id)").Scan(&maxID).Error; err != nil {
		b.Fatal(err)
	}
	// Ids are contiguous: the row n deep (1 = newest) has id maxID-n+1.
	idAt := func(depth int64) int64 { return maxID - depth + 1 }
	cursorAt := func(depth int64) string { return srv.Audit.Cursor(audit.Event{ID: idAt(depth), Company: company}) }
	publicID := func(depth int64) string { return srv.Audit.PublicID(audit.Event{ID: idAt(depth), Company: company}) }
	explainDeepPage(b, db, company, idAt(deepRow), idAt(deepRow+21), true)
	if otherRows > 20 {
		explainDeepPage(b, db, other, int64(otherRows/2+1), int64(otherRows/2-20), false)
	}

	admin := &client{
		url:   srv.URL + "/query",
		token: srv.Token(b, auth.Caller{UserID: "bench-admin", Company: company, Role: auth.RoleAdmin}),
		http:  &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}},
	}
	const pageQuery = `query($first: Int, $after: String, $last: Int, $before: String) {
		auditLog(first: $first, after: $after, last: $last, before: $before) {
			edges { cursor node { id action actor { id displayName role } targetUser { id displayName } app details createdAt } }
			pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }`
	pages := []struct {
		name         string
		vars         map[string]any
		depth, count int64 // the depth of the page's first row, and its size
	}{
		{"newest", map[string]any{"first": 20}, 1, 20},
		{"page2", map[string]any{"first": 20, "after": cursorAt(20)}, 21, 20},
		// The 20 rows after the one deepRow deep.
		{"deep-after", map[string]any{"first": 20, "after": cursorAt(deepRow)}, deepRow + 1, 20},
		// The same 20 rows, reached backwards from the row just past them.
		{"deep-before", map[string]any{"last": 20, "before": cursorAt(deepRow + 21)}, deepRow + 1, 20},
		// The far end: the 10 oldest rows.
		{"oldest", map[string]any{"first": 20, "after": cursorAt(benchRows - 10)}, benchRows - 9, 10},
	}
	bodies := make([][]byte, len(pages))
	for i, p := range pages {
		bodies[i] = admin.body(b, pageQuery, p.vars)
		ids := auditIDs(b, admin.send(b, bodies[i]))
		if int64(len(ids)) != p.count || ids[0] != publicID(p.depth) || ids[len(ids)-1] != publicID(p.depth+p.count-1) {
			b.Fatalf("%s page = %v, want ids %d down to %d", p.name, ids, idAt(p.depth), idAt(p.depth+p.count-1))
		}
	}

	medians := make([]time.Duration, len(pages))
	b.Run("AuditLogPages", func(b *testing.B) {
		lat := make([][]time.Duration, len(pages))
		round := 0
		for b.Loop() {
			for k := range pages {
				i := (round + k) % len(pages) // rotate who goes first
				t0 := time.Now()
				admin.send(b, bodies[i])
				lat[i] = append(lat[i], time.Since(t0))
			}
			round++
		}
		for i, p := range pages {
			medians[i] = median(lat[i])
			b.ReportMetric(ms(medians[i]), p.name+"-p50-ms")
			if i >= 2 {
				b.ReportMetric(float64(medians[i])/float64(medians[0]), p.name+"/newest")
			}
		}
	})

	throughput := map[string]float64{}
	b.Run("Throughput", func(b *testing.B) {
		for _, op := range []struct{ name, query string }{
			{"typename", `{ __typename }`},
			{"twoFactorSettings", `{ twoFactorSettings { general { deliveryMethod contactPerson { name email phone } } defaults { web manager } updatedAt } }`},
		} {
			body := admin.body(b, op.query, nil)
			admin.send(b, body)
			b.Run(op.name, func(b *testing.B) {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						admin.send(b, body)
					}
				})
				throughput[op.name] = float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(throughput[op.name], "req/s")
				if op.name != "typename" && throughput["typename"] > 0 {
					b.ReportMetric(throughput[op.name]/throughput["typename"], "x-typename")
				}
			})
		}
	})

	if medians[0] > 0 {
		fmt.Printf("auditLog p50 over %d rows (another company: %d rows): newest %.3f ms; page 2 %.3f ms; "+
			"%d deep: first/after %.3f ms (%.2fx newest), last/before %.3f ms (%.2fx newest); oldest %.3f ms (%.2fx newest); target <= 1.5x\n",
			benchRows, otherRows, ms(medians[0]), ms(medians[1]), deepRow,
			ms(medians[2]), float64(medians[2])/float64(medians[0]),
			ms(medians[3]), float64(medians[3])/float64(medians[0]),
			ms(medians[4]), float64(medians[4])/float64(medians[0]))
	}
	if t, s := throughput["typename"], throughput["twoFactorSettings"]; t > 0 && s > 0 {
		fmt.Printf("throughput (parallel, GOMAXPROCS=%d): { __typename } %.0f req/s, twoFactorSettings %.0f req/s (%.2fx)\n",
			runtime.GOMAXPROCS(0), t, s, s/t)
	}
}

// seedAuditLog inserts n rows for company in one statement, in the
// schema the test backends point at. Their ids are contiguous.
func seedAuditLog(b *testing.B, db *gorm.DB, company string, n int) {
	b.Helper()
	err := db.Exec(`
		INSERT INTO audit_events (company_id, action, actor_id, actor_name, actor_role,
			target_user_id, target_user_name, app, details, created_at)
		SELECT ?,
			CASE WHEN g % 2 = 0 THEN 'USER_TWO_FACTOR_ENABLED' ELSE 'USER_TWO_FACTOR_DISABLED' END,
			'admin-' || (g % 10), 'Admin ' || (g % 10), 'admin',
			'user-' || (g % 5000), 'User ' || (g % 5000),
			CASE WHEN g % 3 = 0 THEN 'manager' ELSE 'web' END,
			CASE WHEN g % 2 = 0 THEN '{"before":{"enabled":false},"after":{"enabled":true}}'
			     ELSE '{"before":{"enabled":true},"after":{"enabled":false}}' END,
			TIMESTAMPTZ '2025-01-01 00:00:00+00' + g * INTERVAL '1 second'
		FROM generate_series(1, ?) AS g`, company, n).Error
	if err != nil {
		b.Fatalf("seed audit log: %v", err)
	}
}

// explainDeepPage prints the plans of the deep page's queries as
// audit.List sends them, both as a one-off (custom) plan and as the
// generic plan a cached prepared statement may switch to.
func explainDeepPage(b *testing.B, db *gorm.DB, company string, afterID, beforeID int64, probes bool) {
	b.Helper()
	queries := []struct{ name, sql, args string }{
		{"first/after page", `SELECT * FROM "audit_events" WHERE company_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3`,
			fmt.Sprintf("'%s', %d, 21", company, afterID)},
		{"first/after hasPreviousPage probe", `SELECT "id" FROM "audit_events" WHERE company_id = $1 AND id >= $2 LIMIT $3`,
			fmt.Sprintf("'%s', %d, 1", company, afterID)},
		{"last/before page", `SELECT * FROM "audit_events" WHERE company_id = $1 AND id > $2 ORDER BY id ASC LIMIT $3`,
			fmt.Sprintf("'%s', %d, 21", company, beforeID)},
		{"last/before hasNextPage probe", `SELECT "id" FROM "audit_events" WHERE company_id = $1 AND id <= $2 LIMIT $3`,
			fmt.Sprintf("'%s', %d, 1", company, beforeID)},
	}
	for _, q := range queries {
		if !probes && strings.Contains(q.name, "probe") {
			continue
		}
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			var plan []string
			err := db.Transaction(func(tx *gorm.DB) error {
				stmts := []string{
					"SET LOCAL plan_cache_mode = " + mode,
					"PREPARE bench_q AS " + q.sql,
				}
				for _, s := range stmts {
					if err := tx.Exec(s).Error; err != nil {
						return err
					}
				}
				defer tx.Exec("DEALLOCATE bench_q")
				return tx.Raw("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE bench_q(" + q.args + ")").Scan(&plan).Error
			})
			if err != nil {
				b.Fatalf("explain %s: %v", q.name, err)
			}
			fmt.Printf("EXPLAIN %s, %s, %s, (%s):\n  %s\n  %s\n", company, q.name, mode, q.args, q.sql, strings.Join(plan, "\n  "))
		}
	}
}

type client struct {
	url, token string
	http       *http.Client
}

func (c *client) body(b *testing.B, query string, vars map[string]any) []byte {
	b.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// send posts body and returns the response, failing on anything but a
// clean 200.
func (c *client) send(b *testing.B, body []byte) []byte {
	req, err := http.NewRequest(http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		b.Error(err)
		return nil
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		b.Error(err)
		return nil
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || bytes.Contains(out, []byte(`"errors"`)) {
		b.Errorf("status %d, err %v: %.300s", resp.StatusCode, err, out)
	}
	return out
}

func auditIDs(b *testing.B, raw []byte) []string {
	b.Helper()
	var r struct {
		Data struct {
			AuditLog struct {
				Edges []struct{ Node struct{ ID string } }
			}
		}
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		b.Fatalf("decode %s: %v", raw, err)
	}
	ids := make([]string, len(r.Data.AuditLog.Edges))
	for i, e := range r.Data.AuditLog.Edges {
		ids[i] = e.Node.ID
	}
	return ids
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
