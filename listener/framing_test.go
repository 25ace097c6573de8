package listener

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
)

// feedAll feeds stream to a fresh framing in pieces of at most step bytes,
// as reads of a slow client would split it.
func feedAll(stream string, step int) *framing {
	f := &framing{}
	for s := stream; s != ""; {
		n := min(step, len(s))
		f.feed([]byte(s[:n]))
		s = s[n:]
	}
	return f
}

func TestFraming(t *testing.T) {
	const h = "PUT /notify HTTP/1.1\r\nHost: x\r\n"
	const smuggle = "GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	cl := func(body string) string { return h + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body }
	tests := []struct {
		name   string
		stream string
		want   []verdict // nil entries past the end: none
		lost   bool      // framing gives up after them
	}{
		{"content-length", cl(goodBody), []verdict{{cl: true, length: int64(len(goodBody))}}, false},
		{"no body", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", []verdict{{}}, false},
		{"pipelined", cl(goodBody) + cl("") + "GET / HTTP/1.1\r\n\r\n", []verdict{{cl: true, length: int64(len(goodBody))}, {cl: true}, {}}, false},
		{"body looks like a request", cl(smuggle) + cl("x"), []verdict{{cl: true, length: int64(len(smuggle))}, {cl: true, length: 1}}, false},
		{"chunked, then another", h + "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n" + cl("x"),
			[]verdict{{te: true, chunked: true}, {cl: true, length: 1}}, false},
		{"chunked with trailer", h + "transfer-encoding: CHUNKED\r\n\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n" + cl(""),
			[]verdict{{te: true, chunked: true}, {cl: true}}, false},
		{"both", h + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + cl("x"), []verdict{{cl: true, te: true, chunked: true}}, true},
		{"both, TE first, odd case", h + "TRANSFER-ENCODING: chunked\r\ncontent-length: 4\r\n\r\n", []verdict{{cl: true, te: true, chunked: true}}, true},
		{"both on HTTP/1.0", "PUT / HTTP/1.0\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n", []verdict{{cl: true, te: true, chunked: true}}, true},
		{"folded line is not a header", h + "X: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", []verdict{{cl: true}}, false},
		{"space before colon is not a header", h + "Transfer-Encoding : chunked\r\nContent-Length: 0\r\n\r\n", []verdict{{cl: true}}, false},
		{"two lengths", h + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n", nil, true},
		{"same length twice", h + "Content-Length: 1\r\nContent-Length:  1 \r\n\r\nx", []verdict{{cl: true, length: 1}}, false},
		{"gzip", h + "Transfer-Encoding: gzip\r\n\r\n", nil, true},
		{"bad chunk end", h + "Transfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n", nil, true},
		{"bad chunk size", h + "Transfer-Encoding: chunked\r\n\r\nzz\r\n", nil, true},
		{"bare LF headers", "PUT / HTTP/1.1\nContent-Length: 1\n\nx" + "GET / HTTP/1.1\n\n", []verdict{{cl: true, length: 1}, {}}, false},
		{"long header lines", h + "X-Long: " + strings.Repeat("a", 500) + "\r\nContent-Length: 1\r\n\r\nx", []verdict{{cl: true, length: 1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, step := range []int{1, 3, 7, len(tt.stream)} {
				f := feedAll(tt.stream, step)
				var got []verdict
				for {
					v, ok := f.next()
					if !ok {
						break
					}
					got = append(got, v)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("step %d: verdicts %+v, want %+v", step, got, tt.want)
				}
				for i := range got {
					if got[i] != tt.want[i] {
						t.Errorf("step %d: verdict %d = %+v, want %+v", step, i, got[i], tt.want[i])
					}
				}
				if lost := f.state == frLost; lost != tt.lost {
					t.Errorf("step %d: lost %v, want %v", step, lost, tt.lost)
				}
			}
		})
	}
}

// FuzzFraming holds framing to net/http's reading of the same bytes, as
// the handler uses it (conn.verdict): for each request net/http reads,
// framing has given up, or has a verdict saying rightly whether the raw
// header block had Content-Length and Transfer-Encoding. A verdict with
// both ends the connection; one that does not match the request net/http
// parsed makes the handler give up. Framing may give up early; it must
// never be wrong.
func FuzzFraming(f *testing.F) {
	const h = "PUT /notify HTTP/1.1\r\nHost: x\r\n"
	for _, s := range []string{
		h + "Content-Length: 3\r\n\r\nabc" + h + "\r\n",
		h + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" + h + "Content-Length: 1\r\n\r\nx",
		h + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
		"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\nx",
		h + "Transfer-Encoding: chunked\r\n\r\n1;a=b\r\nx\r\n0\r\nT: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n\r\n" + h + "\r\n",
		h + "X: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := &framing{}
		fr.feed(stream)
		src := bytes.NewReader(stream)
		br := bufio.NewReader(src)
		for i := 0; ; i++ {
			start := len(stream) - src.Len() - br.Buffered()
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, err = io.Copy(io.Discard, r.Body)
			if err != nil {
				return
			}
			v, ok := fr.next()
			if !ok {
				return // gave up: allowed, as the handler then refuses chunked requests
			}
			both := v.cl && v.te
			if !both && !v.matches(r.ContentLength, r.TransferEncoding) {
				return // the handler gives up here
			}
			cl, te := rawHeaders(t, stream[start:])
			if v.cl != cl || v.te != te {
				t.Fatalf("request %d: verdict %+v, raw headers have Content-Length %v Transfer-Encoding %v", i, v, cl, te)
			}
			if both {
				return // answered 400, connection closed
			}
		}
	})
}

// rawHeaders reports whether the header block at the start of b (after
// the request line) has the two headers, as textproto reads it before
// net/http deletes them.
func rawHeaders(t *testing.T, b []byte) (cl, te bool) {
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		line, err := tp.ReadLine()
		if err != nil {
			t.Fatalf("no request line in what net/http read: %v", err)
		}
		if line != "" {
			break // the request line, after blank lines net/http skipped
		}
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatalf("headers net/http read: %v", err)
	}
	_, cl = h["Content-Length"]
	_, te = h["Transfer-Encoding"]
	return cl, te
}
