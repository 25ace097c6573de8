package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// Error is why a body was refused. Status is the HTTP answer: 400 when the
// body is not JSON, 422 when it is JSON but not a valid notification.
// Reason is short and safe to log: it never contains the whole body, and
// any piece of the body it quotes is truncated and escaped.
type Error struct {
	Status int
	Reason string
}

func (e *Error) Error() string {
	return "event: " + e.Reason
}

func invalid(reason string) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Reason: reason}
}

// The known fields, indexed so Decode can keep their raw values in an array
// instead of a map.
const (
	fUser = iota
	fEvent
	fFolder
	fUIDValidity
	fUID
	fFrom
	fSubject
	fSnippet
	fUnseen
	nFields
)

func fieldIndex(key string) int {
	switch key {
	case "user":
		return fUser
	case "event":
		return fEvent
	case "folder":
		return fFolder
	case "imap-uidvalidity":
		return fUIDValidity
	case "imap-uid":
		return fUID
	case "from":
		return fFrom
	case "subject":
		return fSubject
	case "snippet":
		return fSnippet
	case "unseen":
		return fUnseen
	}
	return -1
}

// Decode parses and validates one OX notification body.
//
// The body must be exactly one JSON value (surrounding whitespace allowed).
// Keys match exactly (encoding/json's struct decoding would match "USER"
// too); unknown keys are ignored; when a key appears twice the last one
// wins, as with encoding/json, and only that one is validated. JSON null
// for an optional field means absent. Numbers must be exact integers in
// the uint32 range: 5, 5.0 and 5e0 are the same; 5.5, 4294967296 and any
// number with a minus sign (-0 too) are refused.
//
// The error is always an *Error.
func Decode(body []byte) (Event, error) {
	// json.Valid is the strict part (grammar, one value, nothing after it)
	// and does not allocate; the scan below then only has to find the
	// spans of the top-level members of a document known to be valid.
	if !json.Valid(body) {
		return Event{}, syntaxError(body)
	}
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return Event{}, invalid("body is a JSON " + kind(body[i]) + ", not an object")
	}
	var raw [nFields][]byte
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		i++
	} else {
		for i < len(body) {
			ks := i
			i = skipString(body, i)
			key := body[ks:i]
			i = skipSpace(body, i)
			i = skipSpace(body, i+1) // the ':'
			vs := i
			i = skipValue(body, i)
			if f := keyIndex(key); f >= 0 {
				raw[f] = body[vs:i]
			}
			i = skipSpace(body, i)
			if i >= len(body) || body[i] == '}' {
				i++
				break
			}
			i = skipSpace(body, i+1) // the ','
		}
	}
	// Security: the scan above trusts json.Valid; make sure it really
	// consumed exactly the one object before anything is believed.
	if skipSpace(body, i) != len(body) || i > len(body) {
		return Event{}, &Error{Status: http.StatusBadRequest, Reason: "body is not JSON"}
	}
	return build(&raw)
}

func build(raw *[nFields][]byte) (Event, error) {
	var ev Event
	user, err := requiredString(raw[fUser], "user")
	if err != nil {
		return Event{}, err
	}
	if user == "" {
		return Event{}, invalid(`"user" is empty`)
	}
	if !ValidUser(user) {
		return Event{}, invalid(`"user" contains control characters`)
	}
	ev.User = user
	name, err := requiredString(raw[fEvent], "event")
	if err != nil {
		return Event{}, err
	}
	canon, ok := Canonical(name)
	if !ok {
		return Event{}, invalid("unknown event " + quoteShort(name))
	}
	ev.Event = canon

	// One allocation holds every optional value; the Event points into it.
	o := new(optional)
	if ev.Folder, err = optString(raw[fFolder], fFolder, &o.folder); err != nil {
		return Event{}, err
	}
	if ev.From, err = optString(raw[fFrom], fFrom, &o.from); err != nil {
		return Event{}, err
	}
	if ev.Subject, err = optString(raw[fSubject], fSubject, &o.subject); err != nil {
		return Event{}, err
	}
	if ev.Snippet, err = optString(raw[fSnippet], fSnippet, &o.snippet); err != nil {
		return Event{}, err
	}
	if ev.UIDValidity, err = optUint32(raw[fUIDValidity], fUIDValidity, &o.uidValidity); err != nil {
		return Event{}, err
	}
	if ev.Unseen, err = optUint32(raw[fUnseen], fUnseen, &o.unseen); err != nil {
		return Event{}, err
	}
	if v := raw[fUID]; v != nil && !isNull(v) {
		uids, err := parseUIDs(v)
		if err != nil {
			return Event{}, err
		}
		ev.UID = uids
	}
	return ev, nil
}

