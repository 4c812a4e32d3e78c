package metrics

import (
	"net/http"
	"slices"
	"strings"

	"github.com/vektah/gqlparser/v2/ast"
)

// Every label value comes from a closed set: a series lives until the
// process ends, so a label a client could choose would let anyone grow
// memory and /metrics without bound.

// Fixed label values.
const (
	Other    = "OTHER"    // a method outside the standard ones, an odd error code
	Invalid  = "invalid"  // an operation that did not parse or validate
	Multiple = "multiple" // more top-level fields than MaxOperationFields
	Unknown  = "UNKNOWN"  // an error without a code
)

// MaxOperationFields is how many distinct top-level fields an operation's
// name label lists; more read as Multiple. It bounds the label set to the
// schema's fields taken one or two at a time.
const MaxOperationFields = 2

// Method is m if it is a standard HTTP method, else Other.
func Method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return Other
}

// Code is an error code as a label. The codes are the service's and
// gqlgen's, short upper-case words; anything else reads as Other, so a
// future code with client text in it cannot grow the set.
func Code(c string) string {
	if c == "" {
		return Unknown
	}
	if len(c) > 40 {
		return Other
	}
	for _, r := range c {
		if (r < 'A' || r > 'Z') && r != '_' {
			return Other
		}
	}
	return c
}

// Operation labels a GraphQL operation by its type and its top-level
// fields' schema names (sorted, distinct, joined by ","), never by the
// client's operationName. op must come from a validated document, where
// each field carries its schema definition; nil (parse or validation
// failed) is Invalid.
func Operation(op *ast.OperationDefinition) (typ, name string) {
	if op == nil {
		return Invalid, Invalid
	}
	names := map[string]bool{}
	topFields(op.SelectionSet, map[string]bool{}, names)
	if len(names) == 0 {
		return string(op.Operation), Invalid
	}
	if len(names) > MaxOperationFields {
		return string(op.Operation), Multiple
	}
	list := make([]string, 0, len(names))
	for n := range names {
		list = append(list, n)
	}
	slices.Sort(list)
	return string(op.Operation), strings.Join(list, ",")
}

// topFields collects the schema names of the fields at the top of set,
// through fragments. Each fragment is expanded once, so a document that
// doubles fragments costs its size, not 2^depth.
func topFields(set ast.SelectionSet, expanded, names map[string]bool) {
	for _, s := range set {
		switch s := s.(type) {
		case *ast.Field:
			// The definition is the schema's; the field's own name could
			// be anything in a document that skipped validation.
			if s.Definition != nil {
				names[s.Definition.Name] = true
			}
		case *ast.InlineFragment:
			topFields(s.SelectionSet, expanded, names)
		case *ast.FragmentSpread:
			if s.Definition != nil && !expanded[s.Name] {
				expanded[s.Name] = true
				topFields(s.Definition.SelectionSet, expanded, names)
			}
		}
	}
}
