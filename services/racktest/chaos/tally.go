package chaos

// Tally counts the calls recorded so far by kind and outcome ("ok",
// "refused", "indeterminate"), as Check classifies them: for a summary.
func (h *History) Tally() map[Kind]map[string]int {
	out := map[Kind]map[string]int{}
	for _, c := range h.snapshot().Calls {
		o := outcomeIndeterminate
		if c.Returned {
			o = outcomeOf(c.Status)
		}
		if out[c.Kind] == nil {
			out[c.Kind] = map[string]int{}
		}
		out[c.Kind][o.String()]++
	}
	return out
}
