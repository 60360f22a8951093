//go:build !chaos

// Package failpoint marks the points where fault tests kill the process. Without the
// chaos build tag (every normal build) Hit is an empty function the compiler inlines
// away; with it (go build -tags chaos), Hit SIGKILLs the process when the point is named
// in $SAMSA_FAILPOINT (see failpoint_chaos.go).
package failpoint

// Hit is a no-op in normal builds.
func Hit(name string) {}

// Enabled reports whether fail-points are compiled in.
const Enabled = false
