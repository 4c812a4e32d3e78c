// Package audit is the append-only log of who changed what. Rows are
// written inside the transaction of the change they describe, and read
// newest first with keyset pagination.
package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/models"
)

// Action is what happened.
type Action string

// Actions recorded in the log.
const (
	UserCreated                Action = "USER_CREATED"
	UserTwoFactorEnabled       Action = "USER_TWO_FACTOR_ENABLED"
	UserTwoFactorDisabled      Action = "USER_TWO_FACTOR_DISABLED"
	GeneralSettingsChanged     Action = "GENERAL_SETTINGS_CHANGED"
	DefaultSettingsChanged     Action = "DEFAULT_SETTINGS_CHANGED"
	FailedAttemptsLimitReached Action = "FAILED_ATTEMPTS_LIMIT_REACHED"
	UserTwoFactorUnlocked      Action = "USER_TWO_FACTOR_UNLOCKED"
	UserUpdated                Action = "USER_UPDATED"
	UserDeleted                Action = "USER_DELETED"

	// Sign-in steps, recorded by the challenge scripts through the outbox.
	CodeSent           Action = "CODE_SENT"
	CodeDeliveryFailed Action = "CODE_DELIVERY_FAILED"
	CodeVerified       Action = "CODE_VERIFIED"
	CodeRejected       Action = "CODE_REJECTED"
	CodeExpired        Action = "CODE_EXPIRED"
)

// Category splits the log in two: what people changed, and sign-ins. Each
// category has its own hash chain and retention.
type Category string

// Categories.
const (
	Settings       Category = "SETTINGS"
	Authentication Category = "AUTHENTICATION"
)

// authentication lists the actions of sign-ins; every other action is a
// change of settings or users.
var authentication = map[Action]bool{
	CodeSent: true, CodeDeliveryFailed: true, CodeVerified: true, CodeRejected: true,
	CodeExpired: true, FailedAttemptsLimitReached: true,
}

// CategoryOf is the category of a.
func CategoryOf(a Action) Category {
	if authentication[a] {
		return Authentication
	}
	return Settings
}

// Party is a snapshot of a person as they were when the row was written.
type Party struct {
	ID   string
	Name string    // may be empty
	Role auth.Role // empty for targets
}

// Event is one audit row.
type Event struct {
	ID        int64 // the row id: one sequence for all companies, so never shown (see PublicID)
	Company   string
	Action    Action
	Actor     Party
	Target    *Party
	App       string // "web", "manager" or empty
	Details   json.RawMessage
	CreatedAt time.Time // set by the writer unless given (an outbox event keeps its own time)
	// UID, when set, identifies the event wherever it was made: writing
	// it again (a retried move from the outbox) stores nothing.
	UID string
}

// Category is e's category, from its action.
func (e *Event) Category() Category { return CategoryOf(e.Action) }

// Change is the details of an edit: only the fields that changed.
type Change struct {
	Before map[string]any `json:"before"`
	After  map[string]any `json:"after"`
}

// ActorOf snapshots the caller making a change.
func ActorOf(c auth.Caller) Party { return Party{ID: c.UserID, Name: c.Name, Role: c.Role} }

// Notice says that a company's log grew to ID, and whether the company's
// own settings changed with it (instances that keep settings in memory
// then reload them).
type Notice struct {
	Company         string
	ID              int64
	SettingsChanged bool
}

// Notifier tells every instance about a Notice. It is called only after
// the rows' transaction has committed.
type Notifier interface {
	Notify(ctx context.Context, n Notice) error
}

// Log writes and reads audit rows.
type Log struct {
	db       *gorm.DB
	notifier Notifier
	logger   *slog.Logger
	codec    *cursor.Codec // seals cursors and public ids
}

// Option configures a Log.
type Option func(*Log)

// WithCodec seals the log's cursors and public ids with c. Every instance
// must use the same key; without this option the log uses a key of its
// own, which suits tests only.
func WithCodec(c *cursor.Codec) Option { return func(l *Log) { l.codec = c } }

