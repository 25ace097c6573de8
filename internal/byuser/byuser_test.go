package byuser

import (
	"slices"
	"testing"
)

type item struct {
	user string
	n    int
}

func key(it item) string { return it.user }

// TestIndex: each user gets all its items and only them, in the order
// given, however they are interleaved; Has and Users agree with Of; an
// append to one user's items does not reach the next user's.
func TestIndex(t *testing.T) {
	x := New([]item{{"bob", 1}, {"alice", 2}, {"bob", 3}, {"carol", 4}, {"bob", 5}, {"alice", 6}}, key)
	for user, want := range map[string][]int{"alice": {2, 6}, "bob": {1, 3, 5}, "carol": {4}, "dave": nil, "": nil} {
		var got []int
		for _, it := range x.Of(user) {
			if it.user != user {
				t.Errorf("item %d of %q is %q's", it.n, user, it.user)
			}
			got = append(got, it.n)
		}
		if !slices.Equal(got, want) {
			t.Errorf("Of(%q) = %v, want %v", user, got, want)
		}
		if x.Has(user) != (want != nil) {
			t.Errorf("Has(%q) = %v", user, !(want != nil))
		}
	}
	if got := slices.Sorted(x.Users()); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
		t.Errorf("Users() = %v", got)
	}
	_ = append(x.Of("alice"), item{"alice", 99})
	if got := x.Of("bob")[0].n; got != 1 {
		t.Errorf("an append to alice's items made bob's first %d", got)
	}
	var zero Index[item]
	if zero.Of("alice") != nil || zero.Has("alice") {
		t.Error("the zero Index has users")
	}
	if empty := New[item](nil, key); empty.Of("") != nil {
		t.Error("an empty Index has items")
	}
}

// TestPositions: the positions of a list by user, each user's in list
// order.
func TestPositions(t *testing.T) {
	users := []string{"bob", "alice", "bob", "carol", "bob"}
	x := Positions(len(users), func(i int) string { return users[i] })
	for user, want := range map[string][]int{"alice": {1}, "bob": {0, 2, 4}, "carol": {3}, "dave": nil} {
		if got := x.Of(user); !slices.Equal(got, want) {
			t.Errorf("Of(%q) = %v, want %v", user, got, want)
		}
	}
	if x := Positions(0, nil); x.Of("") != nil {
		t.Error("no positions, yet items")
	}
}