// optString decodes an optional string field into dst and returns dst,
// or nil when the field is absent or null.
func optString(v []byte, f int, dst *string) (*string, error) {
	if v == nil || isNull(v) {
		return nil, nil
	}
	s, ok := decodeString(v)
	if !ok {
		return nil, invalid(strconv.Quote(fieldName(f)) + " is not a string")
	}
	*dst = s
	return dst, nil
}

// optUint32 decodes an optional uint32 field into dst and returns dst, or
// nil when the field is absent or null.
func optUint32(v []byte, f int, dst *uint32) (*uint32, error) {
	if v == nil || isNull(v) {
		return nil, nil
	}
	n, why := parseUint32(v)
	if why != "" {
		return nil, invalid(strconv.Quote(fieldName(f)) + " " + why)
	}
	*dst = n
	return dst, nil
}

// optional backs the pointer fields of a decoded Event.
type optional struct {
	folder, from, subject, snippet string
	uidValidity, unseen            uint32
}

func fieldName(i int) string {
	return [nFields]string{"user", "event", "folder", "imap-uidvalidity",
		"imap-uid", "from", "subject", "snippet", "unseen"}[i]
}

func requiredString(v []byte, name string) (string, error) {
	if v == nil {
		return "", invalid(strconv.Quote(name) + " is missing")
	}
	s, ok := decodeString(v)
	if !ok {
		return "", invalid(strconv.Quote(name) + " is not a string")
	}
	return s, nil
}

// parseUIDs accepts a uint32 or a non-empty array of them.
func parseUIDs(v []byte) ([]uint32, error) {
	if v[0] != '[' {
		n, why := parseUint32(v)
		if why != "" {
			return nil, invalid(`"imap-uid" ` + why)
		}
		return []uint32{n}, nil
	}
	i := skipSpace(v, 1)
	if i < len(v) && v[i] == ']' {
		return nil, invalid(`"imap-uid" is an empty array`)
	}
	// Count the elements first so the slice is allocated once.
	uids := make([]uint32, 0, countElements(v))
	for i < len(v) {
		s := i
		i = skipValue(v, i)
		n, why := parseUint32(v[s:i])
		if why != "" {
			return nil, invalid(`"imap-uid" element ` + why)
		}
		uids = append(uids, n)
		i = skipSpace(v, i)
		if i >= len(v) || v[i] == ']' {
			break
		}
		i = skipSpace(v, i+1)
	}
	return uids, nil
}

// countElements counts the top-level commas of a valid, non-empty array.
func countElements(v []byte) int {
	n := 1
	for i := 1; i < len(v); {
		switch v[i] {
		case ',':
			n++
			i++
		case '"', '[', '{':
			i = skipValue(v, i)
		default:
			i++
		}
	}
	return n
}

