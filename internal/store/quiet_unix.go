//go:build linux || darwin || freebsd || netbsd || openbsd

package store

import (
	"errors"
	"net"
	"syscall"
)

// quiet reports whether an idle connection has nothing unread, not even
// the end of the stream: a one-byte MSG_PEEK that would block. Anything
// else (bytes, a close, an error, a connection that is not a socket)
// reports false.
func quiet(c net.Conn) bool {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = tc.NetConn() // TLS: the socket below
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	// Control, not Read: a pooled pgx connection may still have a read
	// outstanding (its background reader's), which holds the socket's
	// read lock until data comes; Read would wait for that. A peek
	// consumes nothing, so it may run beside that read; what the read
	// takes first is missed, which is no worse than not looking.
	wouldBlock := false
	err = raw.Control(func(fd uintptr) {
		var b [1]byte
		_, _, perr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		wouldBlock = errors.Is(perr, syscall.EAGAIN) || errors.Is(perr, syscall.EWOULDBLOCK)
	})
	return err == nil && wouldBlock
}
