package feed

// ChannelOf is the channel h carries company's notices on, for the
// external tests that publish or count subscriptions like another
// instance would.
func ChannelOf(h *Hub, company string) string { return h.channel(company) }

// Subscriptions is how many Redis subscriptions h holds.
func Subscriptions(h *Hub) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.pss)
}
