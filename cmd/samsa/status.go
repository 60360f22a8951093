package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/samsa-go/samsa/distributed"
	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/record"
)

const statusAbout = `
Shows a processor group: its state, live members (client id, host, assigned
partitions), and per partition the committed offset, the end offset (high watermark,
read_committed) and the lag between them. The partitions shown are those the group has
committed or its members are assigned, plus every partition of each -topic given.

With -distributed NAME it shows a distributed Run instead: for every slice (partition of
the technical topic -topic-prefix+NAME), the node whose claim record is the last one
written, the fencing token of that ownership (the claim's offset) and since when, or
that the slice was released; and whether a live member holds the slice now.

It reads only: it joins no group, commits nothing, changes nothing. It will not show
what a handler is doing, records' contents, or processes' own state.`

func runStatus(ctx context.Context, e *env, args []string) error {
	fs, c := newFlags(e, "status", "(-group G [-topic T ...] | -distributed NAME)", statusAbout)
	group := fs.String("group", "", "consumer `group` of a processor")
	dist := fs.String("distributed", "", "`name` given to distributed.Run")
	prefix := fs.String("topic-prefix", "samsa.distributed.", "technical topic `prefix` of -distributed (distributed.Config.TopicPrefix)")
	var topics multiFlag
	fs.Var(&topics, "topic", "also show every partition of `topic` (repeatable)")
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if (*group == "") == (*dist == "") {
		return usagef("give exactly one of -group and -distributed")
	}
	ac, brokers, props, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	if *group != "" {
		return groupStatus(ctx, e, c, ac, *group, topics)
	}
	return distStatus(ctx, e, c, ac, brokers, props, *dist, *prefix)
}

type memberJSON struct {
	ClientID   string   `json:"client_id"`
	ConsumerID string   `json:"consumer_id"`
	InstanceID string   `json:"instance_id,omitempty"`
	Host       string   `json:"host"`
	Assignment []string `json:"assignment"`
}

type partitionJSON struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Committed *int64 `json:"committed"` // null: nothing committed
	End       int64  `json:"end"`
	Lag       *int64 `json:"lag"`             // null without a committed offset
	Owner     string `json:"owner,omitempty"` // client id@host of the member assigned it
}

type groupJSON struct {
	Group      string          `json:"group"`
	State      string          `json:"state"`
	Type       string          `json:"type"`
	Members    []memberJSON    `json:"members"`
	Partitions []partitionJSON `json:"partitions"`
}

