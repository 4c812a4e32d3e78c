package store

import "testing"

// The service must run behind PgBouncer in transaction pooling mode, so
// pgx may not cache named prepared statements unless the URL asks for it.
func TestWithExecMode(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://h/db", "postgres://h/db?default_query_exec_mode=exec"},
		{"postgres://h/db?sslmode=verify-full", "postgres://h/db?sslmode=verify-full&default_query_exec_mode=exec"},
		{"postgres://h/db?default_query_exec_mode=cache_statement", "postgres://h/db?default_query_exec_mode=cache_statement"},
	} {
		if got := withExecMode(tc.in); got != tc.want {
			t.Errorf("withExecMode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
