package config

import "strings"

// suggest returns the known key closest to an unknown one, or "" when none
// is close enough to be a plausible typo. Case, '-' versus '_' and missing
// underscores are forgiven before counting edits.
func suggest(unknown string, known []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", -1
	for _, k := range known {
		d := min(editDistance(strings.ToLower(unknown), k), editDistance(norm(unknown), norm(k)))
		// "password" for "pass", "username" for "user": a known key
		// spelled out longer is a likely slip too, if nothing is closer.
		if u, kk := norm(unknown), norm(k); len(kk) >= 4 && strings.HasPrefix(u, kk) {
			d = min(d, limitFor(unknown))
		}
		if bestDist < 0 || d < bestDist {
			best, bestDist = k, d
		}
	}
	if bestDist < 0 || bestDist > limitFor(unknown) {
		return ""
	}
	return best
}

// limitFor is how many edits still make a plausible typo of s.
func limitFor(s string) int {
	switch n := len(s); {
	case n > 8:
		return 3
	case n > 4:
		return 2
	}
	return 1
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent bytes each cost
// one, so "tsl" is one edit from "tls".
func editDistance(a, b string) int {
	// Keys are short; cap the work anyway, since the unknown one comes from
	// the file.
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}
