package apptest_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/apptest"
)

// Size of BenchmarkAuditExport's log, overridable by environment.
const (
	exportRowsEnv     = "BENCH_EXPORT_ROWS"
	defaultExportRows = 1_000_000
	// exportRSSBudget is the bound on RSS growth during an export.
	exportRSSBudget = 20 << 20
)

const exportHowTo = "BenchmarkAuditExport needs PostgreSQL and Redis; run it as\n" +
	"  TEST_DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' " +
	"TEST_REDIS_URL='redis://127.0.0.1:6379/0' go test -run '^$' -bench BenchmarkAuditExport -benchtime 1x ./internal/apptest"

// BenchmarkAuditExport fills one company's audit log with
// BENCH_EXPORT_ROWS rows (default 1,000,000; one INSERT ... SELECT FROM
// generate_series) next to another company's 10,000, and exports it
// through the real HTTP handler (GET /audit/export) as CSV and as NDJSON
// to a reader that discards it. While each export runs it samples the
// process's VmRSS every 10 ms, and reports the growth over the RSS
// measured just before (rss-growth-MB; the bound is 20 MB), the
// rows per second and the MB per second. It fails if an export misses a
// row or grows RSS by more than the bound. Each iteration is one whole
// export: run it with -benchtime 1x.
func BenchmarkAuditExport(b *testing.B) {
	if os.Getenv("TEST_DATABASE_URL") == "" || os.Getenv("TEST_REDIS_URL") == "" {
		b.Fatal(exportHowTo)
	}
	if _, err := vmRSS(); err != nil {
		b.Fatalf("this benchmark reads /proc/self/status (Linux): %v", err)
	}
	n := envCount(b, exportRowsEnv, defaultExportRows)
	srv := apptest.Start(b)
	const company = "bench-export"
	start := time.Now()
	fillExportLog(b, srv.Backends.DB, "bench-export-other", 10_000)
	fillExportLog(b, srv.Backends.DB, company, n)
	fmt.Printf("inserted %d rows in %v\n", n+10_000, time.Since(start).Round(time.Millisecond))
	token := srv.Admin(b, company).Token

	for _, format := range []string{"csv", "ndjson"} {
		b.Run(format, func(b *testing.B) {
			var r exportRun
			for range b.N {
				r = exportOnce(b, srv.URL+"/audit/export?format="+format, token)
				if want := n + map[string]int{"csv": 1}[format]; r.lines != want {
					b.Fatalf("%s export has %d lines, want %d", format, r.lines, want)
				}
			}
			growth := float64(r.peakRSS-r.baseRSS) / (1 << 20)
			rate := float64(n) / r.elapsed.Seconds()
			b.ReportMetric(growth, "rss-growth-MB")
			b.ReportMetric(rate, "rows/s")
			b.ReportMetric(float64(r.bytes)/(1<<20)/r.elapsed.Seconds(), "MB/s")
			fmt.Printf("%s: %d rows, %.1f MB in %v (%.0f rows/s); RSS %.1f MB before, peak %.1f MB: growth %.1f MB\n",
				format, n, float64(r.bytes)/(1<<20), r.elapsed.Round(time.Millisecond), rate,
				float64(r.baseRSS)/(1<<20), float64(r.peakRSS)/(1<<20), growth)
			if r.peakRSS-r.baseRSS > exportRSSBudget {
				b.Errorf("RSS grew by %.1f MB during the %s export; the bound is %d MB", growth, format, exportRSSBudget>>20)
			}
		})
	}
}

// fillExportLog inserts n rows for company in one statement; about one in
// ten is a sign-in event and one in a hundred has a name a spreadsheet
// would run as a formula.
func fillExportLog(b *testing.B, db *gorm.DB, company string, n int) {
	b.Helper()
	err := db.Exec(`
		INSERT INTO audit_events (company_id, action, category, actor_id, actor_name, actor_role,
			target_user_id, target_user_name, app, details, created_at)
		SELECT ?,
			CASE WHEN g % 10 = 0 THEN 'CODE_SENT' WHEN g % 2 = 0 THEN 'USER_TWO_FACTOR_ENABLED' ELSE 'USER_TWO_FACTOR_DISABLED' END,
			CASE WHEN g % 10 = 0 THEN 'AUTHENTICATION' ELSE 'SETTINGS' END,
			'admin-' || (g % 10), 'Admin ' || (g % 10), 'admin',
			'user-' || (g % 5000), CASE WHEN g % 100 = 0 THEN '=HYPERLINK("http://evil.example/")' ELSE 'User ' || (g % 5000) END,
			CASE WHEN g % 3 = 0 THEN 'manager' ELSE 'web' END,
			CASE WHEN g % 2 = 0 THEN '{"before":{"enabled":false},"after":{"enabled":true}}'
			     ELSE '{"before":{"enabled":true},"after":{"enabled":false}}' END,
			TIMESTAMPTZ '2025-01-01 00:00:00+00' + g * INTERVAL '1 second'
		FROM generate_series(1, ?) AS g`, company, n).Error
	if err != nil {
		b.Fatalf("fill audit log: %v", err)
	}
}

// exportRun is what one export measured.
type exportRun struct {
	lines, bytes     int
	elapsed          time.Duration
	baseRSS, peakRSS int64
}

// exportOnce downloads url to a discarding, line-counting writer while
// sampling RSS.
func exportOnce(b *testing.B, url, token string) exportRun {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	var r exportRun
	var err error
	if r.baseRSS, err = vmRSS(); err != nil {
		b.Fatal(err)
	}
	stop, peak := sampleRSS(r.baseRSS)
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	var c lineCounter
	_, err = io.Copy(&c, resp.Body)
	resp.Body.Close()
	r.elapsed = time.Since(start)
	stop()
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("export: status %d, %v", resp.StatusCode, err)
	}
	r.lines, r.bytes, r.peakRSS = c.lines, c.bytes, peak()
	return r
}

// sampleRSS samples VmRSS every 10 ms until stop is called; peak is the
// highest sample (at least base).
func sampleRSS(base int64) (stop func(), peak func() int64) {
	var (
		mu      sync.Mutex
		highest = base
		done    = make(chan struct{})
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			if v, err := vmRSS(); err == nil {
				mu.Lock()
				if v > highest {
					highest = v
				}
				mu.Unlock()
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); wg.Wait() }, func() int64 { mu.Lock(); defer mu.Unlock(); return highest }
}

// vmRSS is the process's resident set size in bytes.
func vmRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}

// lineCounter discards what it is given, counting bytes and lines.
type lineCounter struct{ lines, bytes int }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.lines += bytes.Count(p, []byte{'\n'})
	c.bytes += len(p)
	return len(p), nil
}
