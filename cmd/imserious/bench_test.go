//go:build linux

package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imserious/imserious/internal/daemontest"
)

// BenchmarkNotifyThroughDaemon measures what Dovecot waits for: one
// notification over a keep-alive connection to the real binary, through the
// network process to the exec process's socket, until the 200 arrives.
// As root the processes run privilege-separated, as in production. It
// reports the median and 99th percentile besides the mean.
func BenchmarkNotifyThroughDaemon(b *testing.B) {
	user, _ := account(b, "imse_alice")
	privsep := daemontest.PrivsepTOML(b)
	// limit_period keeps the command (which is not what is measured) from
	// running more than once; the events coalesce behind it.
	cfg := fmt.Sprintf("listen = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n%s\n[[handler]]\nuser = %q\ncommand = \"/bin/true\"\nlimit_period = \"1h\"\n",
		privsep, user)
	d := daemontest.Start(b, cfg, daemontest.Options{})
	url := "http://" + d.Addr + "/notify"
	body := fmt.Sprintf(body1, user, 1)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		req, _ := http.NewRequest("PUT", url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(start))
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
