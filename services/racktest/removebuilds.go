package racktest

// RemoveBuilds removes the binaries Build made, for a command (a benchmark)
// that builds a rack outside a test and so has no Main to do it.
func RemoveBuilds() { removeBuilds() }
