package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/state"
)

const resetAbout = `
Moves a processor group's committed offsets, so that its next run starts elsewhere: to
the earliest or latest offsets, to the first record at or after a time, to one offset
for every partition, or to explicit offsets per partition. It prints the plan (current
and new offset per partition) and changes nothing unless --execute is given.

It refuses, changing nothing, while the group has live members (stop every instance
first: a consumer's position cannot be moved under it), for a group the cluster does not
know, and for a partition or topic that does not exist. An offset outside a partition's
range is moved to its nearest end, and the plan says so.

State tables: a processor with a checkpointed state.Table skips records below the
table's applied offsets (their effects are in the table). Give -redis and
-table-namespace and reset checks them: moving the group below a partition's applied
offset would leave the table claiming records that will be read again, so reset refuses
and names them; with -clear-table, a partition reset to its earliest offset (for every
topic its table records) has its table data cleared as well, so state is rebuilt from
the first record. The offsets are moved first and the table cleared second, so a crash
in between leaves the table ahead (records skipped, nothing applied twice) and running
the same reset again finishes it. Without -redis reset cannot see tables, and says so.

It will not: reset a running group, create a group, touch output topics (what the
group produced before stays there), or rebuild state other than by clearing it (see
samsa replay).`

// resetRow is one partition of a reset plan.
type resetRow struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Current   *int64 `json:"current"` // null: nothing committed
	New       int64  `json:"new"`
	Note      string `json:"note,omitempty"`
	// Table: what happens to the partition's state table (checked with -redis).
	Table string `json:"table,omitempty"`
}

type resetPlan struct {
	Group    string     `json:"group"`
	Executed bool       `json:"executed"`
	Tables   string     `json:"tables"`
	Rows     []resetRow `json:"partitions"`
}

