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

// read is one read of some outboxes.
type read struct {
	events  []*audit.Event
	entries map[string][]entryRef // key: the entries read and decoded
	full    map[string]bool       // keys that may hold more than was read
}

// entryRef is one decoded entry: its stream id and its event's company.
type entryRef struct{ id, company string }

// moved is what one move did.
type moved struct {
	stored int
	more   []string // keys that moved wholly and may hold more
	// failed: the companies whose events were not stored, with the keys
	// that still hold them.
	failed map[string]companyFailure
}

type companyFailure struct {
	err  error
	keys []string
}

// move moves up to Batch entries of each key: read them (one pipelined
// round trip), store them (one transaction per company), then delete the
// entries of the companies that were stored. A company that failed keeps
// its entries and does not stop the others'. An error is Redis failing
// (the read or the delete); moving the same entries again stores nothing
// twice.
func (m *Mover) move(ctx context.Context, keys []string) (moved, error) {
	r, err := m.read(ctx, keys)
	if err != nil || len(r.events) == 0 {
		return moved{}, err
	}
	res, storeErr := m.sink.AppendOnce(ctx, r.events)
	out := moved{stored: res.Written(), failed: map[string]companyFailure{}}
	acks := map[string][]string{}
	for k, refs := range r.entries {
		progressed, blocked := false, false
		for _, ref := range refs {
			if _, ok := res.Stored[ref.company]; ok {
				acks[k] = append(acks[k], ref.id)
				progressed = true
				continue
			}
			blocked = true
			f := out.failed[ref.company]
			if len(f.keys) == 0 || f.keys[len(f.keys)-1] != k {
				f.keys = append(f.keys, k)
			}
			f.err = cmpErr(res.Failed[ref.company], storeErr)
			out.failed[ref.company] = f
		}
		// Full and progressing: read again. Entries that never decode, or
		// a company that fails, do not make a key loop.
		if r.full[k] && progressed && !blocked {
			out.more = append(out.more, k)
		}
	}
	m.settle(ctx, res, out.failed)
	if err := m.ack(ctx, acks); err != nil {
		return moved{stored: out.stored, failed: out.failed}, err
	}
	return out, nil
}

// settle records each company's outcome: a failing company's keys wait
// for its backoff; a company stored again is no longer failing.
func (m *Mover) settle(ctx context.Context, res audit.AppendResult, failed map[string]companyFailure) {
	for company := range res.Stored {
		for _, k := range m.fails.ok(ctx, company) {
			m.Kick(k) // its other users' outboxes need not wait for their backoff
		}
	}
	for company, f := range failed {
		m.fails.fail(ctx, company, f.err, f.keys)
	}
}

// cmpErr is the company's own error, else the call's, else a placeholder
// for an appender that stored nothing and said nothing.
func cmpErr(own, call error) error {
	switch {
	case own != nil:
		return own
	case call != nil:
		return call
	}
	return errors.New("not stored")
}

// read reads and decodes the entries of keys. An entry that does not
// decode stays in its outbox, logged.
func (m *Mover) read(ctx context.Context, keys []string) (read, error) {
	pipe := m.rdb.Pipeline()
	cmds := make([]*redis.XMessageSliceCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.XRangeN(ctx, k, "-", "+", int64(m.o.Batch))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return read{}, fmt.Errorf("read outboxes: %w", err)
	}
	r := read{entries: map[string][]entryRef{}, full: map[string]bool{}}
	for i, k := range keys {
		msgs := cmds[i].Val()
		for _, msg := range msgs {
			e, err := m.decode(k, msg.Values)
			if err != nil {
				m.logger.Error("outbox entry left in place: cannot read it", "key", k, "entry", msg.ID, "err", err)
				continue
			}
			r.events = append(r.events, e)
			r.entries[k] = append(r.entries[k], entryRef{id: msg.ID, company: e.Company})
		}
		r.full[k] = len(msgs) == m.o.Batch
	}
	return r, nil
}

// ack deletes moved entries, one script per key, pipelined. A script that
// Redis lost (a restart, a failover) is loaded again.
func (m *Mover) ack(ctx context.Context, acks map[string][]string) error {
	if len(acks) == 0 {
		return nil
	}
	pipe := m.rdb.Pipeline()
	cmds := make(map[string]*redis.Cmd, len(acks))
	for k, ids := range acks {
		cmds[k] = ackScript.EvalSha(ctx, pipe, []string{k}, toArgs(ids)...)
	}
	_, _ = pipe.Exec(ctx) // errors are read per command below
	var first error
	failed := 0
	for k, cmd := range cmds {
		err := cmd.Err()
		if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			err = ackScript.Run(ctx, m.rdb, []string{k}, toArgs(acks[k])...).Err()
		}
		if err != nil {
			if first == nil {
				first = err
			}
			failed++
		}
	}
	if first != nil {
		return fmt.Errorf("delete moved outbox entries of %d of %d keys: %w", failed, len(acks), first)
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
