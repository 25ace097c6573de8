// Package dovecotsamples holds the requests captured from Dovecot
// 2.3.19.1's OX push driver (dovecot-ox-samples.jsonl, one JSON object a
// line), embedded so that every package's tests replay the same captures
// from one copy of the file.
package dovecotsamples

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
)

//go:embed dovecot-ox-samples.jsonl
var jsonl []byte

// Count is how many requests were captured: a file that parses to another
// number is damaged.
const Count = 20

// Sample is one captured request.
type Sample struct {
	Case        string   // what the capture exercises, unique in the file
	RequestLine string   // e.g. "PUT /notify HTTP/1.1"
	Headers     []string // "Name: value", in the order Dovecot sent them
	Body        []byte   // exactly as sent
}

// line is one line of the file. The body is stored twice: body_b64 is the
// exact bytes, body the same as a readable string, checked to agree.
type line struct {
	Case        string   `json:"case"`
	RequestLine string   `json:"request_line"`
	Headers     []string `json:"headers"`
	Body        string   `json:"body"`
	BodyB64     string   `json:"body_b64"`
}

// All parses the embedded captures. Every call returns fresh slices, so a
// caller may change them.
func All() ([]Sample, error) {
	return parse(jsonl, Count)
}

// Load is All for tests: it fails tb if the captures do not parse.
func Load(tb testing.TB) []Sample {
	tb.Helper()
	s, err := All()
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func parse(data []byte, want int) ([]Sample, error) {
	var out []Sample
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		n := len(out) + 1
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("dovecot samples line %d: %w", n, err)
		}
		body, err := base64.StdEncoding.DecodeString(l.BodyB64)
		if err != nil {
			return nil, fmt.Errorf("dovecot samples line %d (%s): body_b64: %w", n, l.Case, err)
		}
		if string(body) != l.Body {
			return nil, fmt.Errorf("dovecot samples line %d (%s): body_b64 and body differ", n, l.Case)
		}
		out = append(out, Sample{Case: l.Case, RequestLine: l.RequestLine, Headers: l.Headers, Body: body})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("dovecot samples: %w", err)
	}
	if len(out) != want {
		return nil, fmt.Errorf("dovecot samples: %d samples, want %d", len(out), want)
	}
	return out, nil
}
