package graph

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"
)

// Bounds on a document, checked before gqlgen validates it. Parsing and
// validation cost time in proportion to a document's tokens and, for some
// rules, to its selections with fragments expanded, or to their square;
// without these bounds a 1 KB document of fragments that spread each
// other twice held a core for minutes, and 5,000 repeated fields took a
// second.
const (
	// MaxTokens is about ten times graphql-js getIntrospectionQuery() (183
	// tokens), the largest operation any client of ours sends; the
	// admin console's and login screen's are under 100. Parsing is most
	// of what a large document costs, so this bound is what keeps any
	// document within 20 times the cost of { __typename }.
	MaxTokens = 2000
	// MaxSelections bounds the selections of a document with every
	// fragment spread replaced by its fragment, summed over its operations
	// and fragments. getIntrospectionQuery() has 487.
	MaxSelections = 1000
	// MaxObjectFields bounds the fields of one result object, fragments
	// and inline fragments expanded: gqlgen compares each with the others
	// when it runs them. getIntrospectionQuery()'s widest has 9.
	MaxObjectFields = 200
	// MaxFieldPairs bounds the pairs of fields with one response name, and
	// of fragments spread, in one result object, which validation compares
	// with each other (see mergeObjects). getIntrospectionQuery() has none;
	// 20 fragments spread in one object make 190.
	MaxFieldPairs = 1000
	// MaxNesting bounds how deeply selection sets nest in the text,
	// inline fragments included (the depth limit counts fields only).
	// getIntrospectionQuery() nests 10 deep.
	MaxNesting = 32
)

// Codes of the document bounds.
const (
	CodeTooManyTokens          = "TOO_MANY_TOKENS"
	CodeSelectionLimitExceeded = "SELECTION_LIMIT_EXCEEDED"
	CodeDepthLimitExceeded     = "DEPTH_LIMIT_EXCEEDED"
)

// documentBudget refuses, before gqlgen parses and validates a query, a
// document over MaxTokens, or whose selections are over the limits
// above. gqlgen runs operation parameter mutators before its own parse,
// so this is the last point at which such a document costs little. A
// query already in gqlgen's cache passed before and is not looked at
// again; any other is parsed here once more, in time linear in its
// tokens, which MaxTokens bounds.
type documentBudget struct {
	cache           graphql.Cache[*ast.QueryDocument]
	maxTokens       int
	maxSelections   int
	maxObjectFields int
	maxPairs        int
	maxNesting      int
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationParameterMutator
} = documentBudget{}

func (documentBudget) ExtensionName() string                   { return "DocumentBudget" }
func (documentBudget) Validate(graphql.ExecutableSchema) error { return nil }

func (b documentBudget) MutateOperationParameters(ctx context.Context, p *graphql.RawParams) *gqlerror.Error {
	if b.cache != nil {
		if _, ok := b.cache.Get(ctx, p.Query); ok {
			return nil
		}
	}
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: p.Query}, b.maxTokens)
	if err != nil {
		if isTokenLimit(err) {
			return limitError(CodeTooManyTokens, "the query has more than %d tokens", b.maxTokens)
		}
		return nil // a syntax error: gqlgen's parse reports it
	}
	frags := fragmentIndex(doc)
	sel := countSelections(doc, frags, b.maxSelections)
	switch {
	case sel.cycle != "":
		// What validation would say, before mergeObjects, which a
		// cycle would not end.
		err := gqlerror.Errorf("Cannot spread fragment %q within itself.", sel.cycle)
		errcode.Set(err, errcode.ValidationFailed)
		return err
	case sel.deepest > b.maxNesting:
		return limitError(CodeDepthLimitExceeded,
			"the query nests selection sets, inline fragments included, deeper than %d", b.maxNesting)
	case sel.total > b.maxSelections:
		return limitError(CodeSelectionLimitExceeded,
			"the query has more than %d selections with its fragments expanded", b.maxSelections)
	}
	switch obj := mergeObjects(doc, frags, b.maxSelections); {
	case obj.widest > b.maxObjectFields:
		return limitError(CodeSelectionLimitExceeded,
			"the query selects more than %d fields into one object, counting fragments", b.maxObjectFields)
	case obj.pairs > b.maxPairs:
		return limitError(CodeSelectionLimitExceeded,
			"the query repeats fields or fragments in one object more than %d pairs of them allow", b.maxPairs)
	}
	return nil
}

// isTokenLimit tells the parser's token limit from a syntax error.
func isTokenLimit(err error) bool {
	var e *gqlerror.Error
	return errors.As(err, &e) && strings.HasPrefix(e.Message, "exceeded token limit")
}

func limitError(code, format string, limit int) *gqlerror.Error {
	return &gqlerror.Error{Message: fmt.Sprintf(format, limit), Extensions: map[string]any{"code": code}}
}

func fragmentIndex(doc *ast.QueryDocument) map[string]*ast.FragmentDefinition {
	frags := make(map[string]*ast.FragmentDefinition, len(doc.Fragments))
	for _, f := range doc.Fragments {
		if _, dup := frags[f.Name]; !dup {
			frags[f.Name] = f
		}
	}
	return frags
}

// selections is what countSelections found.
type selections struct {
	total   int    // with fragments expanded; limit+1 when over
	deepest int    // nesting of selection sets in the text
	cycle   string // a fragment that spreads itself, if any
}

