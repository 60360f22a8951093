package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/state"
)

const replayAbout = `
replay plan prepares a replay: a run of your processor, in its own consumer group, that
handles its inputs up to fixed end offsets and then stops.
The command cannot run your handlers; your program does, with the plan:

    var plan struct {
        Group, Namespace string                  // the replay's group, and your table's namespace
        processor.Replay                         // the end offsets; suppress_outputs
    }
    b, err := os.ReadFile("plan.json")
    err = json.Unmarshal(b, &plan)
    cfg.Group = plan.Group
    p, err := processor.New(cfg, inputs, h, processor.WithReplay(plan.Replay), ...)
    err = p.Run(ctx)                             // nil once every partition reached its end

The plan's end offsets are the inputs' current end offsets (read_committed). With
-suppress-outputs (the default) the replay publishes nothing: handlers and their state
effects run, outputs and dead letters are dropped.

Replay to rebuild a state.Table: plan with a new -namespace and -redis; run the replay
(it writes the new namespace while the live processor keeps running on the old one);
compare with samsa table compare -a LIVE -b NEW. The live table moves on while records
arrive, so the two agree once both have applied the same offsets: plan again (the replay
group resumes where it stopped) and compare until they do, then point the live processor
at the new namespace (restart it with that namespace; it resumes from its own group's
offsets, which the new table's applied offsets then cover).

It refuses a replay group with live members, and a -namespace that already holds data
while the replay group has committed nothing (a replay from the first records must start
from an empty table). It writes the plan file only; it will not start a processor, move
any group's offsets (use samsa reset on the replay group to replay from elsewhere), or
switch the live processor's namespace.`

// replayPlan is the file replay plan writes: the Replay (end offsets, suppress_outputs)
// with what it was made for. A program decodes it with encoding/json into a struct of its
// own (replayAbout shows one); processor.Replay's fields carry their JSON names.
type replayPlan struct {
	// Group is the consumer group the replay runs in.
	Group string `json:"group"`
	// Namespace is the state namespace the replay writes to, when it rebuilds a table.
	Namespace string    `json:"namespace,omitempty"`
	Created   time.Time `json:"created"`
	processor.Replay
}

func runReplay(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "plan" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fs, _ := newFlags(e, "replay plan", "-group REPLAY-GROUP -topic T [-topic T ...] [-namespace NS -redis ADDR] [-out FILE]", replayAbout)
			fs.Usage()
			return nil
		}
		return usagef("want replay plan")
	}
	fs, c := newFlags(e, "replay plan", "-group REPLAY-GROUP -topic T [-topic T ...] [-namespace NS -redis ADDR] [-out FILE]", replayAbout)
	group := fs.String("group", "", "consumer `group` the replay runs in: not the live processor's (required)")
	var topics multiFlag
	fs.Var(&topics, "topic", "input `topic` of the processor (repeatable; required)")
	namespace := fs.String("namespace", "", "state.Table `namespace` the replay writes (checked for emptiness with -redis)")
	redisAddr := fs.String("redis", "", "Redis `address` of the table")
	suppress := fs.Bool("suppress-outputs", true, "the replay publishes nothing (outputs and dead letters dropped)")
	outPath := fs.String("out", "", "write the plan to `file` (default: standard output)")
	if err := c.parse(fs, args[1:]); err != nil {
		return err
	}
	if *group == "" || len(topics) == 0 {
		return usagef("-group and -topic are required")
	}
	if *redisAddr != "" && *namespace == "" {
		return usagef("-redis checks -namespace: give both")
	}
	ac, _, _, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	octx, cancel := c.ctx(ctx)
	defer cancel()
	committed := map[record.TopicPartition]int64{}
	g, err := ac.DescribeGroup(octx, *group)
	switch {
	case errors.Is(err, admin.ErrUnknownGroup): // a fresh replay group: starts at the earliest offsets
	case err != nil:
		return err
	default:
		if err := refuseLive(g); err != nil {
			return err
		}
		if committed, err = ac.Committed(octx, *group); err != nil {
			return err
		}
	}
	var tps []record.TopicPartition
	for _, t := range topics {
		p, err := ac.Partitions(octx, t)
		if err != nil {
			return err
		}
		tps = append(tps, p...)
	}
	ends, err := ac.ListOffsets(octx, tps, admin.Latest)
	if err != nil {
		return err
	}
	if *redisAddr != "" && len(committed) == 0 {
		rc := redis.NewClient(&redis.Options{Addr: *redisAddr})
		defer rc.Close()
		ta, err := state.NewTableAdmin(rc, *namespace)
		if err != nil {
			return usagef("-namespace: %v", err)
		}
		parts, err := ta.Partitions(octx)
		if err != nil {
			return err
		}
		if len(parts) > 0 {
			return fmt.Errorf("namespace %q already holds table partitions %v and replay group %q has committed nothing: a replay from the first records needs an empty namespace; pick a new one", *namespace, parts, *group)
		}
	}
	plan := replayPlan{Group: *group, Namespace: *namespace, Created: time.Now().UTC(), Replay: processor.Replay{SuppressOutputs: *suppress}}
	for _, tp := range tps {
		plan.Until = append(plan.Until, processor.PartitionOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: ends[tp]})
	}
	b, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if *outPath == "" {
		_, err := e.stdout.Write(b)
		return err
	}
	if err := os.WriteFile(*outPath, b, 0o644); err != nil {
		return err
	}
	var total int64
	for _, tp := range tps {
		total += max(ends[tp]-startOf(committed, tp), 0)
	}
	if c.output == "json" {
		return writeJSON(e.stdout, map[string]any{"plan": *outPath, "group": *group, "partitions": len(tps), "records_at_most": total})
	}
	fmt.Fprintf(e.stdout, "replay plan %s: group %s, %d partition(s) of %s, at most %d record(s) to replay", *outPath, *group, len(tps), strings.Join(topics, ", "), total)
	if *namespace != "" {
		fmt.Fprintf(e.stdout, " into namespace %s", *namespace)
	}
	fmt.Fprintln(e.stdout)
	return nil
}

