package graph

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// challengeFields are the fields that spend a code or an attempt.
var challengeFields = map[string]bool{"issueChallenge": true, "verifyChallenge": true}

// oneChallengePerOperation refuses, before anything runs, an operation that
// holds more than one challenge field, so aliases cannot multiply guesses
// inside one request.
type oneChallengePerOperation struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = oneChallengePerOperation{}

func (oneChallengePerOperation) ExtensionName() string                   { return "OneChallengePerOperation" }
func (oneChallengePerOperation) Validate(graphql.ExecutableSchema) error { return nil }

func (oneChallengePerOperation) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	if n := countChallengeFields(oc.Operation.SelectionSet); n > 1 {
		return &gqlerror.Error{
			Message:    fmt.Sprintf("an operation may hold at most one issueChallenge or verifyChallenge field; this one holds %d", n),
			Extensions: map[string]any{"code": "TOO_MANY_CHALLENGE_FIELDS"},
		}
	}
	return nil
}

func countChallengeFields(set ast.SelectionSet) int {
	n := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if challengeFields[s.Name] {
				n++
			}
		case *ast.InlineFragment:
			n += countChallengeFields(s.SelectionSet)
		case *ast.FragmentSpread:
			if s.Definition != nil {
				n += countChallengeFields(s.Definition.SelectionSet)
			}
		}
	}
	return n
}
