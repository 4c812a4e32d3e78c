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
	wouldBlock := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, perr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		wouldBlock = errors.Is(perr, syscall.EAGAIN) || errors.Is(perr, syscall.EWOULDBLOCK)
		return true // never wait for the socket
	})
	return err == nil && wouldBlock
}
