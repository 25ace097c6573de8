package bare

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/imserious/imserious/internal/dovecotsamples"
)

// The bare server answers Dovecot's captured requests as imserious does,
// 200, and what is not a notification with imserious's 4xx.
func TestHandler(t *testing.T) {
	h := Handler()
	do := func(method, body string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, "/notify", strings.NewReader(body)))
		if w.Body.Len() != 0 {
			t.Errorf("%s %.20q: body %q, want none", method, body, w.Body)
		}
		return w.Code
	}
	for _, s := range dovecotsamples.Load(t) {
		if got := do("PUT", string(s.Body)); got != http.StatusOK {
			t.Errorf("%s: %d, want 200", s.Case, got)
		}
	}
	for _, tc := range []struct {
		method, body string
		want         int
	}{
		{"POST", `{"user":"a","event":"MessageNew"}`, 200},
		{"GET", "", 405},
		{"PUT", "not json", 400},
		{"PUT", `{"user":"a","event":"MessageNew","unseen":"x"}`, 400},
		{"PUT", `{"event":"MessageNew"}`, 422},
		{"PUT", `{"user":"a","event":"MessageNew","subject":"` + strings.Repeat("x", MaxBody) + `"}`, 413},
	} {
		if got := do(tc.method, tc.body); got != tc.want {
			t.Errorf("%s %.40q: %d, want %d", tc.method, tc.body, got, tc.want)
		}
	}
}

// Server speaks HTTP/1.1 only, over TLS as in clear.
func TestServer(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = Server(nil)
	srv.EnableHTTP2 = false
	srv.StartTLS()
	defer srv.Close()
	c := srv.Client()
	c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, err := c.Post(srv.URL+"/notify", "application/json", bytes.NewReader(dovecotsamples.Load(t)[0].Body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 1 {
		t.Errorf("%s %d, want HTTP/1.1 200", resp.Proto, resp.StatusCode)
	}
}
