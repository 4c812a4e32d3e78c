package feed_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"gorm.io/gorm"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/testenv"
)

const benchHowTo = "BenchmarkIdleSubscribers measures PostgreSQL and Redis; run it as\n" +
	"  TEST_DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' " +
	"TEST_REDIS_URL='redis://127.0.0.1:6379/0' go test -run '^$' -bench IdleSubscribers -benchtime 20x ./internal/feed"

// Environment of the client process the benchmark starts (see TestMain).
const (
	envClients = "FEED_BENCH_CLIENTS" // how many subscribers to hold open
	envURL     = "FEED_BENCH_URL"
	envToken   = "FEED_BENCH_TOKEN"
	envAfter   = "FEED_BENCH_AFTER"
	// envProfile, when set, has each client process write a CPU profile
	// to its value plus "." and its subscriber count: the clients share
	// the machine's CPUs with the server, so their cost shows in fan-out.
	envProfile = "FEED_BENCH_CLIENT_CPUPROFILE"
)

// TestMain doubles as the benchmark's client process, so the subscribers'
// own memory and goroutines are not counted as the server's.
func TestMain(m *testing.M) {
	if n := os.Getenv(envClients); n != "" {
		if err := holdSubscribers(n); err != nil {
			fmt.Fprintln(os.Stderr, "bench clients:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// BenchmarkIdleSubscribers holds 1,000 idle subscribers of one company on
// one instance, on PostgreSQL and Redis, and reports the server's cost per
// subscriber: heap (runtime.MemStats.HeapAlloc after GC) and RSS
// (/proc/self/status VmRSS) deltas over the idle server, divided by 1,000,
// and goroutines per subscriber. The subscribers live in a child process.
//
// Each iteration then writes one event for a company with 1 subscriber and
// one for the company with 1,000, and times each from commit to the moment
// the last subscriber has it (fanout-1-ms, fanout-1000-ms: medians; ratio).
func BenchmarkIdleSubscribers(b *testing.B) {
	if !testenv.Real() || os.Getenv("TEST_REDIS_URL") == "" {
		b.Fatal(benchHowTo)
	}
	const many = 1000
	s := apptest.Start(b)
	one, crowd := testenv.Company(b), testenv.Company(b)

	heap0, rss0, g0 := serverFootprint(b)
	lone := startSubscribers(b, s, one, 1)
	heap1, rss1, g1 := serverFootprint(b)
	group := startSubscribers(b, s, crowd, many)
	heap2, rss2, g2 := serverFootprint(b)

	perSub := func(a, z int64, n int) float64 { return float64(z-a) / float64(n) }
	heapPer, rssPer, gPer := perSub(heap1, heap2, many), perSub(rss1, rss2, many), perSub(int64(g1), int64(g2), many)

	var t1, tN, cpuN []time.Duration
	var clientCPU time.Duration
	b.ResetTimer()
	for range b.N {
		t1 = append(t1, lone.fanout(b, s, one))
		cpu, ccpu := processCPU(b), group.cpu(b)
		tN = append(tN, group.fanout(b, s, crowd))
		cpuN = append(cpuN, processCPU(b)-cpu)
		clientCPU += group.cpu(b) - ccpu
	}
	b.StopTimer()
	m1, mN := median(t1), median(tN)
	// The server's own CPU time for the 1,000-subscriber fan-out: unlike
	// the wall-clock figures, it holds still when other processes load
	// the machine. The clients' share the same cores, so the wall time
	// is at least half the two together on 2 cores.
	b.ReportMetric(ms(median(cpuN)), "server-cpu-1000-ms")
	b.ReportMetric(ms(clientCPU)/float64(b.N), "client-cpu-1000-ms")
	b.ReportMetric(heapPer, "heap-B/sub")
	b.ReportMetric(rssPer, "rss-B/sub")
	b.ReportMetric(gPer, "goroutines/sub")
	b.ReportMetric(ms(m1), "fanout-1-ms")
	b.ReportMetric(ms(mN), "fanout-1000-ms")
	b.ReportMetric(float64(mN)/float64(m1), "fanout-ratio")
	b.ReportMetric(0, "ns/op") // the iterations time both fan-outs; ns/op says nothing
	fmt.Printf("idle server: heap %d KiB, RSS %d KiB, %d goroutines; with 1 subscriber: heap %d KiB, RSS %d KiB, %d goroutines\n",
		heap0>>10, rss0>>10, g0, heap1>>10, rss1>>10, g1)
	fmt.Printf("with %d more subscribers: heap %d KiB, RSS %d KiB, %d goroutines\n", many, heap2>>10, rss2>>10, g2)
	fmt.Printf("per subscriber: heap %.0f B, RSS %.0f B, %.2f goroutines\n", heapPer, rssPer, gPer)
	fmt.Printf("commit to last subscriber (median of %d): 1 subscriber %.2f ms, %d subscribers %.2f ms (x%.1f)\n",
		b.N, ms(m1), many, ms(mN), float64(mN)/float64(m1))
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// serverFootprint is this process's live heap after a GC, its RSS once
// freed memory went back to the OS, and its goroutines.
func serverFootprint(b *testing.B) (heap, rss int64, goroutines int) {
	b.Helper()
	time.Sleep(200 * time.Millisecond)
	// GC, and give freed pages back, so that RSS counts what is live.
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatalf("RSS: %v", err)
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("VmRSS %q: %v", rest, err)
			}
			rss = kb << 10
		}
	}
	return int64(m.HeapAlloc), rss, runtime.NumGoroutine()
}

// subscribers is a child process holding n subscriptions open.
type subscribers struct {
	stdin io.WriteCloser
	lines *bufio.Scanner
	pid   int
}

// cpu is the user and system CPU time the child process has used, from
// /proc/<pid>/stat in clock ticks (100 a second on Linux): a mean over
// many fan-outs is exact enough.
func (p *subscribers) cpu(b *testing.B) time.Duration {
	b.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		b.Fatalf("client CPU: %v", err)
	}
	// Fields after the command name, which ends at the last ')': state is
	// the first; utime and stime are the 12th and 13th.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("client CPU: %q", stat)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// startSubscribers starts the child process with n subscribers of company
// and returns once every stream runs: each resumed after an event written
// for the purpose and replayed the next one.
func startSubscribers(b *testing.B, s *apptest.Server, company string, n int) *subscribers {
	b.Helper()
	first := benchEvent(b, s, company, nil)
	benchEvent(b, s, company, nil)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envClients+"="+strconv.Itoa(n),
		envURL+"="+s.URL,
		envToken+"="+s.Token(b, admin(company)),
		envAfter+"="+s.App.Audit.Cursor(audit.Event{ID: first, Company: company}),
	)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close() // the child leaves when its stdin closes
		_ = cmd.Wait()
	})
	p := &subscribers{stdin: stdin, lines: bufio.NewScanner(stdout), pid: cmd.Process.Pid}
	if line := p.next(b); line != "ready" {
		b.Fatalf("client process said %q, want ready", line)
	}
	return p
}