// NewLog returns a log backed by db. notifier may be nil.
func NewLog(db *gorm.DB, notifier Notifier, logger *slog.Logger, opts ...Option) *Log {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{db: db, notifier: notifier, logger: logger}
	for _, o := range opts {
		o(l)
	}
	if l.codec == nil {
		l.codec = cursor.Ephemeral()
	}
	return l
}

// Announce tells subscribers about committed events. A lost notice delays
// live delivery but loses nothing: subscribers catch up from the table.
func (l *Log) Announce(ctx context.Context, events ...*Event) {
	if l.notifier == nil {
		return
	}
	// A notice says "the company's log grew to id N" and readers fetch
	// every row past their cursor, so one notice per company, with its
	// newest id, says all that events do: a bulk change of 500 users is
	// one publish, not 500.
	notices := map[string]*Notice{}
	var order []string
	for _, e := range events {
		if e == nil || e.ID == 0 {
			continue
		}
		n, seen := notices[e.Company]
		if !seen {
			n = &Notice{Company: e.Company}
			notices[e.Company] = n
			order = append(order, e.Company)
		}
		n.ID = max(n.ID, e.ID)
		n.SettingsChanged = n.SettingsChanged || e.Action == GeneralSettingsChanged || e.Action == DefaultSettingsChanged
	}
	for _, company := range order {
		n := notices[company]
		if err := l.notifier.Notify(ctx, *n); err != nil {
			l.logger.WarnContext(ctx, "announce audit event", "company", company, "id", n.ID, "err", err)
		}
	}
}

// Write appends e inside tx, the transaction of the change it describes,
// and fills in its id and time. Call Announce once tx has committed.
func (l *Log) Write(tx *gorm.DB, e *Event) error {
	if err := lockCompany(tx, e.Company); err != nil {
		return fmt.Errorf("write audit event: %w", err)
	}
	rows := []models.AuditEvent{toRow(e)}
	if err := l.link(tx, rows); err != nil {
		return fmt.Errorf("write audit event: %w", err)
	}
	row := rows[0]
	if err := tx.Create(&row).Error; err != nil {
		return fmt.Errorf("write audit event: %w", err)
	}
	e.ID, e.CreatedAt = row.ID, row.CreatedAt
	return nil
}

// WriteMany appends events, all of one company, inside tx with one
// multi-row insert, and fills in their ids and times. For bulk changes,
// where one INSERT per row would dominate.
func (l *Log) WriteMany(tx *gorm.DB, events []*Event) error {
	if len(events) == 0 {
		return nil
	}
	if err := lockCompany(tx, events[0].Company); err != nil {
		return fmt.Errorf("write audit events: %w", err)
	}
	rows := make([]models.AuditEvent, len(events))
	for i, e := range events {
		if e.Company != events[0].Company {
			return fmt.Errorf("write audit events: companies %q and %q in one call", events[0].Company, e.Company)
		}
		rows[i] = toRow(e)
	}
	if err := l.link(tx, rows); err != nil {
		return fmt.Errorf("write audit events: %w", err)
	}
	if err := insertRows(tx, rows); err != nil {
		return fmt.Errorf("write audit events: %w", err)
	}
	for i, e := range events {
		e.ID, e.CreatedAt = rows[i].ID, rows[i].CreatedAt
	}
	return nil
}

