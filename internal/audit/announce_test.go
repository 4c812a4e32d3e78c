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

func (n *notices) Notify(_ context.Context, x audit.Notice) error {
	n.got = append(n.got, fmt.Sprintf("%s:%d:%t", x.Company, x.ID, x.SettingsChanged))
	return nil
}

// TestAnnounceOncePerCompany: a notice flags a change of the company's
// settings among its events. A bulk change announced one notice per row,
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
	events = append(events, &audit.Event{Company: "b", ID: 7}, &audit.Event{Company: "b", ID: 3, Action: audit.DefaultSettingsChanged},
		&audit.Event{Company: "c"}, nil)
	log.Announce(context.Background(), events...)
	if want := []string{"a:500:false", "b:7:true"}; !slices.Equal(n.got, want) {
		t.Errorf("notices %v, want %v", n.got, want)
	}
}
