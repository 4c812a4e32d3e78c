package feed

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twofactor/service/internal/audit"
)

// errQuit stops a catch-up whose stream has already ended.
var errQuit = errors.New("stream ended")

// stream is one subscriber. While live, the pump hands it events; while
// catching up, its own goroutine reads them (window, then table). Only
// one of the two moves pos at a time; the hand-over is under company.mu.
type stream[T any] struct {
	h       *Hub
	c       *company
	ctx     context.Context
	filter  audit.Filter
	expires time.Time
	convert func(audit.Event) T
	key     uintptr
	end     func(error)
	out     chan T
	quit    chan struct{} // closed when the stream ends

	pos int64 // last row handed on or skipped

	mu       sync.Mutex
	done     bool
	catching bool // a catch-up goroutine owns pos and sends on out
	reason   error
	stopCtx  func() bool
	timer    *time.Timer
}

// start begins live delivery, or a replay first when after is behind.
func (s *stream[T]) start(after int64) {
	c := s.c
	c.mu.Lock()
	ended := c.ended
	s.pos = max(after, c.last)
	replay := after > 0 && after < c.last
	if replay {
		s.pos, s.catching = after, true
	} else if ended == nil {
		c.live[s] = struct{}{}
	}
	c.mu.Unlock()
	stopCtx := context.AfterFunc(s.ctx, func() { s.finish(nil) })
	var timer *time.Timer
	if !s.expires.IsZero() {
		timer = time.AfterFunc(time.Until(s.expires), func() { s.finish(ErrExpired) })
	}
	s.mu.Lock()
	s.stopCtx, s.timer = stopCtx, timer
	if s.done {
		stopCtx()
		if timer != nil {
			timer.Stop()
		}
	}
	s.mu.Unlock()
	if ended != nil {
		s.finish(ended)
	}
	if replay {
		go s.catchUp()
	}
	// Read the table now: rows whose notice was lost are past last (a
	// client that resumes gets what pub/sub lost).
	c.poke()
}

// offer is the pump's hand-over; company.mu is held.
func (s *stream[T]) offer(e *entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.done:
		return false
	case e.ID <= s.pos:
		return true
	case !s.filter.Match(e.Event):
		s.pos = e.ID
		return true
	case s.expired():
		go s.finish(ErrExpired) // finish takes company.mu
		return false
	}
	select {
	case s.out <- s.conv(e):
		s.pos = e.ID
		return true
	default:
		// Falls behind: it reads on by itself, from pos, and rejoins.
		s.catching = true
		go s.catchUp()
		return false
	}
}

// A select picks at random among ready cases: look at the expiry before
// sending, or an expired stream could keep sending.
func (s *stream[T]) expired() bool {
	return !s.expires.IsZero() && !time.Now().Before(s.expires)
}

// conv converts e once for every subscriber that uses the same convert.
func (s *stream[T]) conv(e *entry) T {
	if p := e.conv.Load(); p != nil && p.key == s.key {
		return p.v.(T)
	}
	v := s.convert(e.Event)
	e.conv.CompareAndSwap(nil, &converted{key: s.key, v: v})
	return v
}

// finish ends the stream once: err (nil when ctx ended) goes to end, and
// out closes, unless a catch-up goroutine sends on it: it closes it then.
func (s *stream[T]) finish(err error) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return
	}
	s.done, s.reason = true, err
	close(s.quit)
	if !s.catching {
		s.closeOutLocked()
	}
	stopCtx, timer := s.stopCtx, s.timer
	s.mu.Unlock()
	if stopCtx != nil {
		stopCtx()
	}
	if timer != nil {
		timer.Stop()
	}
	s.c.drop(s)
	s.h.leave(s.c)
}

func (s *stream[T]) closeOutLocked() {
	if s.reason != nil && s.ctx.Err() == nil {
		s.end(s.reason)
	}
	close(s.out)
}

// catchUp reads what the stream missed, from the window while it reaches
// back far enough and from the table before that, then rejoins the live
// set: no gap, no duplicate, and no limit on how far behind it may be.
func (s *stream[T]) catchUp() {
	defer func() {
		s.mu.Lock()
		if s.done && s.catching {
			s.catching = false
			s.closeOutLocked()
		}
		s.mu.Unlock()
	}()
	for {
		es, until := s.c.read(s.pos, batch)
		var err error
		switch {
		case until > 0:
			err = s.fromTable(until)
		case len(es) > 0:
			for _, e := range es {
				if err = s.deliver(e.ID, e.Event, func() T { return s.conv(e) }); err != nil {
					break
				}
			}
		default:
			var joined bool
			if joined, err = s.rejoin(); joined {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, errQuit) {
				s.finish(err)
			}
			return
		}
	}
}

// fromTable reads rows in (pos, until] from the database.
func (s *stream[T]) fromTable(until int64) error {
	events, err := s.h.src.Since(s.ctx, s.c.name, s.pos, until, s.filter, batch)
	if err != nil {
		if s.ctx.Err() != nil {
			return errQuit
		}
		return fmt.Errorf("replay audit feed: %w", err)
	}
	for _, e := range events {
		if err := s.deliver(e.ID, e, func() T { return s.convert(e) }); err != nil {
			return err
		}
	}
	if len(events) < batch {
		s.pos = until
	}
	return nil
}

// deliver sends one row, waiting for the subscriber to take it.
func (s *stream[T]) deliver(id int64, e audit.Event, v func() T) error {
	if id <= s.pos {
		return nil
	}
	if !s.filter.Match(e) {
		s.pos = id
		return nil
	}
	if s.expired() {
		return ErrExpired
	}
	select {
	case s.out <- v():
		s.pos = id
		return nil
	case <-s.quit:
		return errQuit
	case <-s.ctx.Done():
		return errQuit
	case <-s.h.ctx.Done():
		return ErrShutdown
	}
}

// rejoin makes the stream live again once nothing is past pos; false
// means read on. It is done (true) once the stream has ended, and fails
// once the hub has closed.
func (s *stream[T]) rejoin() (bool, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.done:
		return true, nil
	case s.pos < c.last:
		return false, nil
	case c.ended != nil:
		return false, c.ended
	}
	s.catching = false
	c.live[s] = struct{}{}
	return true, nil
}
