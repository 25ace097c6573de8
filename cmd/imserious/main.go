// Command imserious runs commands when Dovecot's push notification driver
// reports new mail. See imserious(8) and imserious.toml(5).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/imserious/imserious/config"
	"github.com/imserious/imserious/daemon"
	"github.com/imserious/imserious/internal/sdnotify"
	"github.com/imserious/imserious/logging"
	"github.com/imserious/imserious/privsep"
	"github.com/imserious/imserious/tlsreload"
)

// Version is set at build time by the Makefile.
var Version = "devel"

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `usage: imserious [-dn] [-c file] [file]
       imserious -V
  -c, --config file   the configuration (default %s)
  -d                  log at debug level (IMSERIOUS_LOG overrides)
  -n, -t, --test      check the configuration and exit
  -V, -v, --version   print the version and exit
  -h, --help          print this help and exit
`, config.DefaultPath)
}

func run(args []string, stdout, stderr io.Writer) int {
	// Children: "imserious -R net" or "imserious -R exec:NAME", started by
	// the parent with the control channel on fd 3.
	if len(args) == 3 && args[1] == "-R" {
		return runChild(args[2], stdout)
	}

	fs := flag.NewFlagSet("imserious", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// Ours and the original's spellings (-v, -t, --config, --test,
	// --version, --help); flag takes -x and --x alike.
	var debug, check, version, help bool
	var cfgFlag string
	fs.BoolVar(&debug, "d", false, "")
	for _, name := range []string{"n", "t", "test"} {
		fs.BoolVar(&check, name, false, "")
	}
	for _, name := range []string{"V", "v", "version"} {
		fs.BoolVar(&version, name, false, "")
	}
	for _, name := range []string{"h", "help"} {
		fs.BoolVar(&help, name, false, "")
	}
	for _, name := range []string{"c", "config"} {
		fs.StringVar(&cfgFlag, name, "", "")
	}
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(stderr, "imserious: %v\n", err)
		usage(stderr)
		return 1
	}
	if help {
		usage(stdout)
		return 0
	}
	if version {
		fmt.Fprintln(stdout, "imserious", Version)
		return 0
	}
	path := config.DefaultPath
	switch {
	case fs.NArg() > 1, fs.NArg() == 1 && cfgFlag != "":
		usage(stderr)
		return 1
	case fs.NArg() == 1:
		path = fs.Arg(0)
	case cfgFlag != "":
		path = cfgFlag
	}
	root := os.Geteuid() == 0

	cfg, err := config.Load(path)
	if err == nil {
		err = cfg.Resolve(root)
	}
	if err == nil {
		cfg.ForgetSource() // the parent keeps cfg until the next reload
	}
	var level slog.Level
	var levelNote string
	if err == nil {
		level, levelNote, err = logging.EffectiveLevelNote(cfg.Log.MaxLevel, debug, os.Getenv)
		if err != nil {
			err = fmt.Errorf("IMSERIOUS_LOG: %w", err)
		}
	}
	if err == nil && (check) {
		// Build every message start-up would send, so that -n never
		// calls good a configuration that cannot start.
		err = daemon.Check(cfg, root, daemon.NewLogOptions(level, cfg.Log))
	}
	if check {
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if cfg.TLS != nil && cfg.TLS.Pair != nil {
			// Say what would be served and for how long.
			pair, now := cfg.TLS.Pair, time.Now()
			fmt.Fprintf(stderr, "tls: %s\n", pair.Summary(now))
			if left := pair.Remaining(now); left <= 0 {
				fmt.Fprintf(stderr, "warning: tls: certificate %s expired %s ago\n", pair.CertFile, tlsreload.Approx(-left))
			} else if left <= tlsreload.WarnBefore {
				fmt.Fprintf(stderr, "warning: tls: certificate %s expires in %s\n", pair.CertFile, tlsreload.Approx(left))
			}
		}
		for _, w := range cfg.Warnings() {
			fmt.Fprintf(stderr, "warning: %s\n", w)
		}
		if levelNote != "" {
			fmt.Fprintf(stderr, "note: %s\n", levelNote)
		}
		fmt.Fprintln(stderr, "configuration OK")
		return 0
	}
	if err != nil {
		// No logger configured yet: the reason is the last line of output.
		log := plainLog(stdout)
		for _, line := range strings.Split(err.Error(), "\n") {
			log.Error(line)
		}
		log.Error("configuration invalid, not starting", "file", path)
		return 1
	}

	logOpt := daemon.NewLogOptions(level, cfg.Log)
	out := stdout
	var childOutput func(string) (io.Writer, io.Writer, func())
	if cfg.Log.Output == "syslog" {
		// Every process's lines reach syslog through the parent: the
		// children write to pipes the parent reads, one stream each, and
		// no child opens a socket (a chroot and a sandbox forbid it).
		sys, err := logging.DialSyslog("", cfg.Log.SyslogSocket, cfg.Log.FacilityCode, "imserious")
		if err != nil {
			log := plainLog(stdout)
			log.Error("cannot log to syslog, not starting", "socket", cfg.Log.SyslogSocket, "err", err)
			return 1
		}
		defer sys.Close()
		own := sys.Stream(logging.SeverityInfo)
		defer own.Close()
		out = own
		childOutput = func(string) (io.Writer, io.Writer, func()) {
			o, e := sys.Stream(logging.SeverityInfo), sys.Stream(logging.SeverityErr)
			return o, e, func() { o.Close(); e.Close() }
		}
	}
	opts := logging.Options{Level: level, Format: cfg.Log.Format, ANSI: cfg.Log.ANSI,
		Timestamp: cfg.Log.Timestamp, Target: cfg.Log.Target, ShowLevel: cfg.Log.Level, Priority: logOpt.Priority}
	log := logging.New(out, opts, "parent")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The status a signal asks for is written whatever max_level says.
	opts.Level = logging.LevelTrace
	statusLog := logging.New(out, opts, "parent")
	p := &daemon.Parent{Config: cfg, Root: root, Log: log, LogOpt: logOpt, Stdout: stdout, ChildOutput: childOutput,
		StatusLog: statusLog}
	// SIGHUP reloads the configuration (and the TLS pair); by default it
	// would kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			if !p.Reload("SIGHUP") {
				log.Warn("SIGHUP before the daemon is serving, ignored")
			}
		}
	}()
	info := make(chan os.Signal, 1)
	signal.Notify(info, statusSignal)
	defer signal.Stop(info)
	go func() {
		for range info {
			p.LogStatus()
		}
	}()

	log.Info("starting", "version", Version, "config", path)
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	if levelNote != "" {
		log.Info(levelNote)
	}
	// Under systemd (Type=notify): READY=1 once serving, RELOADING=1 and
	// READY=1 around a reload, STOPPING=1.
	notifier, err := sdnotify.Open()
	if err != nil {
		log.Warn("cannot reach the service manager, not notifying it", "err", err)
	}
	defer notifier.Close()
	p.Notify = notifier
	if err := p.Run(ctx); err != nil {
		log.Error("fatal", "err", err)
		return 1
	}
	return 0
}

// plainLog is the logger of the last words before the configuration's
// is known: the reason is the last line of output.
func plainLog(w io.Writer) *slog.Logger {
	return logging.New(w, logging.Options{Level: slog.LevelInfo, Format: "full", ShowLevel: true}, "parent")
}

func runChild(role string, stdout io.Writer) int {
	// A child ignores the terminal's signals: the parent decides when it
	// stops (it sits in its own process group anyway). Notify, not Ignore:
	// an ignored signal would stay ignored in the commands it starts.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE)

	ctl, err := privsep.ParentConn()
	if err != nil {
		fmt.Fprintf(stdout, "imserious %s: %v\n", role, err)
		return 1
	}
	switch {
	case role == "net":
		err = daemon.RunNet(ctl, stdout)
	case strings.HasPrefix(role, "exec:"):
		err = daemon.RunExec(ctl, strings.TrimPrefix(role, "exec:"), stdout)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return 0
		}
		// The parent logs the last words in the daemon's format; only
		// when it cannot be told are they written here, plainly.
		if !daemon.ReportFatal(ctl, err) {
			fmt.Fprintf(stdout, "imserious %s: %v\n", role, err)
		}
		return 1
	}
	return 0
}
