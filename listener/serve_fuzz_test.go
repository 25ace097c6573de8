package listener

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imserious/imserious/event"
	"github.com/imserious/imserious/internal/dovecotsamples"
)

// fuzzServer is the server FuzzServe talks to: one per fuzzing process,
// serving the Dovecot samples' endpoint and credentials, with a handler
// for alice and one for bob that takes events from 10.0.0.0/8 only
// (never from loopback).
type fuzzServer struct {
	addr string
	mu   sync.Mutex
	bad  []string // what must not happen, as it happened
}

var (
	fuzzOnce sync.Once
	fuzzSrv  *fuzzServer
)

func (fs *fuzzServer) fail(why string) {
	fs.mu.Lock()
	fs.bad = append(fs.bad, why)
	fs.mu.Unlock()
}

func (fs *fuzzServer) failures() []string {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := fs.bad
	fs.bad = nil
	return out
}

// Handle catches what net/http logs when a handler panics: it recovers
// the panic itself, so the fuzzer would not see it otherwise.
func (fs *fuzzServer) Enabled(context.Context, slog.Level) bool { return true }
func (fs *fuzzServer) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		fs.fail("logged: " + r.Message)
	}
	return nil
}
func (fs *fuzzServer) WithAttrs([]slog.Attr) slog.Handler { return fs }
func (fs *fuzzServer) WithGroup(string) slog.Handler      { return fs }

func startFuzzServer(f *testing.F) *fuzzServer {
	fuzzOnce.Do(func() {
		fs := &fuzzServer{}
		cfg := sampleConfig(f, dovecotsamples.Load(f)[0])
		cfg.Timeout = 2 * time.Second
		cfg.Routes = []Route{{User: "alice", Event: "MessageNew", Target: 3},
			{User: "bob", Event: "MessageNew", IP: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Target: 4}}
		deliver := func(target int, remote netip.AddrPort, body []byte) error {
			ev, err := event.Decode(body)
			switch {
			case err != nil:
				fs.fail("delivered a body event.Decode refuses: " + err.Error())
			case target != 3 || ev.User != "alice" || ev.Event != "MessageNew":
				fs.fail("delivered " + ev.User + " " + ev.Event + " to the wrong target")
			case !remote.Addr().IsLoopback():
				fs.fail("delivered from " + remote.String())
			}
			return nil
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			f.Fatal(err)
		}
		s := New(cfg, deliver, slog.New(fs))
		go s.Serve(ln)
		fs.addr = ln.Addr().String()
		fuzzSrv = fs
	})
	return fuzzSrv
}

// FuzzServe sends any bytes to the real server over a real connection,
// then closes its side, and reads every answer: each is one of the
// statuses of spec §3 or one net/http gives for a request it cannot
// parse, nothing is delivered that is not a valid event for a handler
// whose user, event and peer match, and no handler panics.
func FuzzServe(f *testing.F) {
	fs := startFuzzServer(f)
	for _, s := range dovecotsamples.Load(f) {
		r := sampleRequest(s, "127.0.0.1")
		f.Add([]byte(r))
		f.Add([]byte(r + r))
		f.Add([]byte(strings.Replace(r, `"user":"`, `"user":"bob`, 1)))
	}
	auth := "Authorization: Basic cHVzZXI6cHBhc3M=\r\n"
	for _, r := range []string{
		"PUT /notify HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n{\"user\":\"alice\",\"event\":\"MessageNew\"}\r\n0\r\n\r\n",
		"PUT /notify HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /notify HTTP/1.0\r\n" + auth + "Content-Type: text/plain\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
		"PUT /notify HTTP/1.1\r\nHost: x\r\n" + auth + "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
	} {
		f.Add([]byte(r))
	}
	statuses := map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 405: true, 408: true, 413: true, 415: true, 422: true,
		// net/http's own, for requests it does not hand to the handler.
		417: true, 431: true, 501: true, 505: true}
	f.Fuzz(func(t *testing.T, stream []byte) {
		c, err := net.Dial("tcp", fs.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// The server may close before reading everything (a refused
		// request): a failed write is its answer, not the fuzzer's error.
		c.Write(stream)
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		for {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
					t.Fatalf("reading the answers: %v", err)
				}
				break
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if !statuses[resp.StatusCode] {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
		for _, why := range fs.failures() {
			t.Error(why)
		}
	})
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}
