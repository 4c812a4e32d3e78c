package feed_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// nodeLine is one line client.mjs prints.
type nodeLine struct {
	Connected bool            `json:"connected"`
	Cursor    string          `json:"cursor"`
	ID        string          `json:"id"`
	Action    string          `json:"action"`
	Error     json.RawMessage `json:"error"`
}

// runNode starts client.mjs and returns its lines as they come, and a
// function that waits for it to exit.
func runNode(t *testing.T, s *apptest.Server, token, after string, count int) (<-chan nodeLine, func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*wait)
	cmd := exec.CommandContext(ctx, "node", "client.mjs")
	cmd.Dir = apptest.NodeClient(t)
	cmd.Env = append(os.Environ(),
		"URL=ws"+strings.TrimPrefix(s.URL, "http")+"/query",
		"TOKEN="+token, "AFTER="+after, fmt.Sprintf("COUNT=%d", count))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node: %v", err)
	}
	lines := make(chan nodeLine, count+2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l nodeLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				l.Error = json.RawMessage(fmt.Sprintf("%q", "unparsable line: "+sc.Text()))
			}
			lines <- l
		}
	}()
	t.Cleanup(cancel)
	return lines, func() error {
		<-done
		defer cancel()
		if err := cmd.Wait(); err != nil {
			return fmt.Errorf("node client: %v; stderr:\n%s", err, stderr.String())
		}
		return nil
	}
}

// nextNode returns the next line, failing on errors, on the end of output,
// and when nothing comes within wait.
func nextNode(t *testing.T, lines <-chan nodeLine, exit func() error) nodeLine {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("node client stopped early: %v", exit())
		}
		if len(l.Error) > 0 {
			t.Fatalf("node client reported %s (%v)", l.Error, exit())
		}
		return l
	case <-time.After(wait):
		t.Fatalf("nothing from the node client within %v", wait)
	}
	return nodeLine{}
}

// The npm graphql-ws client, under Node, subscribes with a token in
// connection_init, receives the event a mutation causes, leaves, and
// resumes from its last cursor without missing or repeating anything.
func TestNodeGraphQLWSClient(t *testing.T) {
	t.Parallel()
	apptest.NodeClient(t) // skips (or fails on CI) without node
	s := apptest.Start(t)
	co := testenv.Company(t)
	createUsers(t, s, co, "before", 1)
	_, cursors := logIDs(t, s, co, nil)
	token := s.Token(t, admin(co))
	mutate := func(id string) {
		s.Admin(t, co).Must(t, mCreateUser, map[string]any{"input": map[string]any{"id": id}}, nil)
	}

	// First session: one event, caused by a mutation once it is connected.
	lines, exit := runNode(t, s, token, cursors[0], 1)
	if l := nextNode(t, lines, exit); !l.Connected {
		t.Fatalf("first line %+v, want connected", l)
	}
	mutate("first")
	first := nextNode(t, lines, exit)
	if want := lastID(t, s, co); first.ID != want || first.Action != "USER_CREATED" {
		t.Fatalf("node client got %+v, want USER_CREATED %s", first, want)
	}
	if err := exit(); err != nil {
		t.Fatal(err)
	}

	// Two changes while it is away, one after it is back.
	mutate("away-1")
	mutate("away-2")
	lines, exit = runNode(t, s, token, first.Cursor, 3)
	if l := nextNode(t, lines, exit); !l.Connected {
		t.Fatalf("first line %+v, want connected", l)
	}
	mutate("back")
	var got []string
	for range 3 {
		got = append(got, nextNode(t, lines, exit).ID)
	}
	if err := exit(); err != nil {
		t.Fatal(err)
	}
	all, _ := logIDs(t, s, co, nil)
	if want := after(all, first.ID); !slices.Equal(got, want) {
		t.Fatalf("resumed node client got %v, want %v", got, want)
	}
}