// selectionCounter counts a document's selections as if each fragment
// spread were replaced by its fragment, computing each fragment once. The
// document is not validated yet: a spread of an unknown fragment counts
// 1, and a cycle of fragments is noted. Counts saturate just past the
// limit, so nothing overflows.
type selectionCounter struct {
	frags map[string]*ast.FragmentDefinition
	sizes map[string]int // expanded selections of each fragment; -1 while counted
	limit int
	selections
}

// countSelections counts all operations and fragments: validation walks
// each fragment on its own as well as where it is spread.
func countSelections(doc *ast.QueryDocument, frags map[string]*ast.FragmentDefinition, limit int) selections {
	c := &selectionCounter{frags: frags, sizes: map[string]int{}, limit: limit}
	for _, op := range doc.Operations {
		c.total = c.add(c.total, c.set(op.SelectionSet, 1))
	}
	for _, f := range doc.Fragments {
		if frags[f.Name] == f {
			c.total = c.add(c.total, c.fragment(f.Name))
		} else { // a second fragment of that name, which validation refuses
			c.total = c.add(c.total, c.set(f.SelectionSet, 1))
		}
	}
	return c.selections
}

func (c *selectionCounter) add(a, b int) int { return min(a+b, c.limit+1) }

// set counts a selection set nested depth deep in the text.
func (c *selectionCounter) set(set ast.SelectionSet, depth int) int {
	if len(set) > 0 {
		c.deepest = max(c.deepest, depth)
	}
	n := 0
	for _, sel := range set {
		n = c.add(n, 1)
		switch s := sel.(type) {
		case *ast.Field:
			n = c.add(n, c.set(s.SelectionSet, depth+1))
		case *ast.InlineFragment:
			n = c.add(n, c.set(s.SelectionSet, depth+1))
		case *ast.FragmentSpread:
			n = c.add(n, c.fragment(s.Name))
		}
		if n > c.limit {
			break
		}
	}
	return n
}

func (c *selectionCounter) fragment(name string) int {
	if n, ok := c.sizes[name]; ok {
		if n < 0 && c.cycle == "" {
			c.cycle = name
		}
		return max(n, 0)
	}
	def := c.frags[name]
	if def == nil {
		return 0
	}
	c.sizes[name] = -1
	n := c.set(def.SelectionSet, 1)
	c.sizes[name] = n
	return n
}

// objects is what mergeObjects found.
type objects struct {
	widest int // the most fields in one result object
	pairs  int // pairs validation compares
}

// mergeObjects looks at each result object of a document: a selection set
// with its inline fragments and spreads expanded, merged with the sets of
// the fields it shares a response name with. gqlgen's execution compares
// each field of an object with the others, so widest bounds its time.
// Validation compares the fields with one response name pairwise, and
// the fragments spread pairwise; pairs counts both. It expands each
// fragment once per object but again in each object, so it runs only on
// a document without cycles that countSelections has bounded. It stops
// after budget fields all the same, reporting widest as budget+1.
func mergeObjects(doc *ast.QueryDocument, frags map[string]*ast.FragmentDefinition, budget int) objects {
	m := merger{frags: frags, budget: budget}
	for _, op := range doc.Operations {
		m.object([]ast.SelectionSet{op.SelectionSet})
	}
	for _, f := range doc.Fragments {
		m.object([]ast.SelectionSet{f.SelectionSet})
	}
	if m.budget < 0 {
		m.widest = budget + 1
	}
	return m.objects
}

type merger struct {
	frags  map[string]*ast.FragmentDefinition
	budget int // fields left to collect
	objects
}

// object merges sets into one object, counts its pairs and recurses into
// its fields, by response name.
func (m *merger) object(sets []ast.SelectionSet) {
	var fields []*ast.Field
	spread := map[string]bool{}
	for _, set := range sets {
		fields = m.collect(fields, spread, set)
	}
	if m.budget -= len(fields); m.budget < 0 {
		return
	}
	m.widest = max(m.widest, len(fields))
	m.pairs += len(spread) * (len(spread) - 1) / 2
	byName := map[string][]*ast.Field{}
	var names []string
	for _, f := range fields {
		name := f.Alias
		if name == "" {
			name = f.Name
		}
		if _, ok := byName[name]; !ok {
			names = append(names, name)
		}
		byName[name] = append(byName[name], f)
	}
	for _, name := range names {
		same := byName[name]
		m.pairs += len(same) * (len(same) - 1) / 2
		var sub []ast.SelectionSet
		for _, f := range same {
			if len(f.SelectionSet) > 0 {
				sub = append(sub, f.SelectionSet)
			}
		}
		if len(sub) > 0 {
			m.object(sub)
		}
	}
}

// collect appends the fields of set, expanding inline fragments and
// spreads, and notes the fragments spread.
func (m *merger) collect(fields []*ast.Field, spread map[string]bool, set ast.SelectionSet) []*ast.Field {
	for _, sel := range set {
		if len(fields) > m.budget {
			break
		}
		switch s := sel.(type) {
		case *ast.Field:
			fields = append(fields, s)
		case *ast.InlineFragment:
			fields = m.collect(fields, spread, s.SelectionSet)
		case *ast.FragmentSpread:
			// Validation compares a fragment spread again in one object
			// by name only: its fields count once.
			def := m.frags[s.Name]
			if def == nil || spread[s.Name] {
				continue
			}
			spread[s.Name] = true
			fields = m.collect(fields, spread, def.SelectionSet)
		}
	}
	return fields
}
