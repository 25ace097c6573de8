package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/privsep"
)

// FuzzConfigToChildren follows any configuration text the way -n and
// start-up take it: parsed, resolved (as a user, not root), turned into
// the streams the parent sends. What Check calls good, every child must
// accept exactly: the exec processes' streams build their handlers, the
// network process's validates. What it refuses is refused for a reason
// (a message over the frame size).
func FuzzConfigToChildren(f *testing.F) {
	for _, glob := range []string{"../config/testdata/*.toml", "../etc/*.sample"} {
		files, _ := filepath.Glob(glob)
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for _, s := range []string{
		"[[handler]]\nuser = \"alice\"\ncommand = \"/bin/true\"\n",
		"allow = [\"10.0.0.0/8\", \"::1\"]\n[auth]\nuser = \"u\"\npass = \"p\"\n[[handler]]\nuser = \"a@b\"\nevent = \"flagsset\"\ncommand = [\"true\", \"x y\"]\nip = [\"127.0.0.1\"]\nenv = { K = \"v\" }\ndelay = \"1s\"\nperiodic = \"1h\"\n",
		"[[handler]]\nuser = \"alice\"\ncommand = \"/bin/true\"\n[[handler]]\nuser = \"alice\"\ncommand = \"/bin/echo\"\nlimit_burst = 3\nlimit_period = \"2 days\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse("/fuzz/imserious.toml", data)
		if err != nil {
			return
		}
		if err := cfg.Resolve(false); err != nil {
			return
		}
		checked := Check(cfg, false, testLog)
		st, err := streamsFor(cfg, false, testLog, nil, 1, nil)
		if (checked == nil) != (err == nil) {
			t.Fatalf("Check says %v, the streams %v", checked, err)
		}
		if err != nil {
			if !errors.Is(err, privsep.ErrOversize) {
				t.Fatalf("a resolved configuration that cannot be sent for another reason than size: %v", err)
			}
			return
		}
		for acct, msgs := range st.exec {
			c := &execConfig{}
			if err := feedStream(msgs, c.add); err != nil {
				t.Fatalf("exec[%s] refuses its stream: %v", acct, err)
			}
			hs, err := c.build(acct)
			if err != nil {
				t.Fatalf("exec[%s] refuses its configuration: %v", acct, err)
			}
			want := 0
			for _, h := range cfg.Handlers {
				if h.Account.Name == acct {
					want++
				}
			}
			if len(hs) != want {
				t.Fatalf("exec[%s] got %d handlers, want %d", acct, len(hs), want)
			}
		}
		n := &netConfig{}
		if err := feedStream(st.net, n.add); err != nil {
			t.Fatalf("net refuses its stream: %v", err)
		}
		if err := n.validate(); err != nil {
			t.Fatalf("net refuses its configuration: %v", err)
		}
		if len(n.routes) != len(cfg.Handlers) {
			t.Fatalf("net got %d routes for %d handlers", len(n.routes), len(cfg.Handlers))
		}
	})
}

// feedStream is what a child does with a stream: checkMsg on its
// channel, the brackets, then add for each item.
func feedStream(msgs []outMsg, add func(privsep.Msg) error) error {
	var s stream
	for _, om := range msgs {
		m := privsep.Msg{Type: om.typ, Payload: om.payload}
		var err error
		switch om.typ {
		case msgCfgBegin:
			err = s.begin(m)
		case msgCfgEnd:
			err = s.end(m)
		default:
			if err = s.item(m); err == nil {
				err = add(m)
			}
		}
		if err != nil {
			return err
		}
	}
	if s.open || s.last != 1 {
		return errors.New("the stream did not end")
	}
	return nil
}