func groupStatus(ctx context.Context, e *env, c *conn, ac *admin.Client, group string, topics []string) error {
	octx, cancel := c.ctx(ctx)
	defer cancel()
	g, err := ac.DescribeGroup(octx, group)
	if err != nil {
		return err
	}
	committed, err := ac.Committed(octx, group)
	if err != nil {
		return err
	}
	owner := map[record.TopicPartition]string{}
	out := groupJSON{Group: group, State: g.State, Type: g.Type, Members: []memberJSON{}, Partitions: []partitionJSON{}}
	set := map[record.TopicPartition]bool{}
	for tp := range committed {
		set[tp] = true
	}
	for _, m := range g.Members {
		mj := memberJSON{ClientID: m.ClientID, ConsumerID: m.ConsumerID, InstanceID: m.InstanceID, Host: m.Host, Assignment: []string{}}
		for _, tp := range m.Assignment {
			mj.Assignment = append(mj.Assignment, fmt.Sprintf("%s[%d]", tp.Topic, tp.Partition))
			owner[tp] = m.ClientID + "@" + m.Host
			set[tp] = true
		}
		out.Members = append(out.Members, mj)
	}
	for _, t := range topics {
		tps, err := ac.Partitions(octx, t)
		if err != nil {
			return err
		}
		for _, tp := range tps {
			set[tp] = true
		}
	}
	tps := slices.SortedFunc(maps.Keys(set), compareTP)
	ends, err := ac.ListOffsets(octx, tps, admin.Latest)
	if err != nil {
		return err
	}
	for _, tp := range tps {
		pj := partitionJSON{Topic: tp.Topic, Partition: tp.Partition, End: ends[tp], Owner: owner[tp]}
		if off, ok := committed[tp]; ok {
			lag := max(ends[tp]-off, 0)
			pj.Committed, pj.Lag = &off, &lag
		}
		out.Partitions = append(out.Partitions, pj)
	}
	if c.output == "json" {
		return writeJSON(e.stdout, out)
	}
	w := e.stdout
	fmt.Fprintf(w, "group %s: %s (%s protocol), %d live member(s)\n", group, g.State, strings.ToLower(g.Type), len(g.Members))
	if len(out.Members) > 0 {
		fmt.Fprintln(w)
		var t table
		t.add("CLIENT-ID", "HOST", "MEMBER-ID", "ASSIGNED")
		for _, m := range out.Members {
			t.add(m.ClientID, m.Host, m.ConsumerID, strings.Join(m.Assignment, " "))
		}
		t.write(w)
	}
	fmt.Fprintln(w)
	var t table
	t.add("TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "OWNER")
	var total int64
	for _, p := range out.Partitions {
		com, lag := "-", "-"
		if p.Committed != nil {
			com, lag = fmt.Sprint(*p.Committed), fmt.Sprint(*p.Lag)
			total += *p.Lag
		}
		o := p.Owner
		if o == "" {
			o = "-"
		}
		t.add(p.Topic, p.Partition, com, p.End, lag, o)
	}
	t.write(w)
	fmt.Fprintf(w, "\ntotal lag: %d record(s) over %d partition(s)\n", total, len(out.Partitions))
	return nil
}

type sliceJSON struct {
	Slice    int32      `json:"slice"`
	State    string     `json:"state"` // running, released, never claimed
	Node     string     `json:"node,omitempty"`
	Token    *int64     `json:"token"` // the claim's offset; null when never claimed
	Since    *time.Time `json:"since"` // the claim's (or release's) timestamp
	Assigned bool       `json:"assigned"`
}

type distJSON struct {
	Name    string      `json:"name"`
	Topic   string      `json:"topic"`
	State   string      `json:"group_state"`
	Members int         `json:"members"`
	Slices  []sliceJSON `json:"slices"`
}

func distStatus(ctx context.Context, e *env, c *conn, ac *admin.Client, brokers string, props map[string]any, name, prefix string) error {
	octx, cancel := c.ctx(ctx)
	defer cancel()
	topic := prefix + name
	tps, err := ac.Partitions(octx, topic)
	if err != nil {
		return fmt.Errorf("distributed %q: technical topic: %w", name, err)
	}
	state, members := "Dead", 0
	assigned := map[int32]bool{}
	if g, err := ac.DescribeGroup(octx, name); err == nil {
		state, members = g.State, len(g.Members)
		for _, m := range g.Members {
			for _, tp := range m.Assignment {
				if tp.Topic == topic {
					assigned[tp.Partition] = true
				}
			}
		}
	} else if !isUnknownGroup(err) {
		return err
	}
	starts, err := ac.ListOffsets(octx, tps, admin.Earliest)
	if err != nil {
		return err
	}
	ends, err := ac.ListOffsets(octx, tps, admin.Latest)
	if err != nil {
		return err
	}
	var ranges []admin.Range
	for _, tp := range tps {
		ranges = append(ranges, admin.Range{TopicPartition: tp, From: starts[tp], To: ends[tp]})
	}
	last := map[int32]record.Message{} // per slice: the last claim or release of this name
	err = admin.Scan(octx, brokers, props, ranges, func(m record.Message) error {
		if header(m, distributed.HeaderCluster) != name {
			return nil
		}
		if k := header(m, distributed.HeaderKind); k == "claim" || k == "release" {
			last[m.Partition] = m
		}
		return nil
	})
	if err != nil {
		return err
	}
	out := distJSON{Name: name, Topic: topic, State: state, Members: members, Slices: []sliceJSON{}}
	for _, tp := range tps {
		sj := sliceJSON{Slice: tp.Partition, State: "never claimed", Assigned: assigned[tp.Partition]}
		if m, ok := last[tp.Partition]; ok {
			sj.Node = header(m, distributed.HeaderNode)
			ts := m.Timestamp.UTC()
			sj.Since = &ts
			if header(m, distributed.HeaderKind) == "claim" {
				sj.State = "running"
				off := m.Offset
				sj.Token = &off
			} else {
				sj.State = "released"
			}
		}
		out.Slices = append(out.Slices, sj)
	}
	if c.output == "json" {
		return writeJSON(e.stdout, out)
	}
	w := e.stdout
	fmt.Fprintf(w, "distributed %s: topic %s, %d slice(s); group %s, %d live member(s)\n", name, topic, len(tps), state, members)
	fmt.Fprintf(w, "process i runs in slice i mod %d\n\n", len(tps))
	var t table
	t.add("SLICE", "STATE", "NODE", "TOKEN", "SINCE", "ASSIGNED")
	for _, s := range out.Slices {
		node, token, since := "-", "-", "-"
		if s.Node != "" {
			node = s.Node
		}
		if s.Token != nil {
			token = fmt.Sprint(*s.Token)
		}
		if s.Since != nil {
			since = s.Since.Format(time.RFC3339Nano)
		}
		t.add(s.Slice, s.State, node, token, since, yesNo(s.Assigned))
	}
	t.write(w)
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func header(m record.Message, key string) string {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == key {
			return string(m.Headers[i].Value)
		}
	}
	return ""
}

func compareTP(a, b record.TopicPartition) int {
	if c := strings.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return int(a.Partition) - int(b.Partition)
}