func runReset(ctx context.Context, e *env, args []string) error {
	fs, c := newFlags(e, "reset", "-group G -topic T[:P,...] (-to-earliest | -to-latest | -to-datetime TIME | -to-offset N | -offsets P=O,...) [--execute]", resetAbout)
	group := fs.String("group", "", "consumer `group` to reset (required)")
	var topicArgs multiFlag
	fs.Var(&topicArgs, "topic", "`topic` or topic:P,P,... to reset (repeatable; required)")
	earliest := fs.Bool("to-earliest", false, "each partition's earliest offset")
	latest := fs.Bool("to-latest", false, "each partition's end offset")
	datetime := fs.String("to-datetime", "", "the first record at or after this RFC 3339 `time` (the end if none)")
	toOffset := fs.Int64("to-offset", -1, "this `offset` in every partition")
	offsets := fs.String("offsets", "", "explicit `P=O,...` offsets (one -topic only)")
	execute := fs.Bool("execute", false, "apply the plan (default: print it only)")
	redisAddr := fs.String("redis", "", "Redis `address` of the group's state.Table (with -table-namespace)")
	namespace := fs.String("table-namespace", "", "`namespace` of the group's state.Table")
	clearTable := fs.Bool("clear-table", false, "clear the table data of partitions reset to their earliest offset")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *group == "" {
		return usagef("-group is required")
	}
	if len(topicArgs) == 0 {
		return usagef("-topic is required")
	}
	targets := 0
	for _, set := range []bool{*earliest, *latest, *datetime != "", *toOffset >= 0, *offsets != ""} {
		if set {
			targets++
		}
	}
	if targets != 1 {
		return usagef("give exactly one of -to-earliest, -to-latest, -to-datetime, -to-offset, -offsets")
	}
	if (*redisAddr == "") != (*namespace == "") {
		return usagef("-redis and -table-namespace go together")
	}
	if *clearTable && *redisAddr == "" {
		return usagef("-clear-table needs -redis and -table-namespace")
	}
	var ts []topicArg
	for _, a := range topicArgs {
		ta, err := parseTopicArg(a)
		if err != nil {
			return err
		}
		ts = append(ts, ta)
	}
	var explicit map[int32]int64
	if *offsets != "" {
		if len(ts) != 1 {
			return usagef("-offsets applies to one -topic")
		}
		explicit = map[int32]int64{}
		for _, kv := range strings.Split(*offsets, ",") {
			p, o, ok := strings.Cut(kv, "=")
			pn, perr := strconv.ParseInt(strings.TrimSpace(p), 10, 32)
			on, oerr := strconv.ParseInt(strings.TrimSpace(o), 10, 64)
			if !ok || perr != nil || oerr != nil || pn < 0 || on < 0 {
				return usagef("-offsets %q: want PARTITION=OFFSET,... with numbers >= 0", kv)
			}
			explicit[int32(pn)] = on
		}
	}
	var at int64
	if *datetime != "" {
		t, err := parseTime("-to-datetime", *datetime)
		if err != nil {
			return err
		}
		at = t.UnixMilli()
	}

	ac, _, _, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	octx, cancel := c.ctx(ctx)
	defer cancel()
	g, err := ac.DescribeGroup(octx, *group)
	if err != nil {
		return err
	}
	if err := refuseLive(g); err != nil {
		return err
	}

	// The partitions, in order.
	var tps []record.TopicPartition
	for _, ta := range ts {
		all, err := ac.Partitions(octx, ta.topic)
		if err != nil {
			return err
		}
		parts := ta.partitions
		if explicit != nil {
			if parts != nil {
				return usagef("-offsets names the partitions: give -topic %s without :P", ta.topic)
			}
			parts = slices.Sorted(maps.Keys(explicit))
		}
		if parts == nil {
			tps = append(tps, all...)
			continue
		}
		for _, p := range parts {
			if int(p) >= len(all) {
				return fmt.Errorf("topic %q has %d partitions: no partition %d", ta.topic, len(all), p)
			}
			tps = append(tps, record.TopicPartition{Topic: ta.topic, Partition: p})
		}
	}
	committed, err := ac.Committed(octx, *group)
	if err != nil {
		return err
	}
	lows, err := ac.ListOffsets(octx, tps, admin.Earliest)
	if err != nil {
		return err
	}
	highs, err := ac.ListOffsets(octx, tps, admin.Latest)
	if err != nil {
		return err
	}
	var want map[record.TopicPartition]int64
	switch {
	case *earliest:
		want = lows
	case *latest:
		want = highs
	case *datetime != "":
		if want, err = ac.ListOffsets(octx, tps, admin.Spec(at)); err != nil {
			return err
		}
	default:
		want = map[record.TopicPartition]int64{}
		for _, tp := range tps {
			if explicit != nil {
				want[tp] = explicit[tp.Partition]
			} else {
				want[tp] = *toOffset
			}
		}
	}
	plan := resetPlan{Group: *group, Tables: "not checked: give -redis and -table-namespace if the group's handler writes a checkpointed state.Table"}
	for _, tp := range tps {
		row := resetRow{Topic: tp.Topic, Partition: tp.Partition, New: want[tp]}
		if off, ok := committed[tp]; ok {
			row.Current = &off
		}
		if row.New < lows[tp] {
			row.Note = fmt.Sprintf("%d is below the earliest offset %d", row.New, lows[tp])
			row.New = lows[tp]
		} else if row.New > highs[tp] {
			row.Note = fmt.Sprintf("%d is past the end %d", row.New, highs[tp])
			row.New = highs[tp]
		}
		plan.Rows = append(plan.Rows, row)
	}

	var clear []int32
	if *redisAddr != "" {
		rc := redis.NewClient(&redis.Options{Addr: *redisAddr})
		defer rc.Close()
		ta, err := state.NewTableAdmin(rc, *namespace)
		if err != nil {
			return usagef("-table-namespace: %v", err)
		}
		if clear, err = checkTables(octx, ta, &plan, lows, *clearTable); err != nil {
			return err
		}
		plan.Tables = "checked: namespace " + *namespace + " at " + *redisAddr
	}

	if *execute {
		var moves []record.Offset
		for _, r := range plan.Rows {
			moves = append(moves, record.Offset{TopicPartition: record.TopicPartition{Topic: r.Topic, Partition: r.Partition}, Offset: r.New})
		}
		if err := ac.AlterOffsets(octx, *group, moves); err != nil {
			if errors.Is(err, admin.ErrGroupActive) {
				return fmt.Errorf("group %q has live members (it joined while reset ran): stop them first; nothing was changed", *group)
			}
			return err
		}
		if len(clear) > 0 {
			rc := redis.NewClient(&redis.Options{Addr: *redisAddr})
			defer rc.Close()
			ta, _ := state.NewTableAdmin(rc, *namespace)
			for _, p := range clear {
				if _, err := ta.ClearPartition(octx, p); err != nil {
					return fmt.Errorf("offsets moved, but clearing table partition %d failed (run the same reset again to finish): %w", p, err)
				}
			}
		}
		plan.Executed = true
	}
	if c.output == "json" {
		return writeJSON(e.stdout, plan)
	}
	w := e.stdout
	verb := "would move"
	if plan.Executed {
		verb = "moved"
	}
	fmt.Fprintf(w, "reset of group %s: %s %d partition(s)\n", *group, verb, len(plan.Rows))
	fmt.Fprintf(w, "state tables: %s\n\n", plan.Tables)
	var t table
	t.add("TOPIC", "PARTITION", "CURRENT", "NEW", "CHANGE", "TABLE", "NOTE")
	for _, r := range plan.Rows {
		cur, change := "-", "-"
		if r.Current != nil {
			cur = fmt.Sprint(*r.Current)
			change = fmt.Sprintf("%+d", r.New-*r.Current)
		}
		tbl, note := r.Table, r.Note
		if tbl == "" {
			tbl = "-"
		}
		if note == "" {
			note = "-"
		}
		t.add(r.Topic, r.Partition, cur, r.New, change, tbl, note)
	}
	t.write(w)
	if !plan.Executed {
		fmt.Fprintln(w, "\ndry run: nothing changed; run again with --execute to apply")
	}
	return nil
}

