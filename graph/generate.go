// Package graph holds the GraphQL resolvers and gqlgen's generated code.
// Resolvers translate between GraphQL and the domain in internal/; they
// hold no business rules.
package graph
