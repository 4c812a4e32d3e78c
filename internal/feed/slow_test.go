package feed_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/feed"
	"github.com/twofactor/service/internal/testenv"
)

// tinyReceiveBuffer is an HTTP client whose connections advertise a
// receive window of a few KiB, so a peer that stops reading pushes back on
// the server's writes almost at once.
func tinyReceiveBuffer() *http.Client {
	d := &net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		}); cerr != nil {
			return cerr
		}
		return err
	}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// socketBuffers is how much the kernel may hold for a peer that does not
// read: the largest send buffer TCP grows to, twice over for good measure.
func socketBuffers() int {
	const fallback = 8 << 20
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_wmem")
	if err != nil {
		return fallback
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return fallback
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		return fallback
	}
	return 2 * n
}

// A subscriber that stops reading for a while falls behind, well past
// its buffer, and then catches up with every event once it reads again;
// only one whose socket write times out is dropped. Either way the others
// receive every event, undelayed, and a dropped one can resume from its
// last cursor.
func TestSlowSubscriber(t *testing.T) {
	t.Parallel()
	const (
		buffer  = 8
		round   = 4 // events per write; the fast readers keep up round by round
		padding = 64 << 10
	)
	for _, tc := range []struct {
		name         string
		writeTimeout time.Duration
		dropped      bool
	}{
		{"catches up", time.Minute, false},
		{"write times out", 200 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := apptest.Start(t, func(o *app.Options) {
				o.Feed = feed.Options{Buffer: buffer, Poll: time.Hour}
				o.Websocket.WriteTimeout = tc.writeTimeout
			})
			co := testenv.Company(t)
			slow := connect(t, s, admin(co), wsOptions{client: tinyReceiveBuffer()})
			cursor := slow.primed(s, co, "slow")
			fast := []*wsClient{connect(t, s, admin(co), wsOptions{}), connect(t, s, admin(co), wsOptions{})}
			for i, f := range fast {
				f.primed(s, co, "fast"+strconv.Itoa(i))
			}
			// The first also sees the second's priming: line both up.
			barrier := writeRaw(t, s, co, 1, 0, true)[0]
			for i, f := range fast {
				f.until("fast"+strconv.Itoa(i), barrier)
			}

			// Enough to fill every kernel buffer between the server and
			// the slow client, and then its buffer.
			rounds := (socketBuffers()/padding + 2*buffer) / round
			var written []string
			for range rounds {
				batch := writeRaw(t, s, co, round, padding, true)
				written = append(written, batch...)
				for i, f := range fast {
					if got := ids(f.edges("fast"+strconv.Itoa(i), round)); !slices.Equal(got, batch) {
						t.Fatalf("fast subscriber %d got %v, want %v", i, got, batch)
					}
				}
			}
			// The two fast ones also had the other fast one's priming.
			all, _ := logIDs(t, s, co, nil)
			want := after(all, idOf(t, s, co, cursor))

			if !tc.dropped {
				if got := ids(slow.edges("slow", len(want))); !slices.Equal(got, want) {
					t.Fatalf("slow subscriber got %d events, want all %d in order", len(got), len(want))
				}
				return
			}
			// Now read what reached the slow one: a prefix of the log, in
			// order, and then the end.
			var got []string
			for {
				m, err := slow.read()
				if err != nil {
					if status := websocket.CloseStatus(err); status != -1 {
						t.Fatalf("connection closed with %d, want it dropped", status)
					}
					break
				}
				var r result
				if m.Type != "next" || json.Unmarshal(m.Payload, &r) != nil || r.Data == nil {
					t.Fatalf("slow subscriber got %s %s, want events", m.Type, m.Payload)
				}
				got = append(got, r.Data.AuditEventAdded.Node.ID)
			}
			if len(got) >= len(want) || !slices.Equal(got, want[:len(got)]) {
				t.Fatalf("slow subscriber got %d of %d events (%v), want a strict prefix", len(got), len(want), got)
			}
			t.Logf("slow subscriber got %d of %d events before it was cut off", len(got), len(want))

			// It resumes from its last cursor and misses nothing.
			slow = connect(t, s, admin(co), wsOptions{})
			resume := cursor
			if len(got) > 0 {
				resume = cursorOf(t, s, co, got[len(got)-1])
			}
			slow.subscribe("again", nil, resume)
			if rest := ids(slow.edges("again", len(want)-len(got))); !slices.Equal(rest, want[len(got):]) {
				t.Fatalf("resumed slow subscriber got %v, want %v", rest, want[len(got):])
			}
		})
	}
}
