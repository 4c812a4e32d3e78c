package feed

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/testenv"
)

var slot = testenv.Slot

// hostileCompanies are ids that could break a channel name: braces that
// might open or close a hash tag, the separator, nothing at all.
var hostileCompanies = []string{
	"acme", "", "}", "{", "{}", "{x}", "a}:b", "}:", "{b00.133}", "x{y}z", "2fa:audit:{b01.324}:x",
	"ü-ñ", strings.Repeat("z", 300),
}

func TestSlotFunction(t *testing.T) {
	if got := testenv.CRC16("123456789"); got != 0x31C3 {
		t.Fatalf("testenv.CRC16(123456789) = %#x, want 0x31c3", got)
	}
	if got := slot("{user1000}.following"); got != slot("user1000") {
		t.Fatalf("hash tag ignored: %d", got)
	}
}

// Every channel of a bucket is in the bucket's slot, whatever the
// company id, so one SSUBSCRIBE carries them all; the company reads back;
// bucket i's slot lies in the i-th sixteenth of the slots.
func TestBucketChannelsShareASlot(t *testing.T) {
	h := &Hub{sharded: true}
	for i, tag := range bucketTags {
		want := slot(tag)
		if lo, hi := i*16384/buckets, (i+1)*16384/buckets; want < lo || want >= hi {
			t.Errorf("bucket %d (%s): slot %d outside [%d, %d)", i, tag, want, lo, hi)
		}
		for j := range bucketTags[:i] {
			if bucketTags[j] == tag {
				t.Errorf("buckets %d and %d share the tag %s", j, i, tag)
			}
		}
	}
	for _, co := range append(hostileCompanies, manyCompanies(500)...) {
		ch := h.channel(co)
		key := h.shardKey(ch)
		if key != bucketTags[bucketOf(co)] {
			t.Errorf("company %q: channel %q has shard key %q, want %q", co, ch, key, bucketTags[bucketOf(co)])
		}
		if got, want := slot(ch), slot(key); got != want {
			t.Errorf("company %q: channel %q in slot %d, its bucket in %d", co, ch, got, want)
		}
		if got := h.companyOf(ch); got != co {
			t.Errorf("channel %q reads back as company %q, want %q", ch, got, co)
		}
	}
}

// The names are wire format: instances of one version must agree, and a
// single server keeps the name of the versions before buckets.
func TestChannelNamesAreStable(t *testing.T) {
	for _, tc := range []struct {
		sharded bool
		company string
		want    string
	}{
		{false, "acme", "2fa:audit:acme"},
		{false, "{x}", "2fa:audit:{x}"},
		{true, "acme", "2fa:audit:{b15.147}:acme"},
		{true, "co-000000000001", "2fa:audit:{b01.324}:co-000000000001"},
		{true, "", "2fa:audit:{b05.350}:"},
	} {
		h := &Hub{sharded: tc.sharded}
		if got := h.channel(tc.company); got != tc.want {
			t.Errorf("sharded=%v %q: channel %q, want %q", tc.sharded, tc.company, got, tc.want)
		}
		if got := h.companyOf(tc.want); got != tc.company {
			t.Errorf("sharded=%v: %q reads back as %q, want %q", tc.sharded, tc.want, got, tc.company)
		}
	}
}

// The Cluster itself agrees with slot on every bucket's channels.
func TestClusterKeyslotOfBuckets(t *testing.T) {
	rdb := testenv.Cluster(t)
	h := &Hub{sharded: true}
	for _, co := range append(hostileCompanies, manyCompanies(64)...) {
		ch := h.channel(co)
		got, err := rdb.ClusterKeySlot(t.Context(), ch).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", ch, err)
		}
		if want := slot(h.shardKey(ch)); int(got) != want {
			t.Errorf("CLUSTER KEYSLOT %q = %d, want its bucket's %d", ch, got, want)
		}
	}
}

// manyCompanies returns n distinct ids shaped like testenv.Company's.
func manyCompanies(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("co-%012x", i)
	}
	return out
}
