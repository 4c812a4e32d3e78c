package graph

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"slices"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/auth"
)

// fanout renders each live audit event once per distinct subscription
// rather than once per subscriber. The feed hands every subscriber of a
// company the same *model.AuditEventEdge for one event; subscribers whose
// operations would render it alike (same caller role and company, same
// document, operation and variables below the root field) share the
// bytes. It is both an operation interceptor, which gives each
// subscription a tap the resolver plugs its channel into, and the
// innermost response interceptor, which reads the tap, so every outer
// interceptor (metrics, error cap) still sees each response.
//
// Sharing is sound while nothing under AuditEventEdge depends on the
// caller beyond role and company, nor on the root field's arguments
// (filter, after: they choose events, not how one renders).
type fanout struct {
	mu     sync.RWMutex
	edges  map[*model.AuditEventEdge]map[fanoutKey]*fanoutSlot
	recent []*model.AuditEventEdge // ring of cached edges, oldest evicted
	next   int
}

// fanoutKey names what changes how an event renders.
type fanoutKey [sha256.Size]byte

// Bounds on the cache: events kept, and renderings kept per event.
const (
	fanoutEvents   = 256
	fanoutPerEvent = 32
)

// fanoutSlot is one rendering; done closes once data is set, or left nil
// when the rendering could not be shared (it had errors).
type fanoutSlot struct {
	done chan struct{}
	data json.RawMessage
}

// fanoutTap sits between a subscription's feed channel and gqlgen.
type fanoutTap struct {
	key fanoutKey
	in  <-chan *model.AuditEventEdge // from the feed
	out chan *model.AuditEventEdge   // to gqlgen, when it must render
}

type fanoutTapKey struct{}

func newFanout() *fanout {
	return &fanout{edges: map[*model.AuditEventEdge]map[fanoutKey]*fanoutSlot{},
		recent: make([]*model.AuditEventEdge, fanoutEvents)}
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationInterceptor
	graphql.ResponseInterceptor
} = (*fanout)(nil)

func (*fanout) ExtensionName() string                   { return "FanoutCache" }
func (*fanout) Validate(graphql.ExecutableSchema) error { return nil }

func (*fanout) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	c, err := auth.FromContext(ctx)
	if err != nil || oc.Operation == nil || oc.Operation.Operation != ast.Subscription {
		return next(ctx)
	}
	key, err := renderKey(c, oc)
	if err != nil {
		return next(ctx)
	}
	return next(context.WithValue(ctx, fanoutTapKey{}, &fanoutTap{key: key}))
}

// tapEdges routes a subscription's events through its tap, when it has one.
func tapEdges(ctx context.Context, in <-chan *model.AuditEventEdge) <-chan *model.AuditEventEdge {
	t, ok := ctx.Value(fanoutTapKey{}).(*fanoutTap)
	if !ok || t.in != nil {
		return in
	}
	t.in, t.out = in, make(chan *model.AuditEventEdge, 1)
	return t.out
}

// InterceptResponse takes the next event off the tap and answers with its
// shared rendering, or lets gqlgen render it (and shares that). The
// transport calls it from one goroutine per subscription.
func (f *fanout) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	t, ok := ctx.Value(fanoutTapKey{}).(*fanoutTap)
	if !ok || t.in == nil {
		return next(ctx)
	}
	var e *model.AuditEventEdge
	select {
	case v, open := <-t.in:
		if !open {
			t.in = nil
			close(t.out) // gqlgen sees the end of the stream
			return next(ctx)
		}
		e = v
	case <-ctx.Done():
		return next(ctx)
	}
	slot, owner := f.slot(e, t.key)
	if slot != nil && !owner {
		select {
		case <-slot.done:
			if slot.data != nil {
				return &graphql.Response{Data: slot.data}
			}
		case <-ctx.Done():
		}
	}
	return f.render(ctx, t, e, next, owner, slot)
}

