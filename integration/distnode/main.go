// Command distnode is one node of a distributed process cluster, run by the integration
// tests as its own OS process so it can be SIGTERMed, SIGKILLed, SIGSTOPped and SIGCONTed.
// It runs -procs processes with distributed.Node.Run. Every process instance opens
// its own connection to the checker's Unix socket (-checker) and reports, one line each,
// stamped with CLOCK_MONOTONIC (one machine, one clock):
//
//	S <proc> <uuid> <node> <token> <slice> <mono_ns>   the instance started
//	H <proc> <uuid> <mono_ns>                          heartbeat, every -hb (5ms)
//	C <proc> <uuid> <mono_ns>                          ctx cancelled, but the instance ignores it (-stuck)
//	X <proc> <uuid> <mono_ns>                          the instance stops (ctx cancelled); it then returns
//	W <proc> <uuid> <slice> <token> <mono_ns>          fenced write (-fence), answered "A" (accepted) or "R" (rejected)
//
// With -stuck k, process k ignores cancellation: it keeps heartbeating until the node
// exits. With -fence, every heartbeat also makes a fenced write carrying the instance's
// token to the checker's fenced-resource double.
//
// Exit codes: 0 after a clean stop (SIGTERM or SIGINT cancels Run's context and Run
// returns nil); 3 when Run returns an error, which is printed to stderr; 2 on bad flags.
//
//	distnode -brokers 127.0.0.1:9092 -name g -node n1 -checker /tmp/x/c.sock [-procs 20] [-partitions 8]
//	         [-liveness-margin 3s]
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
	"unsafe"

	"github.com/samsa-go/samsa/distributed"
)

func main() {
	brokers := flag.String("brokers", os.Getenv("KAFKA_BROKERS"), "bootstrap servers (default $KAFKA_BROKERS)")
	name := flag.String("name", "", "cluster (Run) name: the consumer group")
	nodeID := flag.String("node", "", "NodeID")
	procs := flag.Int("procs", 20, "number of processes")
	partitions := flag.Int("partitions", 8, "Partitions of the technical topic")
	protocol := flag.String("protocol", "cooperative", "cooperative, eager or consumer")
	session := flag.Duration("session", 6*time.Second, "SessionTimeout")
	heartbeat := flag.Duration("heartbeat", 500*time.Millisecond, "HeartbeatInterval")
	stopTimeout := flag.Duration("stop-timeout", 10*time.Second, "StopTimeout")
	margin := flag.Duration("liveness-margin", 0, "LivenessMargin (0: the default; negative: off)")
	checker := flag.String("checker", "", "checker Unix socket path")
	hb := flag.Duration("hb", 5*time.Millisecond, "process heartbeat interval to the checker")
	stuck := flag.Int("stuck", -1, "index of the process that ignores cancellation (-1: none)")
	fence := flag.Bool("fence", false, "make a fenced write with every heartbeat")
	verbose := flag.Bool("v", false, "log at info level (default: warnings)")
	flag.Parse()
	if *brokers == "" || *name == "" || *nodeID == "" || *checker == "" || *procs <= 0 {
		fmt.Fprintln(os.Stderr, "distnode: -brokers, -name, -node, -checker and a positive -procs are required")
		flag.Usage()
		os.Exit(2)
	}

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	node, err := distributed.New(distributed.Config{
		Membership:     distributed.Membership{Brokers: *brokers, StopTimeout: *stopTimeout, Protocol: distributed.Protocol(*protocol), SessionTimeout: *session, HeartbeatInterval: *heartbeat},
		Partitions:     *partitions,
		NodeID:         *nodeID,
		LivenessMargin: *margin,
	}, distributed.WithLogger(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, "distnode:", err)
		os.Exit(2)
	}

	list := make([]distributed.Process, *procs)
	for i := range list {
		list[i] = process(i, *checker, *hb, i == *stuck, *fence)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log.Warn("distnode: starting", "pid", os.Getpid(), "node", *nodeID, "name", *name, "protocol", *protocol, "stuck", *stuck, "fence", *fence)
	if err := node.Run(ctx, *name, list); err != nil {
		fmt.Fprintln(os.Stderr, "distnode: Run:", err)
		os.Exit(3) // a stuck process may still be running: exiting ends it
	}
	log.Warn("distnode: stopped cleanly", "node", *nodeID)
}

// process returns process i: it reports to the checker until its context is cancelled
// (or forever, when it is the stuck one).
func process(i int, socket string, every time.Duration, stuck, fence bool) distributed.Process {
	return func(ctx context.Context) error {
		info, ok := distributed.InfoFrom(ctx)
		if !ok {
			return errors.New("no process info in the context")
		}
		conn, err := net.Dial("unix", socket)
		if err != nil {
			return fmt.Errorf("checker: %w", err)
		}
		defer conn.Close()
		id := newUUID()
		w := bufio.NewWriter(conn)
		r := bufio.NewReader(conn)
		send := func(format string, args ...any) error {
			fmt.Fprintf(w, format, args...)
			return w.Flush()
		}
		if err := send("S %d %s %s %d %d %d\n", i, id, info.Node, info.Token, info.Slice, mono()); err != nil {
			return fmt.Errorf("checker: %w", err)
		}
		tick := time.NewTicker(every)
		defer tick.Stop()
		done := ctx.Done()
		for {
			select {
			case <-done:
				if !stuck {
					send("X %d %s %d\n", i, id, mono())
					return nil
				}
				send("C %d %s %d\n", i, id, mono())
				done = nil // ignore cancellation: run until the node exits
			case <-tick.C:
				if err := send("H %d %s %d\n", i, id, mono()); err != nil {
					return fmt.Errorf("checker: %w", err)
				}
				if fence {
					if err := send("W %d %s %d %d %d\n", i, id, info.Slice, info.Token, mono()); err != nil {
						return fmt.Errorf("checker: %w", err)
					}
					if _, err := r.ReadString('\n'); err != nil {
						return fmt.Errorf("checker: fenced write: %w", err)
					}
				}
			}
		}
	}
}

// mono is CLOCK_MONOTONIC in nanoseconds, the clock the checker compares across processes.
func mono() int64 {
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1 /* CLOCK_MONOTONIC */, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		panic(errno)
	}
	return ts.Nano()
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
