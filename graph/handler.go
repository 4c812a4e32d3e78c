package graph

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/metrics"
)

// Limits bound what one operation may ask for.
type Limits struct {
	MaxComplexity int
	MaxDepth      int
}

// DefaultLimits fit every query the frontends make with room to spare.
var DefaultLimits = Limits{MaxComplexity: 5000, MaxDepth: 12}

// NewHandler builds the GraphQL HTTP handler around r.
func NewHandler(r *Resolver, limits Limits, m *metrics.Metrics, ws WebsocketOptions) http.Handler {
	cfg := Config{Resolvers: r}
	// A connection costs its page size times its nodes, so a deep page of
	// heavy nodes counts for what it is.
	cfg.Complexity.Query.AuditLog = func(child int, first *int, _ *string, last *int, _ *string, _ *model.AuditLogFilter) int {
		return pageCost(child, first, last)
	}
	cfg.Complexity.Query.Users = func(child int, first *int, _ *string, _ *string, _ *model.UsersFilter) int {
		return pageCost(child, first, nil)
	}
	cfg.Complexity.Query.AuditLogIntegrity = func(child int, _, _ *time.Time, _ *model.AuditCategory) int {
		return integrityCost(limits.MaxComplexity, child)
	}

	srv := handler.New(NewExecutableSchema(cfg))
	srv.AddTransport(ws.transport())
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.SSE{}) // before POST: it claims POSTs that accept text/event-stream
	srv.AddTransport(transport.GET{})
	srv.AddTransport(transport.POST{})
	queries := lru.New[*ast.QueryDocument](1000)
	srv.SetQueryCache(queries)
	srv.SetParserTokenLimit(MaxTokens) // documentBudget refuses first, with its own code
	// Suggestions name fields to callers who may not introspect; off for
	// everyone (presentError strips those of the other rules).
	srv.SetDisableSuggestion(true)
	srv.SetErrorPresenter(r.presentError)
	srv.Use(errorCap{max: MaxErrors})
	srv.Use(extension.AutomaticPersistedQuery{Cache: lru.New[string](100)})
	// After APQ, which may fill in the query; before gqlgen's validation.
	srv.Use(documentBudget{cache: queries, maxTokens: MaxTokens, maxSelections: MaxSelections,
		maxObjectFields: MaxObjectFields, maxPairs: MaxFieldPairs, maxNesting: MaxNesting})
	srv.Use(transportFit{})
	srv.Use(introspectionGate{})
	srv.Use(&complexityLimit{max: limits.MaxComplexity})
	srv.Use(depthLimit{max: limits.MaxDepth, introspectionMax: MaxIntrospectionDepth})
	srv.Use(oneChallengePerOperation{})
	srv.AroundOperations(expiredOnWebsocket)
	srv.AroundOperations(subscriptionsPerSocket)
	srv.AroundOperations(streamEnds)
	srv.SetRecoverFunc(func(ctx context.Context, p any) error {
		r.Logger.ErrorContext(ctx, "resolver panicked", "panic", fmt.Sprint(p))
		return &gqlerror.Error{Message: "internal error", Extensions: map[string]any{"code": CodeInternal}}
	})
	// Every INTERNAL error names the request, with or without metrics.
	srv.AroundResponses(func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		resp := next(ctx)
		if resp != nil {
			withRequestID(ctx, resp.Errors)
		}
		return resp
	})
	if m != nil {
		observe(srv, m)
	}
	// Last: the innermost response interceptor, below metrics and the rest.
	srv.Use(newFanout())
	return requestGate{next: srv}
}

// observe counts operations and error codes. Labels name the operation by its top-level schema
// fields (metrics.Operation), never by the client's operationName, which
// could be anything and would make a new series each time.
func observe(srv *handler.Server, m *metrics.Metrics) {
	srv.AroundResponses(func(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
		resp := next(ctx)
		if graphql.HasOperationContext(ctx) {
			// Operation is set only once the document has validated.
			typ, name := metrics.Operation(graphql.GetOperationContext(ctx).Operation)
			m.GraphQLOps.WithLabelValues(typ, name).Inc()
		}
		if resp != nil {
			for _, e := range resp.Errors {
				code, _ := e.Extensions["code"].(string)
				m.GraphQLErrors.WithLabelValues(metrics.Code(code)).Inc()
			}
		}
		return resp
	})
}

func pageCost(child int, first, last *int) int {
	n := 20
	if first != nil {
		n = *first
	} else if last != nil {
		n = *last
	}
	if n < 1 {
		n = 1
	}
	return 1 + n*child
}
