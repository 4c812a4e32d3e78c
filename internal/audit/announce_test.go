package audit_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/twofactor/service/internal/audit"
)

// notices records what the log announces.
type notices struct{ got []string }

func (n *notices) Notify(_ context.Context, company string, id int64) error {
	n.got = append(n.got, fmt.Sprintf("%s:%d", company, id))
	return nil
}

// TestAnnounceOncePerCompany: a bulk change announced one notice per row,
// one Redis round trip each (500 for one upsertUsers call). A notice only
// says how far a company's log has grown, so one per company, with its
// newest id, is enough; rows not yet written (id 0) are skipped.
func TestAnnounceOncePerCompany(t *testing.T) {
	n := &notices{}
	log := audit.NewLog(nil, n, nil)
	var events []*audit.Event
	for id := int64(1); id <= 500; id++ {
		events = append(events, &audit.Event{Company: "a", ID: id})
	}
	events = append(events, &audit.Event{Company: "b", ID: 7}, &audit.Event{Company: "b", ID: 3},
		&audit.Event{Company: "c"}, nil)
	log.Announce(context.Background(), events...)
	if want := []string{"a:500", "b:7"}; !slices.Equal(n.got, want) {
		t.Errorf("notices %v, want %v", n.got, want)
	}
}