// insertRows inserts rows, already linked (times and hashes set), in
// order, and fills in their ids. On PostgreSQL it sends
// one array per column and unnests them: a VALUES list of 500 rows has
// 5,000 parameters, which PostgreSQL parses and plans row by row
// (measured: the unnest insert takes about half as long).
func insertRows(tx *gorm.DB, rows []models.AuditEvent) error {
	if !store.IsPostgres(tx) {
		return tx.CreateInBatches(&rows, 500).Error
	}
	var (
		n                        = len(rows)
		action, actorID, role    = make([]string, n), make([]string, n), make([]string, n)
		details                  = make([]string, n)
		actorName, target, tName = make([]*string, n), make([]*string, n), make([]*string, n)
		app, uid, hash           = make([]*string, n), make([]*string, n), make([]*string, n)
		category                 = make([]string, n)
		created                  = make([]time.Time, n)
	)
	for i, r := range rows {
		action[i], actorID[i], role[i], details[i] = r.Action, r.ActorID, r.ActorRole, r.Details
		actorName[i], target[i], tName[i], app[i] = r.ActorName, r.TargetUserID, r.TargetUserName, r.App
		category[i], uid[i], hash[i] = r.Category, r.UID, r.Hash
		created[i] = r.CreatedAt
	}
	var ids []int64
	// WITH ORDINALITY and ORDER BY: the ids, and so the chain order, follow
	// the order the rows were linked in.
	err := tx.Raw(`INSERT INTO audit_events
		(company_id, action, actor_id, actor_name, actor_role, target_user_id, target_user_name, app, details, created_at, category, uid, hash)
		SELECT ?, a, b, c, d, e, f, g, h, i, j, k, m FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::timestamptz[], ?::text[], ?::text[], ?::text[])
			WITH ORDINALITY AS v(a, b, c, d, e, f, g, h, i, j, k, m, n) ORDER BY n
		RETURNING id`,
		rows[0].CompanyID, store.Array(action), store.Array(actorID), store.Array(actorName), store.Array(role),
		store.Array(target), store.Array(tName), store.Array(app), store.Array(details), store.Array(created),
		store.Array(category), store.Array(uid), store.Array(hash)).Scan(&ids).Error
	if err != nil {
		return err
	}
	if len(ids) != n {
		return fmt.Errorf("inserted %d of %d rows", len(ids), n)
	}
	for i := range rows {
		if i > 0 && ids[i] <= ids[i-1] {
			return fmt.Errorf("inserted ids out of order (%d after %d): the chain would not follow them", ids[i], ids[i-1])
		}
		rows[i].ID = ids[i]
	}
	return nil
}

func toRow(e *Event) models.AuditEvent {
	row := models.AuditEvent{
		CompanyID: e.Company,
		Action:    string(e.Action),
		ActorID:   e.Actor.ID,
		ActorName: models.Nullable(e.Actor.Name),
		ActorRole: string(e.Actor.Role),
		App:       models.Nullable(e.App),
		Details:   string(e.Details),
		Category:  string(e.Category()),
		UID:       models.Nullable(e.UID),
		CreatedAt: e.CreatedAt,
	}
	if row.Details == "" {
		row.Details = "{}"
	}
	if e.Target != nil {
		row.TargetUserID = &e.Target.ID
		row.TargetUserName = models.Nullable(e.Target.Name)
	}
	return row
}

// Record appends e in a transaction of its own, after apply (which may be
// nil) succeeds; an error from either leaves no row.
func (l *Log) Record(ctx context.Context, e *Event, apply func() error) error {
	err := l.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if apply != nil {
			if err := apply(); err != nil {
				return err
			}
		}
		return l.Write(tx, e)
	})
	if err != nil {
		return err
	}
	l.Announce(ctx, e)
	return nil
}

// Details encodes v for Event.Details.
func Details(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		// Only plain values are ever passed in; failing here is a bug.
		panic(fmt.Sprintf("audit details: %v", err))
	}
	return b
}

func fromRow(r models.AuditEvent) Event {
	e := Event{
		ID:        r.ID,
		Company:   r.CompanyID,
		Action:    Action(r.Action),
		Actor:     Party{ID: r.ActorID, Name: models.Value(r.ActorName), Role: auth.Role(r.ActorRole)},
		App:       models.Value(r.App),
		Details:   json.RawMessage(r.Details),
		CreatedAt: r.CreatedAt.UTC(),
		UID:       models.Value(r.UID),
	}
	if r.TargetUserID != nil {
		e.Target = &Party{ID: *r.TargetUserID, Name: models.Value(r.TargetUserName)}
	}
	return e
}
