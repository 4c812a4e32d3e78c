package apps

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"testing"
)

// TestTableIsValid: the real table passes the same check init runs, and
// every app answers for itself.
func TestTableIsValid(t *testing.T) {
	if _, _, err := index(table); err != nil {
		t.Fatal(err)
	}
	if got := All(); len(got) != len(table) || got[0] != Web || got[1] != Manager {
		t.Fatalf("All() = %v, want [web manager] first, in table order", got)
	}
	for _, a := range All() {
		if !a.Valid() || a.Code() == "" || a.Key() == "" || a.Column() == "" || a.DefaultColumn() == "" {
			t.Errorf("%q: incomplete row", a)
		}
		if got, ok := FromCode(a.Code()); !ok || got != a {
			t.Errorf("FromCode(%q) = %q, %v, want %q", a.Code(), got, ok, a)
		}
		if got, ok := Parse(string(a)); !ok || got != a {
			t.Errorf("Parse(%q) = %q, %v", a, got, ok)
		}
	}
	for _, bad := range []string{"", "WEB", "mobile", "w", "web "} {
		if _, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	for _, bad := range []string{"", "x", "web", "W"} {
		if _, ok := FromCode(bad); ok {
			t.Errorf("FromCode(%q) accepted", bad)
		}
	}
}

// TestEncodingsAreFrozen: live challenge ids and Redis keys carry these,
// so a change would void every pending code and lift every lock.
func TestEncodingsAreFrozen(t *testing.T) {
	for a, want := range map[App][4]string{
		Web:     {"w", "web", "two_factor_web", "default_web"},
		Manager: {"m", "manager", "two_factor_manager", "default_manager"},
	} {
		if got := [4]string{a.Code(), a.Key(), a.Column(), a.DefaultColumn()}; got != want {
			t.Errorf("%q encodes as %v, want %v", a, got, want)
		}
	}
}

// TestCodesUniqueProperty: over every pair of rows, names, codes, keys
// and columns differ, whatever their first letters.
func TestCodesUniqueProperty(t *testing.T) {
	for i, a := range table {
		for _, b := range table[i+1:] {
			if a.app == b.app || a.code == b.code || a.key == b.key || a.column == b.column ||
				a.defaultColumn == b.defaultColumn {
				t.Errorf("%q and %q share an encoding: %+v %+v", a.app, b.app, a, b)
			}
		}
	}
}

// TestIndexRefusesBrokenTables: the "mobile"/"manager" collision the
// first-letter ids had, and a row missing a field, are refused.
func TestIndexRefusesBrokenTables(t *testing.T) {
	full := func(a App, code, key string) info {
		return info{app: a, code: code, key: key, column: "two_factor_" + string(a), defaultColumn: "default_" + string(a)}
	}
	for name, tc := range map[string][]info{
		"same code":        {full("manager", "m", "manager"), full("mobile", "m", "mobile")},
		"same key":         {full("manager", "m", "x"), full("mobile", "mo", "x")},
		"same name":        {full("web", "w", "web"), full("web", "w2", "web2")},
		"no code":          {full("mobile", "", "mobile")},
		"no column":        {{app: "mobile", code: "mo", key: "mobile", defaultColumn: "default_mobile"}},
		"dot in code":      {full("mobile", "m.o", "mobile")},
		"colon in key":     {full("mobile", "mo", "mo:bile")},
		"name over 16":     {full("abcdefghijklmnopq", "a", "a")},
		"same column":      {full("a", "a", "a"), {app: "b", code: "b", key: "b", column: "two_factor_a", defaultColumn: "default_b"}},
		"upper-case name":  {full("Mobile", "mo", "mobile")},
		"empty name":       {{code: "x", key: "x", column: "c", defaultColumn: "d"}},
		"same default col": {full("a", "a", "a"), {app: "b", code: "b", key: "b", column: "two_factor_b", defaultColumn: "default_a"}},
	} {
		if _, _, err := index(tc); err == nil {
			t.Errorf("%s: accepted %+v", name, tc)
		}
	}
	// Same first letter, different codes: fine, and each code finds its app.
	_, codes, err := index([]info{full("manager", "m", "manager"), full("mobile", "mo", "mobile")})
	if err != nil || codes["m"] != "manager" || codes["mo"] != "mobile" {
		t.Fatalf("manager+mobile: %v %v", codes, err)
	}
}

// TestEveryConstantHasARow reads this package's source: an App constant
// added without a table row (so without a code) fails here, not in
// production.
func TestEveryConstantHasARow(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "apps.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		spec, ok := node.(*ast.ValueSpec)
		if !ok {
			return true
		}
		if id, _ := spec.Type.(*ast.Ident); id == nil || id.Name != "App" {
			return true
		}
		for _, v := range spec.Values {
			lit, ok := v.(*ast.BasicLit)
			if !ok {
				t.Errorf("App constant %v is not a string literal", spec.Names)
				continue
			}
			s, _ := strconv.Unquote(lit.Value)
			n++
			if !App(s).Valid() {
				t.Errorf("App constant %q has no row in table", s)
			}
		}
		return true
	})
	if n != len(table) {
		t.Errorf("%d App constants, %d table rows", n, len(table))
	}
}