// refuseLive fails for a group with live members.
func refuseLive(g admin.Group) error {
	if len(g.Members) == 0 {
		return nil
	}
	var ids []string
	for _, m := range g.Members {
		ids = append(ids, m.ClientID+"@"+m.Host)
	}
	return fmt.Errorf("group %q has %d live member(s) (%s): stop every instance first; nothing was changed", g.ID, len(g.Members), strings.Join(ids, ", "))
}

// checkTables checks the plan against the table's applied offsets and returns the table
// partitions to clear. It fails, naming every offending partition, when the plan would
// move the group below what the table has applied and clearing is not allowed or not
// consistent.
func checkTables(ctx context.Context, ta *state.TableAdmin, plan *resetPlan, lows map[record.TopicPartition]int64, allowClear bool) ([]int32, error) {
	newOf := map[record.TopicPartition]int64{}
	for _, r := range plan.Rows {
		newOf[record.TopicPartition{Topic: r.Topic, Partition: r.Partition}] = r.New
	}
	applied := map[int32]map[string]int64{}
	for _, r := range plan.Rows {
		if _, ok := applied[r.Partition]; ok {
			continue
		}
		a, err := ta.Applied(ctx, r.Partition)
		if err != nil {
			return nil, err
		}
		applied[r.Partition] = a
	}
	var problems []string
	clear := map[int32]bool{}
	for i := range plan.Rows {
		r := &plan.Rows[i]
		a, ok := applied[r.Partition][r.Topic]
		if !ok || r.New >= a {
			r.Table = fmt.Sprintf("applied %d: ok", a)
			continue
		}
		if !allowClear {
			problems = append(problems, fmt.Sprintf("%s[%d] to %d is below the table's applied offset %d", r.Topic, r.Partition, r.New, a))
			r.Table = fmt.Sprintf("applied %d: refused", a)
			continue
		}
		// Clearing is consistent only when every topic the partition's table records
		// restarts from its first record.
		var blocking []string
		for topic := range applied[r.Partition] {
			tp := record.TopicPartition{Topic: topic, Partition: r.Partition}
			n, planned := newOf[tp]
			if !planned || n != lows[tp] {
				blocking = append(blocking, topic)
			}
		}
		if len(blocking) > 0 {
			slices.Sort(blocking)
			problems = append(problems, fmt.Sprintf("%s[%d]: clearing table partition %d needs topics %s reset to their earliest offsets too", r.Topic, r.Partition, r.Partition, strings.Join(blocking, ", ")))
			r.Table = fmt.Sprintf("applied %d: refused", a)
			continue
		}
		r.Table = fmt.Sprintf("applied %d: clear", a)
		clear[r.Partition] = true
	}
	if len(problems) > 0 {
		hint := "reset to offsets at or above the applied ones, rebuild the table into a new namespace (samsa replay plan), or reset to earliest with -clear-table"
		return nil, fmt.Errorf("table %q would claim records the group reads again (the processor would skip them): %s; %s; nothing was changed", ta.Namespace(), strings.Join(problems, "; "), hint)
	}
	return slices.Sorted(maps.Keys(clear)), nil
}

func isUnknownGroup(err error) bool { return errors.Is(err, admin.ErrUnknownGroup) }
