package outbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
)

var (
	//go:embed ack.lua
	ackLua    string
	ackScript = redis.NewScript(ackLua)
)

// batch is one read of some outboxes.
type batch struct {
	events []*audit.Event
	acks   map[string][]string // key: the ids of the entries read and decoded
	full   []string            // keys that may hold more than was read
}

// move moves up to Batch entries of each key: read them (one pipelined
// round trip), store them (one transaction per company), then delete
// them. A failure before the delete leaves them in place; moving them
// again stores nothing twice. It returns the events stored and the keys
// that have more to move.
func (m *Mover) move(ctx context.Context, keys []string) (int, []string, error) {
	b, err := m.read(ctx, keys)
	if err != nil || len(b.events) == 0 {
		return 0, nil, err
	}
	n, err := m.sink.AppendOnce(ctx, b.events)
	if err != nil {
		return 0, nil, fmt.Errorf("store outbox events: %w", err)
	}
	if err := m.ack(ctx, b.acks); err != nil {
		return n, nil, err
	}
	return n, b.full, nil
}

// read reads and decodes the entries of keys. An entry that does not
// decode stays in its outbox, logged.
func (m *Mover) read(ctx context.Context, keys []string) (batch, error) {
	pipe := m.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.XRangeN(ctx, k, "-", "+", int64(m.o.Batch))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return batch{}, fmt.Errorf("read outboxes: %w", err)
	}
	b := batch{acks: map[string][]string{}}
	for i, k := range keys {
		msgs := cmds[i].Val()
		for _, msg := range msgs {
			e, err := m.decode(k, msg.Values)
			if err != nil {
				m.logger.Error("outbox entry left in place: cannot read it", "key", k, "entry", msg.ID, "err", err)
				continue
			}
			b.events = append(b.events, e)
			b.acks[k] = append(b.acks[k], msg.ID)
		}
		// Full and progressing: read again. Entries that never decode do
		// not make a key loop.
		if len(msgs) == m.o.Batch && len(b.acks[k]) > 0 {
			b.full = append(b.full, k)
		}
	}
	return b, nil
}

// ack deletes moved entries, one script per key, pipelined. A script that
// Redis lost (a restart, a failover) is loaded again.
func (m *Mover) ack(ctx context.Context, acks map[string][]string) error {
	pipe := m.rdb.Pipeline()
	cmds := make(map[string]*redis.Cmd, len(acks))
	for k, ids := range acks {
		cmds[k] = ackScript.EvalSha(ctx, pipe, []string{k}, toArgs(ids)...)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	for k, cmd := range cmds {
		err := cmd.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = ackScript.Run(ctx, m.rdb, []string{k}, toArgs(acks[k])...).Err()
		}
		if err != nil {
			return fmt.Errorf("delete moved outbox entries: %w", err)
		}
	}
	return nil
}

func toArgs(ids []string) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}
