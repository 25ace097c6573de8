package exec

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/imserious/imserious/config"
)

// TestPreviewIsTheRun delivers events to a real Exec and checks that the
// job each matching handler gets is what Matches and EventEnv predicted,
// and that the handlers they leave out get nothing.
func TestPreviewIsTheRun(t *testing.T) {
	ipOnly := testHandler("alice")
	ipOnly.IP = mustPrefixes("10.0.0.0/8")
	withEnv := testHandler("alice")
	withEnv.Env = map[string]string{"DISPLAY": ":0", "IMSE_FOLDER": "forged"}
	other := testHandler("alice")
	other.Event = "MessageRead"
	hs := []config.Handler{testHandler("alice"), ipOnly, withEnv, other, testHandler("bob")}
	for _, remote := range []netip.AddrPort{peer, netip.MustParseAddrPort("[::ffff:10.1.2.3]:7")} {
		h := newHarness(t, hs...)
		ev := newEvent("alice", "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\x01")
		var want []int
		for i := range hs {
			if Matches(&hs[i], &ev, remote) {
				want = append(want, i)
			}
		}
		if n := h.x.Deliver(ev, remote); n != len(want) {
			t.Fatalf("%v: Deliver matched %d handlers, Matches %v", remote, n, want)
		}
		var got []int
		for range want {
			r := h.next()
			got = append(got, r.Index)
			env, err := EventEnv(&hs[r.Index], &ev, remote)
			if err != nil {
				t.Errorf("handler %d: %v", r.Index, err)
			}
			if !slices.Equal(env, r.Env) {
				t.Errorf("%v handler %d: EventEnv\n%s\nthe run got\n%s", remote, r.Index, strings.Join(env, "\n"), strings.Join(r.Env, "\n"))
			}
			h.finish(r)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%v: runs of handlers %v, Matches said %v", remote, got, want)
		}
	}
}

func TestEventEnvTooLarge(t *testing.T) {
	h := testHandler("alice")
	h.Env = map[string]string{"BIG": strings.Repeat("x", maxArgStrlen)}
	ev := newEvent("alice", "hi")
	if _, err := EventEnv(&h, &ev, peer); err == nil || !strings.Contains(err.Error(), "BIG") {
		t.Errorf("EventEnv with a 128 KiB variable: error %v, want one naming BIG", err)
	}
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}
