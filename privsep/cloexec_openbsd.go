package privsep

// closeOnExecRange loops: OpenBSD has closefrom(2) but nothing that only
// sets the flag, and its descriptor limits are small.
func closeOnExecRange(first int) error {
	return closeOnExecLoop(first)
}
