package control

import (
	"fmt"
	"net"
	"time"
)

// Do sends one request to the control socket at path and returns the
// answer. timeout bounds the whole exchange.
func Do(path string, req Request, timeout time.Duration) (*Response, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w (is imserious running, and are you root?)", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if err := WriteFrame(c, req, MaxRequest); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := ReadFrame(c, &resp, MaxResponse); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &resp, nil
}
