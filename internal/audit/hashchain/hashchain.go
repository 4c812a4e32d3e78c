// Package hashchain is the tamper-evidence format of the audit log: how one
// row is encoded and linked to the row before it. It is a stored format,
// not an implementation detail: every hash in the database was made by it,
// so it never changes; a new format would get a new Version and a new
// package. That is why it imports nothing of this module (not models, not
// gorm): the schema migration that chained the rows that existed before
// hashing (store migration 0004) and the writers today must compute the
// same bytes, and sharing this one frozen function is what keeps them equal.
//
// A row's link is
//
//	hash = lowercase hex( SHA-256( prev ‖ Encode(row) ) )
//
// where prev is the 32 bytes of the previous row's hash in the same
// chain (one chain per company and category, in id order), or of the
// retention checkpoint's hash once older rows are removed, or Genesis (32
// zero bytes) for a chain's first row. Encode is
//
//	field("twofactor-audit-chain-v1") then, in this order,
//	company, category, action, actor id, actor name, actor role,
//	target id, target name, app, details, created_at, uid
//
// where every text field is one byte 0x00 for NULL, or 0x01 followed by its
// length as a 4-byte big-endian unsigned integer and its bytes exactly as
// stored; created_at is 8 bytes big-endian: the signed number of
// milliseconds since 1970-01-01T00:00:00Z. The row id is left out (it is
// assigned by the database after the hash is computed; order is bound by
// the chain itself), and so is the hash.
package hashchain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
)

// Version names the encoding; it is the first field of every encoded row.
const Version = "twofactor-audit-chain-v1"

// Genesis is the link a chain's first row follows: 32 zero bytes, in hex.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// Row is every stored field of an audit row except its id and hash.
// Nullable columns are pointers: NULL and "" encode differently.
type Row struct {
	Company    string
	Category   string
	Action     string
	ActorID    string
	ActorName  *string
	ActorRole  string
	TargetID   *string
	TargetName *string
	App        *string
	Details    string
	CreatedAt  time.Time // encoded to the millisecond, in UTC
	UID        *string
}

// Encode is r's canonical encoding (see the package comment).
func Encode(r Row) []byte {
	size := 8 + 12*5 + len(Version) + len(r.Company) + len(r.Category) + len(r.Action) + len(r.ActorID) +
		len(r.ActorRole) + len(r.Details)
	for _, p := range []*string{r.ActorName, r.TargetID, r.TargetName, r.App, r.UID} {
		if p != nil {
			size += len(*p)
		}
	}
	b := make([]byte, 0, size)
	version := Version
	b = text(b, &version)
	for _, f := range []*string{&r.Company, &r.Category, &r.Action, &r.ActorID, r.ActorName, &r.ActorRole,
		r.TargetID, r.TargetName, r.App, &r.Details} {
		b = text(b, f)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(r.CreatedAt.UnixMilli()))
	return text(b, r.UID)
}

func text(b []byte, s *string) []byte {
	if s == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.BigEndian.AppendUint32(b, uint32(len(*s)))
	return append(b, *s...)
}

// Next is the hash of r following prev (a stored hash in hex). A prev that
// is not 64 hex digits is an error: the row it came from was tampered with.
func Next(prev string, r Row) (string, error) {
	p, err := hex.DecodeString(prev)
	if err != nil || len(p) != sha256.Size {
		return "", fmt.Errorf("hash chain: previous hash %.80q is not %d hex digits", prev, 2*sha256.Size)
	}
	h := sha256.New()
	h.Write(p)
	h.Write(Encode(r))
	return hex.EncodeToString(h.Sum(nil)), nil
}
