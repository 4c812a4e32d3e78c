package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Redis is a Redis client plus whatever must be shut down with it. The
// client is a single server, a Sentinel-managed failover client or a
// Cluster client, behind one interface.
type Redis struct {
	redis.UniversalClient
	embedded *miniredis.Miniredis
}

// Close closes the client and stops the in-process server, if any.
func (r *Redis) Close() error {
	err := r.UniversalClient.Close()
	if r.embedded != nil {
		r.embedded.Close()
	}
	return err
}

// Ready pings the server, or every master of a Cluster: a Cluster with
// one master away cannot serve the users whose keys live there.
func (r *Redis) Ready(ctx context.Context) error {
	if cc, ok := r.UniversalClient.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			if err := c.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis master %s: %w", c.Options().Addr, err)
			}
			return nil
		})
	}
	return r.Ping(ctx).Err()
}

// RedisOption adjusts how OpenRedis connects.
type RedisOption func(*redisSettings)

type redisSettings struct{ caFile string }

// WithCAFile trusts the PEM certificates in path (REDIS_CA_FILE) for
// rediss:// servers, instead of the system's roots. Empty means the
// system's roots.
func WithCAFile(path string) RedisOption {
	return func(s *redisSettings) { s.caFile = path }
}

// OpenRedis connects to url, or starts an in-process Redis when url is
// empty. The URL forms:
//
//	redis://[user:password@]host:port[/db]          one server
//	rediss://…                                      the same over TLS
//	redis+cluster://host:port?addr=host2:port2…     Cluster (seed nodes)
//	rediss+cluster://…                              Cluster over TLS
//	redis+sentinel://host:26379?master=NAME&addr=…  Sentinel (sentinels)
//	rediss+sentinel://…                             Sentinel over TLS
func OpenRedis(ctx context.Context, url string, opts ...RedisOption) (*Redis, error) {
	if url == "" {
		return startEmbedded()
	}
	var set redisSettings
	for _, o := range opts {
		o(&set)
	}
	var roots *x509.CertPool
	if set.caFile != "" {
		var err error
		if roots, err = loadCA(set.caFile); err != nil {
			return nil, err
		}
	}
	c, err := NewRedisClient(url, roots)
	if err != nil {
		return nil, err
	}
	r := &Redis{UniversalClient: c}
	if err := r.Ready(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("open redis: %w", err)
	}
	return r, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("REDIS_CA_FILE: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("REDIS_CA_FILE %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// NewRedisClient parses a REDIS_URL (see OpenRedis) and returns a client
// for it without connecting. roots, when set, are the CAs trusted over
// TLS. Errors name REDIS_URL and never repeat the password.
func NewRedisClient(raw string, roots *x509.CertPool) (redis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	base, topology, _ := strings.Cut(u.Scheme, "+")
	if base != "redis" && base != "rediss" && !(base == "unix" && topology == "") {
		return nil, badScheme(u.Scheme)
	}
	tlsOn := base == "rediss"
	if u.Query().Has("skip_verify") {
		return nil, errors.New("REDIS_URL: skip_verify is refused: trust a private CA with REDIS_CA_FILE instead")
	}
	// The library's parsers know only redis:// and rediss://.
	plain := strings.Replace(raw, u.Scheme+"://", base+"://", 1)
	var c redis.UniversalClient
	switch topology {
	case "":
		c, err = singleClient(plain, tlsOn, roots)
	case "cluster":
		c, err = clusterClient(u, plain, tlsOn, roots)
	case "sentinel":
		c, err = sentinelClient(u, tlsOn, roots)
	default:
		return nil, badScheme(u.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return c, nil
}

func badScheme(s string) error {
	return fmt.Errorf("REDIS_URL: unknown scheme %q: want redis, rediss, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel", s)
}

// Codes fail closed when Redis is away; fail fast too, rather than hold
// requests through go-redis's generous default retries. A URL that sets
// these keeps its values.
func fastFailure(q url.Values, dial *time.Duration, retries *int) {
	if !q.Has("dial_timeout") {
		*dial = time.Second
	}
	if !q.Has("max_retries") {
		*retries = 1
	}
}

func tlsConfig(on bool, host string, roots *x509.CertPool) *tls.Config {
	if !on {
		return nil
	}
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, RootCAs: roots}
}

func singleClient(plain string, tlsOn bool, roots *x509.CertPool) (redis.UniversalClient, error) {
	o, err := redis.ParseURL(plain)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(plain)
	fastFailure(u.Query(), &o.DialTimeout, &o.MaxRetries)
	if tlsOn {
		o.TLSConfig = tlsConfig(true, u.Hostname(), roots)
	}
	return redis.NewClient(o), nil
}

func clusterClient(u *url.URL, plain string, tlsOn bool, roots *x509.CertPool) (redis.UniversalClient, error) {
	// A Cluster has one database; a path would be silently ignored.
	if p := strings.Trim(u.Path, "/"); p != "" && p != "0" {
		return nil, fmt.Errorf("a Cluster has only database 0, not %q", p)
	}
	o, err := redis.ParseClusterURL(plain)
	if err != nil {
		return nil, err
	}
	if err := checkAddrs(o.Addrs); err != nil {
		return nil, err
	}
	fastFailure(u.Query(), &o.DialTimeout, &o.MaxRetries)
	o.TLSConfig = tlsConfig(tlsOn, u.Hostname(), roots)
	c := redis.NewClusterClient(o)
	c.AddHook(reloadOnError{c})
	return c, nil
}

// reloadOnError asks a Cluster client to reload its slot map after a
// command fails for any reason but a missing key. go-redis reloads it on
// MOVED, but a master that died leaves the map pointing at it until the
// next periodic reload (10 s); meanwhile every request for its users
// fails. The reload is asynchronous and coalesced, so a burst of failures
// costs one CLUSTER SLOTS.
type reloadOnError struct{ c *redis.ClusterClient }

func (h reloadOnError) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadOnError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.after(ctx, err)
		return err
	}
}

func (h reloadOnError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.after(ctx, err)
		return err
	}
}

