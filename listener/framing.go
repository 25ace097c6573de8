package listener

import "bytes"

// Why the raw bytes are looked at: net/http (transfer.go, readTransfer)
// deletes Transfer-Encoding from Request.Header in parseTransferEncoding,
// and then, when it is chunked, fixLength deletes Content-Length too (RFC
// 9112 §6.3: Transfer-Encoding overrides Content-Length). By the time a
// handler runs, a request that carried both looks exactly like a plain
// chunked one: Header has neither, ContentLength is -1, TransferEncoding
// is ["chunked"]. On HTTP/1.0 it deletes Transfer-Encoding and uses
// Content-Length, again leaving no trace. No hook runs between parsing the
// headers and fixLength, so the only place that sees both is the byte
// stream itself: framing follows it from the connection's reads (the
// plaintext: TLS is terminated below it, see conn).
//
// To know where each request's headers start on a keep-alive connection,
// framing follows the bodies too (Content-Length bytes, or chunked
// encoding), so pipelined requests read together are each judged. It
// never decides what net/http does: it only tells the handler what the
// headers of the request it is handling were. When it cannot be sure
// (anything net/http would refuse, or a disagreement with the request net/
// http parsed, see verdict.matches), it gives up for the rest of the
// connection; the handler then refuses chunked requests there (the only
// ones that can hide a Content-Length), as no client that is not probing
// for smuggling gets there.

// verdict is what framing saw in one request's headers.
type verdict struct {
	cl      bool  // a Content-Length header was present
	te      bool  // a Transfer-Encoding header was present
	chunked bool  // the body is chunked, as net/http frames it
	length  int64 // the Content-Length when cl and not chunked
}

// matches reports whether v can be the verdict of a request net/http
// parsed with this content length (-1: chunked) and transfer encoding: a
// mismatch means framing lost its place.
func (v verdict) matches(contentLength int64, transferEncoding []string) bool {
	chunked := len(transferEncoding) > 0
	if v.chunked != chunked {
		return false
	}
	if chunked {
		return contentLength < 0
	}
	if !v.cl {
		return contentLength == 0
	}
	return contentLength == v.length
}

const (
	frRequestLine = iota // before or in the request line
	frHeader             // in the header lines
	frBody               // in a Content-Length body: remain bytes left
	frChunkSize          // in a chunk-size line
	frChunkData          // in chunk data: remain bytes left
	frChunkEnd           // in the CRLF after chunk data: remain bytes left
	frTrailer            // in the trailer lines after the last chunk
	frLost               // gave up for the rest of the connection
)

// maxVerdicts bounds the verdicts waiting for their handler. net/http reads
// ahead at most its 4 KiB buffer, so more than this many requests ahead
// means a client pipelining tiny requests on purpose.
const maxVerdicts = 32

// lineKeep is how much of a line framing keeps: enough for the longest
// header name it looks for and a Content-Length value with some spaces.
const lineKeep = 64

// framing follows the HTTP/1.1 message framing of one connection's byte
// stream. It is not safe for concurrent use (conn locks it).
type framing struct {
	state  int
	remain int64
	line   [lineKeep]byte
	n      int  // bytes of the current line in line (at most lineKeep)
	long   bool // the current line was longer than lineKeep
	cur    verdict
	curCL  int64 // the Content-Length seen; -1 none, -2 invalid or conflicting
	nTE    int   // Transfer-Encoding lines seen
	// ready[head:] are the verdicts waiting; the array is reused once
	// they are all taken, so a keep-alive connection allocates it once.
	ready []verdict
	head  int
}

// next returns the verdict of the oldest request whose headers were read
// and not yet handled. ok is false when framing has lost its place.
func (f *framing) next() (v verdict, ok bool) {
	if f.head == len(f.ready) { // lose empties it
		return verdict{}, false
	}
	v = f.ready[f.head]
	f.head++
	if f.head == len(f.ready) {
		f.ready, f.head = f.ready[:0], 0
	}
	return v, true
}

// lose gives up for the rest of the connection.
func (f *framing) lose() {
	f.state, f.ready, f.head = frLost, nil, 0
}