// render has gqlgen render e; the owner of slot shares the result.
func (f *fanout) render(ctx context.Context, t *fanoutTap, e *model.AuditEventEdge,
	next graphql.ResponseHandler, owner bool, slot *fanoutSlot) (resp *graphql.Response) {
	if owner {
		defer func() {
			if resp != nil && shareable(resp) {
				slot.data = slices.Clone(resp.Data) // gqlgen reuses its buffer
			}
			close(slot.done)
		}()
	}
	t.out <- e
	return next(ctx)
}

// shareable: a plain rendering, without errors or extensions that belong
// to this one response.
func shareable(r *graphql.Response) bool {
	return len(r.Errors) == 0 && len(r.Extensions) == 0 && r.Label == "" && r.Path == nil && r.HasNext == nil
}

// slot finds e's rendering under key, or makes one that the caller owns
// (renders and fills). nil: the cache is full for e; render unshared.
func (f *fanout) slot(e *model.AuditEventEdge, key fanoutKey) (slot *fanoutSlot, owner bool) {
	// A thousand subscribers look up one event at once; all but one find it.
	f.mu.RLock()
	s, ok := f.edges[e][key]
	f.mu.RUnlock()
	if ok {
		return s, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	slots, ok := f.edges[e]
	if !ok {
		if old := f.recent[f.next]; old != nil {
			delete(f.edges, old)
		}
		f.recent[f.next] = e // held here, so its address is not reused while cached
		f.next = (f.next + 1) % len(f.recent)
		slots = map[fanoutKey]*fanoutSlot{}
		f.edges[e] = slots
	}
	if s, ok := slots[key]; ok {
		return s, false
	}
	if len(slots) >= fanoutPerEvent {
		return nil, false
	}
	s = &fanoutSlot{done: make(chan struct{})}
	slots[key] = s
	return s, true
}

// renderKey hashes what the rendering of an event depends on: the
// caller's company and role, the document, the operation and the values
// of the variables used below the root field.
func renderKey(c auth.Caller, oc *graphql.OperationContext) (fanoutKey, error) {
	used := map[string]any{}
	for name := range selectionVars(oc.Operation.SelectionSet, true, map[string]bool{}) {
		used[name] = oc.Variables[name]
	}
	vars, err := json.Marshal(used) // map keys come out sorted
	if err != nil {
		return fanoutKey{}, err
	}
	h := sha256.New()
	for _, part := range []string{c.Company, string(c.Role), oc.RawQuery, oc.OperationName, string(vars)} {
		_ = binary.Write(h, binary.BigEndian, uint64(len(part)))
		h.Write([]byte(part))
	}
	var k fanoutKey
	h.Sum(k[:0])
	return k, nil
}

// selectionVars names the variables set uses, leaving out the arguments
// of root fields (root): those choose which events come, not how one
// renders. Fragments are followed once each (seen).
func selectionVars(set ast.SelectionSet, root bool, seen map[string]bool) map[string]bool {
	vars := map[string]bool{}
	add := func(m map[string]bool) {
		for k := range m {
			vars[k] = true
		}
	}
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			add(directiveVars(s.Directives))
			if !root {
				for _, a := range s.Arguments {
					valueVars(a.Value, vars)
				}
			}
			add(selectionVars(s.SelectionSet, false, seen))
		case *ast.InlineFragment:
			add(directiveVars(s.Directives))
			add(selectionVars(s.SelectionSet, root, seen))
		case *ast.FragmentSpread:
			add(directiveVars(s.Directives))
			if s.Definition != nil && !seen[s.Name] {
				seen[s.Name] = true
				add(directiveVars(s.Definition.Directives))
				add(selectionVars(s.Definition.SelectionSet, root, seen))
			}
		}
	}
	return vars
}

func directiveVars(ds ast.DirectiveList) map[string]bool {
	vars := map[string]bool{}
	for _, d := range ds {
		for _, a := range d.Arguments {
			valueVars(a.Value, vars)
		}
	}
	return vars
}

func valueVars(v *ast.Value, into map[string]bool) {
	if v == nil {
		return
	}
	if v.Kind == ast.Variable {
		into[v.Raw] = true
	}
	for _, c := range v.Children {
		valueVars(c.Value, into)
	}
}
