//go:build chaos

package failpoint

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Enabled reports whether fail-points are compiled in.
const Enabled = true

// $SAMSA_FAILPOINT is "name" or "name:N" (kill on the N-th hit, default 1) or
// "name:pP" (kill on each hit with probability P, e.g. "commit:p0.01").
var (
	point = os.Getenv("SAMSA_FAILPOINT")
	hits  atomic.Int64
)

// Hit SIGKILLs the process when name is the configured fail-point and its count or
// probability says so. The kill is immediate: no deferred function or flush runs.
func Hit(name string) {
	if point == "" {
		return
	}
	want, arg, _ := strings.Cut(point, ":")
	if want != name {
		return
	}
	n := hits.Add(1)
	switch {
	case strings.HasPrefix(arg, "p"):
		p, err := strconv.ParseFloat(arg[1:], 64)
		if err != nil || rand.Float64() >= p {
			return
		}
	case arg != "":
		k, err := strconv.ParseInt(arg, 10, 64)
		if err != nil || n != k {
			return
		}
	}
	os.Stderr.WriteString("failpoint: SIGKILL at " + name + "\n")
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
}
