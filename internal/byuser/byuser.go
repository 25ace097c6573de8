// Package byuser finds the items of one user among many: the routes of
// the network process's listener, the exact handlers of an exec process.
//
// With 10,000 users, a map of a slice per user costs a small allocation
// each (most users have one handler); an Index keeps every item in one
// slice, each user's together, and a map of where they are.
package byuser

import (
	"iter"
	"maps"
	"slices"
	"strings"
)

// Index is built whole by New and only read after, so readers need no
// lock of their own. The zero Index has no users.
type Index[T any] struct {
	items []T
	spans map[string]span
}

// span is where a user's items are in Index.items.
type span struct{ start, n int32 }

// New indexes items by the user key gives each. It sorts items in place
// and keeps them: the caller gives the slice up. The sort is stable, so a
// user's items keep the order they came in.
func New[T any](items []T, key func(T) string) Index[T] {
	slices.SortStableFunc(items, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	users := 0 // the map's size
	for i := range items {
		if i == 0 || key(items[i]) != key(items[i-1]) {
			users++
		}
	}
	x := Index[T]{items: slices.Clip(items), spans: make(map[string]span, users)}
	for i := 0; i < len(items); {
		u := key(items[i])
		j := i + 1
		for j < len(items) && key(items[j]) == u {
			j++
		}
		x.spans[u] = span{int32(i), int32(j - i)}
		i = j
	}
	return x
}

// Positions indexes the positions 0 to n-1 of a list by the user key
// gives each: which items of a list (the old handlers of a reload) are
// one user's, in list order.
func Positions(n int, key func(int) string) Index[int] {
	pos := make([]int, n)
	for i := range pos {
		pos[i] = i
	}
	return New(pos, key)
}

// Of returns user's items, in the order they came in; nil when it has
// none. The slice has no room beyond them: an append copies, and never
// reaches another user's items.
func (x Index[T]) Of(user string) []T {
	sp, ok := x.spans[user]
	if !ok {
		return nil
	}
	end := sp.start + sp.n
	return x.items[sp.start:end:end]
}

// Has reports whether user has items.
func (x Index[T]) Has(user string) bool {
	_, ok := x.spans[user]
	return ok
}

// Users yields every user with items, in no particular order.
func (x Index[T]) Users() iter.Seq[string] { return maps.Keys(x.spans) }