func startOf(committed map[record.TopicPartition]int64, tp record.TopicPartition) int64 {
	return committed[tp] // 0 when nothing is committed: at most everything from the start
}

const tableAbout = `
table compare compares two state.Table namespaces in Redis (-a, typically the live
table, and -b, one rebuilt by a replay) partition by partition: their applied offsets
(input topic -> next offset), and every key and value, as bytes. It prints per partition
the keys each side holds, the keys only one side has, the keys whose values differ (with
up to five examples), and a verdict. Exit code 0 when the tables are equal (same keys,
values and applied offsets), 3 when they differ.

Tables that differ only because one has applied more records (the live one moves on
while records arrive) are reported as such: replay further (samsa replay plan again, run
the replay) and compare again.

It reads only, and reads each partition at slightly different instants (not one
snapshot of the whole table). It will not switch a processor from one namespace to the
other, nor copy or delete data.`

func runTable(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] != "compare" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fs, _ := newFlags(e, "table compare", "-redis ADDR -a NAMESPACE -b NAMESPACE", tableAbout)
			fs.Usage()
			return nil
		}
		return usagef("want table compare")
	}
	fs, c := newFlags(e, "table compare", "-redis ADDR -a NAMESPACE -b NAMESPACE", tableAbout)
	addr := fs.String("redis", os.Getenv("REDIS_ADDR"), "Redis `address` (default $REDIS_ADDR)")
	nsA := fs.String("a", "", "first `namespace` (the live table)")
	nsB := fs.String("b", "", "second `namespace` (the rebuilt table)")
	if err := c.parse(fs, args[1:]); err != nil {
		return err
	}
	if *addr == "" || *nsA == "" || *nsB == "" {
		return usagef("-redis, -a and -b are required")
	}
	rc := redis.NewClient(&redis.Options{Addr: *addr})
	defer rc.Close()
	a, err := state.NewTableAdmin(rc, *nsA)
	if err != nil {
		return usagef("-a: %v", err)
	}
	b, err := state.NewTableAdmin(rc, *nsB)
	if err != nil {
		return usagef("-b: %v", err)
	}
	octx, cancel := c.ctx(ctx)
	defer cancel()
	if err := rc.Ping(octx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w", *addr, err)
	}
	diffs, err := state.Compare(octx, a, b)
	if err != nil {
		return err
	}
	equal, behind := true, false
	for _, d := range diffs {
		if !d.Equal() {
			equal = false
		}
		if !maps.Equal(d.AppliedA, d.AppliedB) {
			behind = true
		}
	}
	verdict := "equal"
	switch {
	case len(diffs) == 0:
		verdict = "both empty"
	case !equal && behind:
		verdict = "different: the tables have not applied the same offsets; replay further and compare again"
	case !equal:
		verdict = "different: same applied offsets, different data"
	}
	if c.output == "json" {
		if diffs == nil {
			diffs = []state.PartitionDiff{}
		}
		if err := writeJSON(e.stdout, map[string]any{"a": *nsA, "b": *nsB, "equal": equal, "verdict": verdict, "partitions": diffs}); err != nil {
			return err
		}
	} else {
		w := e.stdout
		fmt.Fprintf(w, "table compare: a=%s b=%s\n\n", *nsA, *nsB)
		var t table
		t.add("PARTITION", "APPLIED-A", "APPLIED-B", "KEYS-A", "KEYS-B", "ONLY-A", "ONLY-B", "DIFFER", "EXAMPLES")
		for _, d := range diffs {
			ex := "-"
			if len(d.Examples) > 0 {
				quoted := make([]string, len(d.Examples))
				for i, k := range d.Examples {
					quoted[i] = fmt.Sprintf("%q", k)
				}
				ex = strings.Join(quoted, " ")
			}
			t.add(d.Partition, appliedString(d.AppliedA), appliedString(d.AppliedB), d.KeysA, d.KeysB, d.OnlyA, d.OnlyB, d.Differ, ex)
		}
		t.write(w)
		fmt.Fprintf(w, "\n%s\n", verdict)
		if equal && len(diffs) > 0 {
			fmt.Fprintf(w, "to switch, restart the processor with namespace %s\n", *nsB)
		}
	}
	if !equal {
		return &exitError{code: 3}
	}
	return nil
}

func appliedString(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}
