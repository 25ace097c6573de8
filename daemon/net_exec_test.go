package daemon

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/listener"
	"github.com/imserious/imserious/privsep"
)

// An exec process that stops reading (hung, stopped) fills its socket; the
// network process must then answer 503 within the request's deadline
// instead of holding the request, and its slot, for ever.
func TestNetGivesUpOnExecThatStoppedReading(t *testing.T) {
	mine, theirs, err := privsep.Socketpair()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close() // held, never read: the exec process that hangs
	nc := netConfig{Log: logOptions{Level: -4, Format: "json"}, Endpoint: "/notify", MaxConnections: 2,
		Timeout: time.Second, Execs: []string{"alice"},
		Routes: []listener.Route{{User: "alice", Event: "MessageNew", Target: 0}}}
	n := startNetWith(t, nc, []*os.File{theirs})
	theirs.Close()
	n.ready(t)

	// Large valid bodies fill the socket's buffer after a few requests.
	body := fmt.Sprintf(`{"user":"alice","event":"MessageNew","snippet":%q}`, strings.Repeat("x", 60<<10))
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < 40; i++ {
		req, _ := http.NewRequest("PUT", "http://"+n.addr+"/notify", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v (the network process is stuck on the full socket)", i, err)
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			continue
		case http.StatusServiceUnavailable:
			n.lines.wait(t, "cannot hand event to exec process")
			return
		default:
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}
	t.Fatal("40 large events went into a socket nobody reads without a 503")
}