func (p *subscribers) next(b *testing.B) string {
	b.Helper()
	if !p.lines.Scan() {
		b.Fatalf("client process ended: %v", p.lines.Err())
	}
	return p.lines.Text()
}

// fanout writes one event for company and returns the time from its
// commit until every subscriber of the child process has it.
func (p *subscribers) fanout(b *testing.B, s *apptest.Server, company string) time.Duration {
	b.Helper()
	var committed time.Time
	id := benchEvent(b, s, company, &committed)
	if line, want := p.next(b), "all "+s.App.Audit.PublicID(audit.Event{ID: id, Company: company}); line != want {
		b.Fatalf("client process said %q, want %q", line, want)
	}
	return time.Since(committed)
}

// benchEvent writes one audit row and announces it, noting when it
// committed.
func benchEvent(b *testing.B, s *apptest.Server, company string, committed *time.Time) int64 {
	b.Helper()
	e := &audit.Event{Company: company, Action: audit.GeneralSettingsChanged, Actor: audit.ActorOf(admin(company))}
	if err := s.Backends.DB.Transaction(func(tx *gorm.DB) error { return s.App.Audit.Write(tx, e) }); err != nil {
		b.Fatal(err)
	}
	if committed != nil {
		*committed = time.Now()
	}
	s.App.Audit.Announce(context.Background(), e)
	return e.ID
}

// holdSubscribers is the child process: it opens the subscriptions,
// prints "ready" once each has replayed its first event, then "all <id>"
// each time every subscriber has received event id, until stdin closes.
func holdSubscribers(count string) error {
	n, err := strconv.Atoi(count)
	if err != nil {
		return err
	}
	if path := os.Getenv(envProfile); path != "" {
		f, err := os.Create(path + "." + count)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	url := "ws" + strings.TrimPrefix(os.Getenv(envURL), "http") + "/query"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan string, 1024)
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	errs := make(chan error, n)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := benchSubscribe(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	for _, c := range conns {
		go func() {
			for {
				var m benchMessage
				if err := wsjson.Read(ctx, c, &m); err != nil {
					return
				}
				switch m.Type {
				case "ping":
					_ = wsjson.Write(ctx, c, map[string]string{"type": "pong"})
				case "next":
					if r := m.Payload; r.Data != nil {
						got <- r.Data.AuditEventAdded.Node.ID
					}
				}
			}
		}()
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	seen := map[string]int{}
	ready := false
	for {
		select {
		case <-ctx.Done():
			for _, c := range conns {
				_ = c.CloseNow()
			}
			return nil
		case id := <-got:
			if seen[id]++; seen[id] < n {
				continue
			}
			delete(seen, id)
			if !ready {
				ready = true
				fmt.Println("ready")
			} else {
				fmt.Println("all " + id)
			}
		}
	}
}

// benchMessage is a message as the clients read it: decoded in one pass,
// the payload with it. (The clients share the CPUs with the server: a
// second pass over each payload would count in fan-out as if the server's.)
type benchMessage struct {
	Type    string `json:"type"`
	Payload result `json:"payload"`
}

// benchSubscribe opens one subscription that resumes after envAfter.
func benchSubscribe(ctx context.Context, url string) (*websocket.Conn, error) {
	return benchSubscribeWith(ctx, url, os.Getenv(envToken), os.Getenv(envAfter), subscription)
}

// benchSubscribeWith opens one subscription of query that resumes after
// the cursor after.
func benchSubscribeWith(ctx context.Context, url, token, after, query string) (*websocket.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{Subprotocols: []string{transportWS}})
	if err != nil {
		return nil, err
	}
	if err := wsjson.Write(dctx, c, map[string]any{"type": "connection_init",
		"payload": map[string]string{"Authorization": "Bearer " + token}}); err != nil {
		return nil, err
	}
	var ack message
	if err := wsjson.Read(dctx, c, &ack); err != nil || ack.Type != "connection_ack" {
		return nil, fmt.Errorf("connection_init: %v %+v", err, ack)
	}
	err = wsjson.Write(dctx, c, map[string]any{"type": "subscribe", "id": "1", "payload": map[string]any{
		"query": query, "variables": map[string]string{"after": after}}})
	return c, err
}