// feed follows p, the next bytes read from the connection.
func (f *framing) feed(p []byte) {
	for len(p) > 0 {
		switch f.state {
		case frLost:
			return
		case frBody, frChunkData:
			n := min(int64(len(p)), f.remain)
			p, f.remain = p[n:], f.remain-n
			if f.remain == 0 {
				if f.state == frBody {
					f.state = frRequestLine
				} else {
					f.state, f.remain = frChunkEnd, 2
				}
			}
		case frChunkEnd:
			want := byte('\n')
			if f.remain == 2 {
				want = '\r'
			}
			if p[0] != want {
				f.lose() // net/http: "malformed chunked encoding"
				return
			}
			p, f.remain = p[1:], f.remain-1
			if f.remain == 0 {
				f.state = frChunkSize
			}
		case frRequestLine:
			if f.n == 0 && !f.long && (p[0] == '\r' || p[0] == '\n') {
				p = p[1:] // blank lines between requests
				continue
			}
			fallthrough
		default: // a line: request line, header, chunk size, trailer
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				f.keep(p)
				return
			}
			f.keep(p[:i])
			p = p[i+1:]
			f.endLine()
			f.n, f.long = 0, false
		}
	}
}

func (f *framing) keep(b []byte) {
	c := copy(f.line[f.n:], b)
	f.n += c
	if c < len(b) {
		f.long = true
	}
}

// endLine acts on the line just ended (in f.line, without its LF).
func (f *framing) endLine() {
	line := f.line[:f.n]
	if !f.long {
		line = bytes.TrimSuffix(line, []byte{'\r'})
	}
	switch f.state {
	case frRequestLine:
		f.state, f.cur, f.curCL, f.nTE = frHeader, verdict{}, -1, 0
	case frHeader:
		if len(line) == 0 && !f.long {
			f.endHeaders()
			return
		}
		f.header(line)
	case frChunkSize:
		size, ok := parseChunkSize(line, f.long)
		switch {
		case !ok:
			f.lose()
		case size == 0:
			f.state = frTrailer
		default:
			f.state, f.remain = frChunkData, size
		}
	case frTrailer:
		if len(line) == 0 && !f.long {
			f.state = frRequestLine
		}
	}
}

// header records a Content-Length or Transfer-Encoding line. Names are
// matched as textproto does: case-insensitively, the colon right after
// (a space before it is an error there, so never a header).
func (f *framing) header(line []byte) {
	name, value, ok := bytes.Cut(line, []byte{':'})
	if !ok {
		return
	}
	switch {
	case bytes.EqualFold(name, []byte("Content-Length")):
		f.cur.cl = true
		n := int64(-2)
		if !f.long {
			n = parseLength(bytes.Trim(value, " \t"))
		}
		switch {
		case f.curCL == -1:
			f.curCL = n
		case f.curCL != n:
			f.curCL = -2 // net/http refuses differing values
		}
	case bytes.EqualFold(name, []byte("Transfer-Encoding")):
		f.cur.te = true
		f.nTE++
		f.cur.chunked = f.nTE == 1 && !f.long && bytes.EqualFold(bytes.Trim(value, " \t"), []byte("chunked"))
	}
}

// endHeaders queues the request's verdict and moves on to its body.
func (f *framing) endHeaders() {
	v := f.cur
	if len(f.ready)-f.head == maxVerdicts {
		f.lose()
		return
	}
	switch {
	case v.cl && v.te:
		// Answered 400 and closed: nothing after it matters.
		f.ready = append(f.ready, v)
		f.state = frLost
		return
	case v.te && !v.chunked:
		f.lose() // net/http answers 501 and closes
		return
	case v.chunked:
		f.state = frChunkSize
	case v.cl && f.curCL < 0:
		f.lose() // net/http answers 400 and closes
		return
	case v.cl:
		v.length = f.curCL
		f.state, f.remain = frBody, f.curCL
		if f.remain == 0 {
			f.state = frRequestLine
		}
	default:
		f.state = frRequestLine
	}
	f.ready = append(f.ready, v)
}

// parseLength parses a Content-Length value as net/http does (digits only,
// at most 63 bits), or returns -2.
func parseLength(b []byte) int64 {
	if len(b) == 0 || len(b) > 18 {
		return -2 // 18 digits stay below 2^63; more is no real body
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return -2
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// parseChunkSize parses a chunk-size line as net/http does: hex digits,
// then optional whitespace and a chunk extension after ';'. Anything else
// is not ok, and neither is a size framing cannot hold.
func parseChunkSize(line []byte, long bool) (int64, bool) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	} else if long {
		return 0, false // a size line over lineKeep without extension
	}
	line = bytes.TrimRight(line, " \t")
	if len(line) == 0 || len(line) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | int64(c)
	}
	return n, true
}
