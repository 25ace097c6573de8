// Command imseriousctl prints the Dovecot configuration matching an
// imserious configuration and tells which handlers a notification would
// trigger. See imseriousctl(8).
package main

import (
	"fmt"
	"io"
	"os"
)

// Version is set at build time by the Makefile.
var Version = "devel"

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "usage: imseriousctl [-c file] dovecot [2.3|2.4]\n       imseriousctl [-c file] check [-i ip] file|-\n       imseriousctl -V")
	return 2
}