func (h reloadOnError) after(ctx context.Context, err error) {
	if err != nil && !errors.Is(err, redis.Nil) {
		h.c.ReloadState(ctx)
	}
}

// sentinelClient reads redis+sentinel://[user:password@]host:port[/db]
// ?master=NAME[&addr=host:port…]: the host and every addr are sentinels.
// The user and password log in to the sentinels and, unless the query
// sets username or password, to the master too.
func sentinelClient(u *url.URL, tlsOn bool, roots *x509.CertPool) (redis.UniversalClient, error) {
	q := u.Query()
	if q.Has("master_name") {
		return nil, errors.New("name the master with master=, not master_name=")
	}
	if q.Get("master") == "" {
		return nil, errors.New("a Sentinel URL needs ?master=NAME, the name the sentinels know the master by")
	}
	q.Set("master_name", q.Get("master"))
	q.Del("master")
	v := *u
	v.Scheme, v.RawQuery = "redis", q.Encode()
	o, err := redis.ParseFailoverURL(v.String())
	if err != nil {
		return nil, err
	}
	if err := checkAddrs(o.SentinelAddrs); err != nil {
		return nil, err
	}
	if o.Username == "" && o.Password == "" {
		o.Username, o.Password = o.SentinelUsername, o.SentinelPassword
	}
	fastFailure(q, &o.DialTimeout, &o.MaxRetries)
	o.TLSConfig = tlsConfig(tlsOn, "", roots)
	return redis.NewFailoverClient(o), nil
}

// checkAddrs rejects a seed without a host or port, which the parsers
// would otherwise fill in as localhost:6379.
func checkAddrs(addrs []string) error {
	for _, a := range addrs {
		h, p, err := net.SplitHostPort(a)
		if err != nil || h == "" || p == "" {
			return fmt.Errorf("bad address %q: want host:port", a)
		}
	}
	return nil
}

// startEmbedded runs miniredis inside this process, reached through
// in-memory pipes: it listens on no port, so no other process can reach
// it at all (over TCP, miniredis sizes a buffer from a client's declared
// length before it checks the password, so one local process could make
// the service run out of memory). The random password stays as a second
// lock.
func startEmbedded() (*Redis, error) {
	pw := make([]byte, 32)
	if _, err := rand.Read(pw); err != nil {
		return nil, fmt.Errorf("start in-process redis: %w", err)
	}
	password := hex.EncodeToString(pw)
	mr := miniredis.NewMiniRedis()
	mr.RequireAuth(password)
	c := redis.NewClient(&redis.Options{
		Addr:     "in-process", // a name for logs: Dialer never dials it
		Password: password,
		Dialer:   func(context.Context, string, string) (net.Conn, error) { return mr.Dial() },
	})
	return &Redis{UniversalClient: c, embedded: mr}, nil
}

// ScanAll lists the keys matching pattern on every master: on a Cluster,
// SCAN walks one node only. For tools and tests; it is O(keys).
func (r *Redis) ScanAll(ctx context.Context, pattern string) ([]string, error) {
	var (
		mu  sync.Mutex
		out []string
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		iter := c.Scan(ctx, 0, pattern, 500).Iterator()
		for iter.Next(ctx) {
			mu.Lock()
			out = append(out, iter.Val())
			mu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := r.UniversalClient.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, r.UniversalClient)
	}
	if err != nil {
		return nil, fmt.Errorf("scan redis: %w", err)
	}
	return out, nil
}
