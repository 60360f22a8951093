// Command samsa operates samsa processors and distributed processes on a running cluster:
// see where partitions and slices run and how far behind a group is (status), move a
// group's offsets (reset), prepare a replay that rebuilds a state table and compare the
// result (replay plan, table compare), and inspect and redrive dead letters (dlq).
//
// Every subcommand connects through -brokers (default $KAFKA_BROKERS) with librdkafka
// settings (TLS, SASL) from -X key=value flags or a Java-style properties file given
// with -config. Output is plain text, or JSON with -o json. Run `samsa help` or
// `samsa <command> -h` for each command's flags, what it does and what it will not do.
//
// Exit codes: 0 success; 1 the operation failed or was refused (one line on stderr
// naming what and why; nothing was changed); 2 bad usage; 3 `table compare` found the
// tables different.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/kconf"
)

func main() {
	// go-redis logs connection failures itself; the command reports them in its one line.
	redis.SetLogger(quietRedis{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// command is one subcommand: its name, a one-line summary, and its runner.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

var commands = []command{
	{"status", "a group's members, assignment, committed and end offsets and lag; a distributed name's slices", runStatus},
	{"reset", "move a stopped group's offsets (earliest, latest, a time, explicit offsets); dry run unless --execute", runReset},
	{"replay", "replay plan: write the end offsets a processor.WithReplay run stops at", runReplay},
	{"table", "table compare: compare two state.Table namespaces (a rebuilt table against the live one)", runTable},
	{"dlq", "dlq list / dlq redrive: inspect dead letters, send them back to their source topic", runDLQ},
}

// env is what a subcommand writes to.
type env struct {
	stdout, stderr io.Writer
}

// usageError is bad usage: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError carries a specific exit code with its message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		if len(args) > 1 {
			return run(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		printHelp(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		if err == nil || errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "samsa %s: %s (see samsa %s -h)\n", c.name, oneLine(ue.msg), c.name)
			return 2
		}
		var xe *exitError
		if errors.As(err, &xe) {
			if xe.msg != "" {
				fmt.Fprintf(stderr, "samsa %s: %s\n", c.name, oneLine(xe.msg))
			}
			return xe.code
		}
		fmt.Fprintf(stderr, "samsa %s: %s\n", c.name, oneLine(err.Error()))
		return 1
	}
	fmt.Fprintf(stderr, "samsa: unknown command %q (commands: %s)\n", args[0], commandNames())
	return 2
}

func commandNames() string {
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	return strings.Join(names, ", ")
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "samsa operates samsa processors and distributed processes on a running Kafka cluster.")
	fmt.Fprintln(w, "\nUsage: samsa <command> [flags]   (samsa <command> -h for details)")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nEvery command takes -brokers (default $KAFKA_BROKERS), -X key=value and -config file.properties")
	fmt.Fprintln(w, "for librdkafka settings (TLS, SASL), -o text|json and -timeout.")
	fmt.Fprintln(w, "Exit codes: 0 ok; 1 failed or refused, nothing changed; 2 bad usage; 3 table compare: different.")
}

// oneLine joins a multi-line error into one line.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// conn holds the connection flags every command shares.
type conn struct {
	brokers    string
	brokersSet bool // -brokers was given: it beats bootstrap.servers from -config or -X
	props      multiFlag
	config     string
	output     string
	timeout    time.Duration
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// newFlags returns a flag set for a command with the connection flags and a usage text
// made of about (what the command does and will not do) and the flags.
func newFlags(e *env, name, synopsis, about string) (*flag.FlagSet, *conn) {
	fs := flag.NewFlagSet("samsa "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	c := &conn{}
	fs.StringVar(&c.brokers, "brokers", "", "bootstrap servers `host:port,...` (default: bootstrap.servers from -config or -X, else $KAFKA_BROKERS)")
	fs.Var(&c.props, "X", "librdkafka `key=value` setting (TLS, SASL, client.id; repeatable; overrides -config)")
	fs.StringVar(&c.config, "config", "", "properties `file` of librdkafka settings (key=value lines, # comments)")
	fs.StringVar(&c.output, "o", "text", "output `format`: text or json")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the cluster, per operation")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: samsa %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(about))
		fs.PrintDefaults()
	}
	return fs, c
}

// parse parses args and checks the connection flags.
func (c *conn) parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2} // the flag package printed the problem and the usage
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { c.brokersSet = c.brokersSet || f.Name == "brokers" })
	if c.output != "text" && c.output != "json" {
		return usagef("-o %q: want text or json", c.output)
	}
	if c.timeout <= 0 {
		return usagef("-timeout %s: must be positive", c.timeout)
	}
	return nil
}

