package graph

import (
	"strings"

	"github.com/99designs/gqlgen/graphql"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
)

func toSettings(s settings.Settings) *model.TwoFactorSettings {
	out := &model.TwoFactorSettings{
		General:   &model.GeneralSettings{DeliveryMethod: model.DeliveryMethod(s.DeliveryMethod)},
		Defaults:  &model.DefaultSettings{Web: s.Defaults[apps.Web], Manager: s.Defaults[apps.Manager]},
		UpdatedAt: s.UpdatedAt,
	}
	if cp := s.Contact; cp != nil {
		out.General.ContactPerson = &model.ContactPerson{Name: cp.Name, Email: optional(cp.Email), Phone: optional(cp.Phone)}
	}
	return out
}

func toUser(u users.User) *model.User {
	return &model.User{
		ID:          u.ID,
		Email:       optional(u.Email),
		Phone:       optional(u.Phone),
		DisplayName: optional(u.DisplayName),
		TwoFactor:   &model.UserTwoFactor{Web: u.TwoFactor[apps.Web], Manager: u.TwoFactor[apps.Manager], UserID: u.ID},
		CreatedAt:   u.CreatedAt,
	}
}

// toAuditEvent converts e, whose public id is id (row ids are never shown).
func toAuditEvent(e audit.Event, id string) *model.AuditEvent {
	role := model.Role(strings.ToUpper(string(e.Actor.Role)))
	out := &model.AuditEvent{
		ID:        id,
		Action:    model.AuditAction(e.Action),
		Actor:     &model.AuditActor{ID: e.Actor.ID, DisplayName: optional(e.Actor.Name), Role: &role},
		Details:   e.Details,
		CreatedAt: e.CreatedAt,
	}
	if e.Target != nil {
		out.TargetUser = &model.AuditActor{ID: e.Target.ID, DisplayName: optional(e.Target.Name)}
	}
	if e.App != "" {
		app := toApp(apps.App(e.App))
		out.App = &app
	}
	return out
}

// appEnums is the one mapping between internal/apps and the GraphQL App
// enum; TestAppEnumMapping fails when an app or an enum value lacks a row.
var appEnums = map[apps.App]model.App{
	apps.Web:     model.AppWeb,
	apps.Manager: model.AppManager,
}

var appsByEnum = func() map[model.App]apps.App {
	out := make(map[model.App]apps.App, len(appEnums))
	for a, e := range appEnums {
		out[e] = a
	}
	return out
}()

// toApp maps an app to its enum value. An app no longer in the table
// (an old audit row) keeps its name, upper-cased, as before the table.
func toApp(a apps.App) model.App {
	if e, ok := appEnums[a]; ok {
		return e
	}
	return model.App(strings.ToUpper(string(a)))
}

// fromApp maps an enum value to its app. An unknown value (gqlgen refuses
// them first) becomes an invalid app, never "", which would mean "any".
func fromApp(e model.App) apps.App {
	if a, ok := appsByEnum[e]; ok {
		return a
	}
	return apps.App(strings.ToLower(string(e)))
}

// defaultsOf is the apps whose default the input sets; an omitted field
// leaves its app out (unchanged).
func defaultsOf(in model.UpdateDefaultSettingsInput) map[apps.App]bool {
	out := map[apps.App]bool{}
	for app, v := range map[apps.App]*bool{apps.Web: in.Web, apps.Manager: in.Manager} {
		if v != nil {
			out[app] = *v
		}
	}
	return out
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func pageInfo(cursors []string, hasNext, hasPrev bool) *model.PageInfo {
	p := &model.PageInfo{HasNextPage: hasNext, HasPreviousPage: hasPrev}
	if n := len(cursors); n > 0 {
		p.StartCursor, p.EndCursor = &cursors[0], &cursors[n-1]
	}
	return p
}

func toAuditFilter(f *model.AuditLogFilter) audit.Filter {
	if f == nil {
		return audit.Filter{}
	}
	out := audit.Filter{UserID: deref(f.UserID), From: f.From, To: f.To}
	for _, a := range f.Actions {
		out.Actions = append(out.Actions, audit.Action(a))
	}
	if f.App != nil {
		out.App = string(fromApp(*f.App))
	}
	if f.Category != nil {
		out.Category = audit.Category(*f.Category)
	}
	return out
}

// auditEdge converts e with its sealed cursor and public id, for both
// auditLog and the live feed, so a client sees one id and cursor per event.
func (r *Resolver) auditEdge(e audit.Event) *model.AuditEventEdge {
	return &model.AuditEventEdge{Cursor: r.AuditService.Cursor(e), Node: toAuditEvent(e, r.AuditService.PublicID(e))}
}

// omitted is nil for a field left out, "" for null, else the value: the
// users service's keep/clear/set.
func omitted(o graphql.Omittable[*string]) *string {
	v, set := o.ValueOK()
	if !set {
		return nil
	}
	if v == nil {
		empty := ""
		return &empty
	}
	return v
}

func fromUsersFilter(f *model.UsersFilter) *users.Filter {
	if f == nil {
		return nil
	}
	out := &users.Filter{Locked: f.Locked}
	if tf := f.TwoFactor; tf != nil {
		out.TwoFactor = &users.TwoFactorFilter{App: fromApp(tf.App), Enabled: tf.Enabled}
	}
	return out
}
