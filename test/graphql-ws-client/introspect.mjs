// Introspects the service as GraphQL tools do (graphql-js
// getIntrospectionQuery with every option on), builds a client schema from
// the answer, and compares it with the SDL from /schema.graphql. Prints one
// JSON line on stdout:
//
//   {"queryFields":[…],"schemaDescription":"…","sameAsSDL":true,
//    "firstDifference":null,"query":"…"}
//
// or {"error":…} and exits 1. "query" is the introspection query sent, so
// the Go test can check its copy in graph/testdata.
//
// Environment: URL (http://host, without /query), TOKEN (a bearer token).
import {
  GraphQLSchema, buildClientSchema, buildSchema, getIntrospectionQuery, lexicographicSortSchema, printSchema,
} from 'graphql';

const { URL: base, TOKEN: token } = process.env;
if (!base || !token) {
  console.error('set URL and TOKEN');
  process.exit(2);
}
const print = (v) => process.stdout.write(JSON.stringify(v) + '\n');
const headers = { Authorization: `Bearer ${token}` };

async function main() {
  const query = getIntrospectionQuery({
    descriptions: true,
    specifiedByUrl: true,
    directiveIsRepeatable: true,
    schemaDescription: true,
    inputValueDeprecation: true,
  });
  const res = await fetch(`${base}/query`, {
    method: 'POST',
    headers: { ...headers, 'Content-Type': 'application/json' },
    body: JSON.stringify({ query, operationName: 'IntrospectionQuery' }),
  });
  const body = await res.json();
  if (res.status !== 200 || body.errors) {
    throw new Error(`introspection: status ${res.status}: ${JSON.stringify(body.errors)}`);
  }
  const schema = buildClientSchema(body.data); // throws on a malformed result

  const sdlRes = await fetch(`${base}/schema.graphql`, { headers });
  if (sdlRes.status !== 200) {
    throw new Error(`/schema.graphql: status ${sdlRes.status}`);
  }
  const fromSDL = buildSchema(await sdlRes.text());
  const printed = (s) => printSchema(lexicographicSortSchema(s));

  // gqlgen declares @defer itself; schema.graphqls does not.
  const withoutDefer = new GraphQLSchema({
    ...schema.toConfig(),
    directives: schema.getDirectives().filter((d) => d.name !== 'defer'),
  });
  const [a, b] = [printed(withoutDefer), printed(fromSDL)];
  print({
    queryFields: Object.keys(schema.getQueryType().getFields()),
    schemaDescription: schema.description ?? null,
    sameAsSDL: a === b,
    firstDifference: firstDifference(a, b),
    query,
  });
}

// firstDifference names the first line where the two printed schemas
// differ, or is null.
function firstDifference(a, b) {
  const [la, lb] = [a.split('\n'), b.split('\n')];
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) {
      return { line: i + 1, introspected: la[i] ?? null, sdl: lb[i] ?? null };
    }
  }
  return null;
}

main().catch((err) => {
  print({ error: String(err && err.stack ? err.stack : err) });
  process.exit(1);
});
