//go:build linux || darwin || freebsd || netbsd || openbsd

package store

import (
	"bytes"
	"net"
	"runtime"
	"testing"
	"time"
)

// pair is a connected loopback TCP pair: the client end and the server's.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = client.Close(); _ = server.Close() })
	return client, server
}

// TestQuiet: an idle connection is quiet; one with a byte unread, or
// closed by the peer, is not; the peek consumes nothing.
func TestQuiet(t *testing.T) {
	c, s := pair(t)
	if !quiet(c) {
		t.Fatal("an idle connection is not quiet")
	}
	if _, err := s.Write([]byte("E")); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); quiet(c) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if quiet(c) {
		t.Fatal("a connection with a byte unread is quiet")
	}
	b := make([]byte, 1)
	if _, err := c.Read(b); err != nil || b[0] != 'E' {
		t.Fatalf("the peek consumed the byte: read %q, %v", b, err)
	}
	_ = s.Close()
	for deadline := time.Now().Add(10 * time.Second); quiet(c) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if quiet(c) {
		t.Fatal("a connection the peer closed is quiet")
	}
}

// TestQuietBesideAPendingRead: the peek returns while another goroutine
// is blocked reading the same connection (a pgx connection's background
// reader can be, while pooled). A peek that took the socket's read lock
// waited for that read, and the database checkout behind it hung.
func TestQuietBesideAPendingRead(t *testing.T) {
	c, s := pair(t)
	go func() { _, _ = c.Read(make([]byte, 1)) }()
	// Until the reader is parked on the socket (it holds the read lock).
	for deadline := time.Now().Add(10 * time.Second); !readParked() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if !readParked() {
		t.Fatal("the reader never blocked")
	}
	done := make(chan bool, 1)
	go func() { done <- quiet(c) }()
	select {
	case q := <-done:
		if !q {
			t.Error("an idle connection with a pending read is not quiet")
		}
	case <-time.After(20 * time.Second): // a bound on a hang, not a timing
		t.Fatal("the peek waited for the pending read")
	}
	_, _ = s.Write([]byte("x")) // lets the reader go
}

// readParked reports whether some goroutine waits in a socket read.
func readParked() bool {
	buf := make([]byte, 1<<20)
	return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("internal/poll.(*pollDesc).waitRead"))
}
