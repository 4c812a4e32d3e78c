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
	if n := countChallengeFields(oc.Operation.SelectionSet, map[string]int{}); n > 1 {
		return &gqlerror.Error{
			Message:    fmt.Sprintf("an operation may hold at most one issueChallenge or verifyChallenge field; this one holds %d", n),
			Extensions: map[string]any{"code": "TOO_MANY_CHALLENGE_FIELDS"},
		}
	}
	return nil
}

// countChallengeFields counts challenge fields as they would run, through
// aliases and fragments. Each fragment is counted once (memo): walking it
// again at every spread made fragments that spread the next twice cost
// 2^levels.
func countChallengeFields(set ast.SelectionSet, memo map[string]int) int {
	n := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if challengeFields[s.Name] {
				n = saturatingAdd(n, 1)
			}
		case *ast.InlineFragment:
			n = saturatingAdd(n, countChallengeFields(s.SelectionSet, memo))
		case *ast.FragmentSpread:
			if s.Definition == nil {
				break
			}
			c, ok := memo[s.Name]
			if !ok {
				memo[s.Name] = 0 // validation refuses cycles
				c = countChallengeFields(s.Definition.SelectionSet, memo)
				memo[s.Name] = c
			}
			n = saturatingAdd(n, c)
		}
	}
	return n
}
