package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/store"
)

// TestEmbeddedRedisIsOpen is issue 8, finding 5: the in-process Redis
// listened on loopback without a password, so any local process could
// read and delete locks. Now only the service's own client, which holds a
// per-process random password, gets in. The embedded Redis is the same
// whichever backends the other tests use.
func TestEmbeddedRedisIsOpen(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb, err := store.OpenRedis(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Set(ctx, "2fa:lock", "1", time.Minute).Err(); err != nil {
		t.Fatalf("the service's own client: %v", err)
	}
	opts := rdb.Options()
	if len(opts.Password) < 32 {
		t.Fatalf("embedded Redis password %d characters, want a random one of at least 32", len(opts.Password))
	}
	other, err := store.OpenRedis(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.Options().Password == opts.Password {
		t.Error("two embedded Redis servers share a password: it is not random")
	}

	for name, password := range map[string]string{
		"no password":                       "",
		"wrong password":                    "not-the-password",
		"another embedded Redis's password": other.Options().Password,
	} {
		t.Run(name, func(t *testing.T) {
			intruder := redis.NewClient(&redis.Options{Addr: opts.Addr, Password: password, MaxRetries: -1})
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