// settings returns the librdkafka settings from -config and -X, and the brokers.
func (c *conn) settings() (string, kconf.Map, error) {
	m := kconf.Map{}
	if c.config != "" {
		f, err := os.Open(c.config)
		if err != nil {
			return "", nil, fmt.Errorf("-config: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || line[0] == '#' || line[0] == '!' {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return "", nil, usagef("-config %s line %d: want key=value, got %q", c.config, n, line)
			}
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		if err := sc.Err(); err != nil {
			return "", nil, fmt.Errorf("-config %s: %w", c.config, err)
		}
	}
	for _, p := range c.props {
		k, v, ok := strings.Cut(p, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return "", nil, usagef("-X %q: want key=value", p)
		}
		m[strings.TrimSpace(k)] = v
	}
	brokers := c.brokers
	if b, ok := m["bootstrap.servers"]; ok && !c.brokersSet {
		brokers = fmt.Sprint(b)
	}
	if brokers == "" {
		brokers = os.Getenv("KAFKA_BROKERS")
	}
	delete(m, "bootstrap.servers")
	if strings.TrimSpace(brokers) == "" {
		return "", nil, usagef("no brokers: give -brokers host:port or set KAFKA_BROKERS")
	}
	return brokers, m, nil
}

// dial connects an admin client and checks that the cluster answers, so an unreachable
// broker is one clear error before anything else.
func (c *conn) dial(ctx context.Context) (*admin.Client, string, kconf.Map, error) {
	brokers, m, err := c.settings()
	if err != nil {
		return nil, "", nil, err
	}
	ac, err := admin.Dial(brokers, m, nil)
	if err != nil {
		return nil, "", nil, err
	}
	return ac, brokers, m, nil
}

// ctx bounds one operation by -timeout.
func (c *conn) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, c.timeout)
}

// writeJSON writes v indented.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns.
type table struct {
	rows [][]string
}

func (t *table) add(cols ...any) {
	row := make([]string, len(cols))
	for i, c := range cols {
		row[i] = fmt.Sprint(c)
	}
	t.rows = append(t.rows, row)
}

func (t *table) write(w io.Writer) {
	var widths []int
	for _, r := range t.rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], len(c))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", widths[i]-len(c)+2))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// topicArg is -topic T or T:0,1,2.
type topicArg struct {
	topic      string
	partitions []int32 // nil: all
}

func parseTopicArg(s string) (topicArg, error) {
	t, parts, ok := strings.Cut(s, ":")
	if strings.TrimSpace(t) == "" {
		return topicArg{}, usagef("-topic %q: want TOPIC or TOPIC:P,P,...", s)
	}
	ta := topicArg{topic: t}
	if !ok {
		return ta, nil
	}
	for _, p := range strings.Split(parts, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 32)
		if err != nil || n < 0 {
			return topicArg{}, usagef("-topic %q: partition %q is not a number >= 0", s, p)
		}
		ta.partitions = append(ta.partitions, int32(n))
	}
	sort.Slice(ta.partitions, func(i, j int) bool { return ta.partitions[i] < ta.partitions[j] })
	return ta, nil
}

// parseTime parses an RFC 3339 time for flag name.
func parseTime(name, s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, usagef("malformed %s %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", name, s)
	}
	return t, nil
}
