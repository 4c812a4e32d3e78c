package store_test

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
)

// want is what a REDIS_URL must turn into, whatever the client type.
type want struct {
	kind     string // single, cluster, sentinel
	addrs    []string
	master   string
	user     string
	password string
	db       int
	tls      bool
	dial     time.Duration
	retries  int
}

type got struct {
	want
	tlsConf *tls.Config
}

func describe(t *testing.T, c redis.UniversalClient) got {
	t.Helper()
	switch c := c.(type) {
	case *redis.ClusterClient:
		o := c.Options()
		return got{want{kind: "cluster", addrs: o.Addrs, user: o.Username, password: o.Password,
			tls: o.TLSConfig != nil, dial: o.DialTimeout, retries: o.MaxRetries}, o.TLSConfig}
	case *redis.Client:
		o := c.Options()
		return got{want{kind: "single", addrs: []string{o.Addr}, user: o.Username, password: o.Password,
			db: o.DB, tls: o.TLSConfig != nil, dial: o.DialTimeout, retries: o.MaxRetries}, o.TLSConfig}
	}
	t.Fatalf("client type %T", c)
	return got{}
}

func TestRedisURLForms(t *testing.T) {
	cases := []struct {
		name, url string
		want      want
	}{
		{"single", "redis://:pw@10.0.0.1:6380/2",
			want{kind: "single", addrs: []string{"10.0.0.1:6380"}, password: "pw", db: 2, dial: time.Second, retries: 1}},
		{"single default port", "redis://cache",
			want{kind: "single", addrs: []string{"cache:6379"}, dial: time.Second, retries: 1}},
		{"single TLS", "rediss://app:pw@cache.example.com:6380",
			want{kind: "single", addrs: []string{"cache.example.com:6380"}, user: "app", password: "pw", tls: true, dial: time.Second, retries: 1}},
		{"single own timeouts", "redis://cache:6379?dial_timeout=3s&max_retries=4",
			want{kind: "single", addrs: []string{"cache:6379"}, dial: 3 * time.Second, retries: 4}},
		{"cluster", "redis+cluster://:pw@10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000",
			want{kind: "cluster", addrs: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}, password: "pw", dial: time.Second, retries: 1}},
		{"cluster TLS", "rediss+cluster://app:pw@cfg.example.com:6379",
			want{kind: "cluster", addrs: []string{"cfg.example.com:6379"}, user: "app", password: "pw", tls: true, dial: time.Second, retries: 1}},
		{"cluster db 0", "redis+cluster://10.0.0.1:7000/0",
			want{kind: "cluster", addrs: []string{"10.0.0.1:7000"}, dial: time.Second, retries: 1}},
		{"sentinel", "redis+sentinel://:pw@10.0.0.1:26379/1?master=main&addr=10.0.0.2:26379",
			want{kind: "single", addrs: []string{"FailoverClient"}, password: "pw", db: 1, dial: time.Second, retries: 1}},
		{"sentinel TLS, master password", "rediss+sentinel://s1:26379?master=main&password=mpw",
			want{kind: "single", addrs: []string{"FailoverClient"}, password: "mpw", tls: true, dial: time.Second, retries: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := store.NewRedisClient(tc.url, nil)
			if err != nil {
				t.Fatalf("%s: %v", tc.url, err)
			}
			defer c.Close()
			g := describe(t, c)
			if strings.Join(g.addrs, ",") != strings.Join(tc.want.addrs, ",") || g.kind != tc.want.kind ||
				g.user != tc.want.user || g.password != tc.want.password || g.db != tc.want.db ||
				g.tls != tc.want.tls || g.dial != tc.want.dial || g.retries != tc.want.retries {
				t.Errorf("%s:\n got %+v\nwant %+v", tc.url, g.want, tc.want)
			}
			if g.tlsConf != nil && g.tlsConf.MinVersion < tls.VersionTLS12 {
				t.Errorf("%s: TLS minimum version %x, want 1.2 or later", tc.url, g.tlsConf.MinVersion)
			}
		})
	}
}

func TestBadRedisURLs(t *testing.T) {
	const secret = "s3cr3t-pw"
	cases := []struct{ name, url, says string }{
		{"unknown scheme", "http://:" + secret + "@cache:6379", "unknown scheme"},
		{"unknown topology", "redis+ring://:" + secret + "@cache:6379", "unknown scheme"},
		{"not a URL", "redis://:" + secret + "@cache:6379/%zz", "invalid URL escape"},
		{"bad port", "redis://:" + secret + "@cache:port", "port"},
		{"unknown option", "redis://:" + secret + "@cache:6379?pool=3", "unexpected option"},
		{"skip_verify", "rediss://:" + secret + "@cache:6379?skip_verify=true", "REDIS_CA_FILE"},
		{"bad db", "redis://:" + secret + "@cache:6379/x", "database"},
		{"cluster with a db", "redis+cluster://:" + secret + "@cache:7000/3", "database 0"},
		{"cluster bad seed", "redis+cluster://:" + secret + "@cache:7000?addr=nohost", "addr"},
		{"cluster unknown option", "redis+cluster://:" + secret + "@cache:7000?master=x", "unexpected option"},
		{"sentinel without master", "redis+sentinel://:" + secret + "@s1:26379", "master=NAME"},
		{"sentinel master_name", "redis+sentinel://:" + secret + "@s1:26379?master_name=m", "master="},
		{"sentinel bad seed", "redis+sentinel://:" + secret + "@s1:26379?master=m&addr=:1", "addr"},
		{"unix cluster", "unix+cluster:///tmp/r.sock", "unknown scheme"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := store.NewRedisClient(tc.url, nil)
			if err == nil {
				c.Close()
				t.Fatalf("%s: accepted", tc.name)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "REDIS_URL: ") || !strings.Contains(msg, tc.says) {
				t.Errorf("error %q: want it to start with REDIS_URL and say %q", msg, tc.says)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error %q repeats the password", msg)
			}
		})
	}
}

func TestRedisCAFile(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{"missing": filepath.Join(dir, "none.pem"), "not PEM": bad} {
		t.Run(name, func(t *testing.T) {
			_, err := store.OpenRedis(t.Context(), "rediss://cache:6379", store.WithCAFile(path))
			if err == nil || !strings.Contains(err.Error(), "REDIS_CA_FILE") {
				t.Errorf("CA file %s: %v, want an error naming REDIS_CA_FILE", name, err)
			}
		})
	}
}

// TestScanAll finds keys on every node; on a Cluster (TEST_REDIS_URL)
// the keys spread over the masters by their hash tags.
func TestScanAll(t *testing.T) {
	r := testenv.Open(t).Redis
	prefix := "scanall:" + testenv.Company(t)
	want := map[string]bool{}
	for i := range 50 {
		k := fmt.Sprintf("%s:{%d}", prefix, i)
		want[k] = true
		if err := r.Set(t.Context(), k, "1", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	got, err := r.ScanAll(t.Context(), prefix+":*")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ScanAll found %d keys, want %d", len(got), len(want))
	}
	for _, k := range got {
		if !want[k] {
			t.Errorf("ScanAll found %q, not written", k)
		}
	}
}
