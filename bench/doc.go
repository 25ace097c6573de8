// Package bench measures imserious against the ceiling of the machine it
// runs on: the real daemon, privilege-separated as in production when
// run as root, beside a bare net/http server (bench/bare, started from
// bench/cmd/imserious-bare) doing the least a notification endpoint can
// do, both driven by the same load generator (bench/load) on loopback.
//
// The driver is TestBench (bench_test.go). It runs only when asked to:
//
//	IMSERIOUS_BENCH=full  IMSERIOUS_BIN=./imserious go test -v -run '^TestBench$' ./bench/
//	IMSERIOUS_BENCH=smoke ...   # about 10 s: checks that every part works
//
// and prints one table: requests per second, p50/p99/max latency, the
// CPU time per request of the server's processes and of the client (this
// test's process, which also reads the servers' log lines; on a machine
// whose CPUs are all busy, the ratio is about that of the sums) and the
// ratio for HTTP and HTTPS (ECDSA P-256, and RSA-2048 for reference),
// keep-alive and a new connection per request, measured in pairs that
// alternate bare (A) and imserious (B) so that drift of the machine
// cancels; for HTTP and for HTTPS with ECDSA, two reference rows each
// of the floor of the process shape, bare against bare handing every
// body to a second process in a session of its own that decodes it
// again (imserious-bare -forward), batched after the answers as
// imserious hands its events over: what the hand-over costs by itself,
// without imserious's own work, so that imserious's ratio reads against
// the floor's rather than 1 (a line says whether the floor reaches each
// target); the time from a request to its command's start; a burst of
// notifications against limit_burst = 1; start-up time and memory with
// 10,000 handlers; as root, 10,000 distinct users through one wildcard
// handler (user = "*": start-up, every user's run, the exec process's
// memory after the runs, once every user is idle again, and with a run
// pending for every user at once) and 100 accounts with their own hooks
// notified at once (run_as = "%n", an exec process each started on
// demand: the time until every hook ran, and until every exec process
// went after exec_idle; the accounts imse_b000 ... are created when
// missing and left in place). Each figure is printed beside the issue's
// target for it, with the machine's load average before and after: the
// figures mean little when something else ran meanwhile. The smoke runs
// the wildcard rows with 1,000 users and 10 accounts, and fails if a
// user's command or a hook never ran or an exec process stayed.
//
// The knobs, all optional: IMSERIOUS_BARE_BIN names a prebuilt bare
// server (otherwise one is built for the run); IMSERIOUS_BENCH_RUN picks
// parts (a comma list of http, https, command, burst, wildcard, hooks);
// IMSERIOUS_BENCH_PAIRS, IMSERIOUS_BENCH_TIME (one phase, a Go duration),
// IMSERIOUS_BENCH_CONNS and IMSERIOUS_BENCH_SAMPLES (of the
// request-to-command measurement) change the defaults (3 pairs of 3s, 8
// connections, 1000 samples).
package bench
