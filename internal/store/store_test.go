package store_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/store"
)

// TestEmbeddedRedisIsOpen is issue 8, finding 5: the in-process Redis
// listened on loopback without a password, so any local process could
// read and delete locks; a red-team pass then found that even with a
// password, 19 bytes to that port made the service run out of memory.
// Now it listens on no port at all (the process opens no socket for it),
// and a client without its per-process random password still gets nothing.
func TestEmbeddedRedisIsOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	before := socketCount(t)
	rdb, err := store.OpenRedis(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Set(ctx, "2fa:lock", "1", time.Minute).Err(); err != nil {
		t.Fatalf("the service's own client: %v", err)
	}
	if after := socketCount(t); after != before {
		t.Errorf("opening the embedded Redis opened %d sockets, want none", after-before)
	}
	opts := rdb.UniversalClient.(*redis.Client).Options()
	if len(opts.Password) < 32 {
		t.Fatalf("embedded Redis password %d characters, want a random one of at least 32", len(opts.Password))
	}
	other, err := store.OpenRedis(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.UniversalClient.(*redis.Client).Options().Password == opts.Password {
		t.Error("two embedded Redis servers share a password: it is not random")
	}
	for name, password := range map[string]string{
		"no password":                       "",
		"wrong password":                    "not-the-password",
		"another embedded Redis's password": other.UniversalClient.(*redis.Client).Options().Password,
	} {
		t.Run(name, func(t *testing.T) {
			// Even a client handed the in-process connection needs the password.
			intruder := redis.NewClient(&redis.Options{Addr: opts.Addr, Dialer: opts.Dialer, Password: password, MaxRetries: -1})
			defer intruder.Close()
			err := intruder.Get(ctx, "2fa:lock").Err()
			if err == nil {
				t.Fatal("a client without the password read a key")
			}
			if password == "" && !strings.HasPrefix(err.Error(), "NOAUTH") {
				t.Errorf("GET without a password: %v, want NOAUTH", err)
			}
			if err := intruder.Del(ctx, "2fa:lock").Err(); err == nil {
				t.Error("a client without the password deleted a key")
			}
		})
	}
	if n, err := rdb.Exists(ctx, "2fa:lock").Result(); err != nil || n != 1 {
		t.Errorf("the key after the intruders: exists %d, %v", n, err)
	}
}

// socketCount counts this process's open sockets.
func socketCount(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("list open files: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}