// parseUint32 reads a JSON number that must be an exact integer fitting a
// uint32. It works on the decimal digits, not through float64, so that
// 4294967295.0000000001 is refused as a fraction instead of rounding.
// The returned reason is empty on success.
func parseUint32(v []byte) (uint32, string) {
	if len(v) == 0 || !(v[0] == '-' || ('0' <= v[0] && v[0] <= '9')) {
		return 0, "is not a number"
	}
	if v[0] == '-' {
		return 0, "is negative"
	}
	// Fast path: plain digits, as Dovecot sends them.
	if len(v) <= 10 {
		var n uint64
		plain := true
		for _, c := range v {
			if c < '0' || c > '9' {
				plain = false
				break
			}
			n = n*10 + uint64(c-'0')
		}
		if plain {
			if n > 1<<32-1 {
				return 0, "is out of range"
			}
			return uint32(n), ""
		}
	}
	// General JSON number: int [. frac] [e|E [+-] exp], known valid.
	i := 0
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		i++
	}
	intPart := v[:i]
	var frac []byte
	if i < len(v) && v[i] == '.' {
		s := i + 1
		i = s
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		frac = v[s:i]
	}
	exp := 0
	if i < len(v) && (v[i] == 'e' || v[i] == 'E') {
		i++
		neg := false
		if i < len(v) && (v[i] == '+' || v[i] == '-') {
			neg = v[i] == '-'
			i++
		}
		for ; i < len(v); i++ {
			// Saturate: any exponent past 100 already decides the answer.
			if exp < 1000 {
				exp = exp*10 + int(v[i]-'0')
			}
		}
		if neg {
			exp = -exp
		}
	}
	// value = digits × 10^(exp - len(frac)), digits without leading zeros.
	digits := make([]byte, 0, len(intPart)+len(frac))
	digits = append(append(digits, intPart...), frac...)
	exp -= len(frac)
	digits = bytes.TrimLeft(digits, "0")
	if len(digits) == 0 {
		return 0, ""
	}
	for len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	if exp < 0 {
		return 0, "is not an integer"
	}
	if len(digits)+exp > 10 {
		return 0, "is out of range"
	}
	var n uint64
	for _, c := range digits {
		n = n*10 + uint64(c-'0')
	}
	for ; exp > 0; exp-- {
		n *= 10
	}
	if n > 1<<32-1 {
		return 0, "is out of range"
	}
	return uint32(n), ""
}

// decodeString decodes a JSON string value. Strings without escapes and
// with valid UTF-8 (Dovecot's usual case) are converted directly; the rest
// go through encoding/json, which also replaces invalid UTF-8 with U+FFFD.
func decodeString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", false
	}
	return s, true
}

// keyIndex maps a raw, quoted key to its field. Escaped keys ("\u0075ser")
// are unescaped first so that they mean what encoding/json says they mean.
func keyIndex(key []byte) int {
	if len(key) < 2 {
		return -1
	}
	inner := key[1 : len(key)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return fieldIndex(string(inner)) // no allocation: the compiler sees the conversion
	}
	s, ok := decodeString(key)
	if !ok {
		return -1
	}
	return fieldIndex(s)
}

func isNull(v []byte) bool { return len(v) == 4 && string(v) == "null" }

func kind(c byte) string {
	switch c {
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// syntaxError explains, without echoing the body, why it is not JSON.
func syntaxError(body []byte) *Error {
	var v json.RawMessage
	err := json.Unmarshal(body, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &Error{Status: http.StatusBadRequest,
			Reason: fmt.Sprintf("body is not JSON: %s at offset %d", se.Error(), se.Offset)}
	}
	return &Error{Status: http.StatusBadRequest, Reason: "body is not JSON"}
}

// quoteShort quotes a piece of untrusted input for a Reason: escaped, and
// cut to a length that keeps log lines short.
func quoteShort(s string) string {
	const max = 40
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.QuoteToASCII(s[:cut]) + "…"
	}
	return strconv.QuoteToASCII(s)
}

// The scanning helpers below work on a document json.Valid accepted, so
// they only find where things end; they still never index past the end.

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just after the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return min(i, len(b)) // a trailing backslash must not step past the end
}

// skipValue returns the index just after the value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}
