package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/samsa-go/samsa/internal/admin"
	"github.com/samsa-go/samsa/internal/kconf"
	"github.com/samsa-go/samsa/internal/produce"
	"github.com/samsa-go/samsa/internal/record"
	"github.com/samsa-go/samsa/processor"
)

// headerRedriveFrom marks a redriven record with the dead letter it came from:
// "<dead-letter topic>/<partition>/<offset>"; headerRedriveSource with the record that
// dead letter was read from: "<source topic>/<partition>/<offset>".
const (
	headerRedriveFrom   = "samsa.redrive.from"
	headerRedriveSource = "samsa.redrive.source"
)

const dlqAbout = `
dlq list reads a dead-letter topic (written by processor.DeadLetter) and shows each dead
letter with its decoded samsa.dlq.* headers: the error, the stage that failed (decode,
handle, produce), the source topic, partition and offset, the source record's time and
the processor's group. Filters narrow it: -error (text the error contains), -stage,
-source-topic, -source-partition, -since and -until (the source record's time).

dlq redrive sends the chosen dead letters back to their source topic and partition (or
to -to TOPIC, partitioned by key) with their original key, value, timestamp and headers;
the samsa.dlq.* headers are dropped, and samsa.redrive.from=<dlq topic>/<partition>/<offset>
and samsa.redrive.source=<source topic>/<partition>/<offset> are added. Like reset it
prints what it would do (each dead letter it would send) and sends only with --execute.

One source record dead-lettered several times (its group was reset and read it again)
is sent once: of the chosen dead letters with the same source topic, partition and
offset, only the first is sent, and none when a copy of that source is already in the
target. -all-copies sends every chosen dead letter instead.

Redrive is idempotent: before sending, it reads the target partitions from the oldest
chosen dead letter's time to their end, and skips every dead letter whose redriven copy
(found by its samsa.redrive.from header, or by samsa.redrive.source for another dead
letter of the same source record) is already there. The target topic itself is the
only mark, so a crash at any point, even between a send and its acknowledgement, leaves
nothing to reconcile: run the same redrive again and it sends exactly the ones that did
not land. What it does not guard against: two redrives of the same dead letters running
at the same time, and a copy that retention already deleted from the target (it would be
sent again). The cost of the check is reading the target from the oldest chosen dead
letter's time onwards; narrow it with -since.

Neither command changes the dead-letter topic or commits anything: dead letters stay
where they are (a redriven one that fails again becomes a new dead letter, carrying the
samsa.redrive.from header). They will not fix the handler, nor decode keys and values:
list shows them as text when they are printable UTF-8, else by size; with -o json a
printable key or value is in "key" or "value", any other in "key_base64" or
"value_base64", and a null one is marked by "key_null" or "value_null".`

// deadLetter is one decoded dead letter.
type deadLetter struct {
	Partition       int32     `json:"partition"`
	Offset          int64     `json:"offset"`
	Error           string    `json:"error"`
	Stage           string    `json:"stage"`
	SourceTopic     string    `json:"source_topic"`
	SourcePartition int32     `json:"source_partition"`
	SourceOffset    int64     `json:"source_offset"`
	SourceTime      time.Time `json:"source_time"`
	Group           string    `json:"group"`
	Key             string    `json:"key"`
	KeyBase64       []byte    `json:"key_base64,omitempty"` // a key that is not printable text
	KeyNull         bool      `json:"key_null,omitempty"`
	Value           string    `json:"value"`
	ValueBase64     []byte    `json:"value_base64,omitempty"`
	ValueNull       bool      `json:"value_null,omitempty"`
	ValueBytes      int       `json:"value_bytes"`
	RedrivenFrom    string    `json:"redriven_from,omitempty"`

	msg record.Message
}

type dlqFilter struct {
	errText, stage, sourceTopic string
	sourcePartition             int64
	since, until                time.Time
}

func (f *dlqFilter) match(d *deadLetter) bool {
	return (f.errText == "" || strings.Contains(d.Error, f.errText)) &&
		(f.stage == "" || d.Stage == f.stage) &&
		(f.sourceTopic == "" || d.SourceTopic == f.sourceTopic) &&
		(f.sourcePartition < 0 || int64(d.SourcePartition) == f.sourcePartition) &&
		(f.since.IsZero() || !d.SourceTime.Before(f.since)) &&
		(f.until.IsZero() || d.SourceTime.Before(f.until))
}

func runDLQ(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "redrive") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fs, _ := newFlags(e, "dlq", "(list | redrive) -topic DLQ [filters]", dlqAbout)
			fs.Usage()
			return nil
		}
		return usagef("want dlq list or dlq redrive")
	}
	sub := args[0]
	fs, c := newFlags(e, "dlq "+sub, "-topic DLQ [-error TEXT] [-stage S] [-source-topic T] [-source-partition N] [-since TIME] [-until TIME]"+map[string]string{"list": " [-limit N]", "redrive": " [-to TOPIC] [-all-copies] [--execute]"}[sub], dlqAbout)
	topic := fs.String("topic", "", "dead-letter `topic` (required)")
	var f dlqFilter
	fs.StringVar(&f.errText, "error", "", "only dead letters whose error contains `text`")
	fs.StringVar(&f.stage, "stage", "", "only this `stage`: decode, handle or produce")
	fs.StringVar(&f.sourceTopic, "source-topic", "", "only dead letters read from `topic`")
	fs.Int64Var(&f.sourcePartition, "source-partition", -1, "only dead letters read from `partition`")
	since := fs.String("since", "", "only source records at or after this RFC 3339 `time`")
	until := fs.String("until", "", "only source records before this RFC 3339 `time`")
	limit := fs.Int("limit", 0, "list at most `n` dead letters (0: all)")
	to := fs.String("to", "", "redrive to this `topic` instead of each dead letter's source topic")
	execute := fs.Bool("execute", false, "redrive: send (default: print what would be sent)")
	allCopies := fs.Bool("all-copies", false, "redrive: send every chosen dead letter, even several of one source record")
	if err := c.parse(fs, args[1:]); err != nil {
		return err
	}
	if *topic == "" {
		return usagef("-topic is required")
	}
	switch f.stage {
	case "", string(processor.StageDecode), string(processor.StageHandle), string(processor.StageProduce):
	default:
		return usagef("-stage %q: want decode, handle or produce", f.stage)
	}
	var err error
	if *since != "" {
		if f.since, err = parseTime("-since", *since); err != nil {
			return err
		}
	}
	if *until != "" {
		if f.until, err = parseTime("-until", *until); err != nil {
			return err
		}
	}
	if sub == "list" && (*to != "" || *execute || *allCopies) {
		return usagef("-to, -all-copies and --execute belong to dlq redrive")
	}
	ac, brokers, props, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer ac.Close()
	octx, cancel := c.ctx(ctx)
	defer cancel()
	letters, foreign, err := readDeadLetters(octx, ac, brokers, props, *topic, &f)
	if err != nil {
		return err
	}
	if sub == "list" {
		if *limit > 0 && len(letters) > *limit {
			letters = letters[:*limit]
		}
		return listDeadLetters(e, c, *topic, letters, foreign)
	}
	return redrive(octx, e, c, ac, brokers, props, *topic, *to, letters, redriveOpts{execute: *execute, allCopies: *allCopies})
}

// readDeadLetters reads the dead-letter topic (from -since on) and returns the matching
// dead letters in partition and offset order, and how many records were not dead letters.
func readDeadLetters(ctx context.Context, ac *admin.Client, brokers string, props kconf.Map, topic string, f *dlqFilter) ([]deadLetter, int, error) {
	tps, err := ac.Partitions(ctx, topic)
	if err != nil {
		return nil, 0, fmt.Errorf("dead-letter topic: %w", err)
	}
	spec := admin.Earliest
	if !f.since.IsZero() {
		// A dead letter keeps its source record's timestamp.
		spec = admin.AtTime(f.since)
	}
	starts, err := ac.ListOffsets(ctx, tps, spec)
	if err != nil {
		return nil, 0, err
	}
	ends, err := ac.ListOffsets(ctx, tps, admin.Latest)
	if err != nil {
		return nil, 0, err
	}
	var ranges []admin.Range
	for _, tp := range tps {
		ranges = append(ranges, admin.Range{TopicPartition: tp, From: starts[tp], To: ends[tp]})
	}
	var out []deadLetter
	foreign := 0
	err = admin.Scan(ctx, brokers, props, ranges, func(m record.Message) error {
		d, ok := decodeDeadLetter(m)
		if !ok {
			foreign++
			return nil
		}
		if f.match(&d) {
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	slices.SortFunc(out, func(a, b deadLetter) int {
		if a.Partition != b.Partition {
			return int(a.Partition) - int(b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	return out, foreign, nil
}

func decodeDeadLetter(m record.Message) (deadLetter, bool) {
	src := header(m, processor.HeaderSourceTopic)
	p, perr := strconv.ParseInt(header(m, processor.HeaderSourcePartition), 10, 32)
	o, oerr := strconv.ParseInt(header(m, processor.HeaderSourceOffset), 10, 64)
	if src == "" || perr != nil || oerr != nil {
		return deadLetter{}, false
	}
	d := deadLetter{
		Partition: m.Partition, Offset: m.Offset,
		Error: header(m, processor.HeaderError), Stage: header(m, processor.HeaderStage),
		SourceTopic: src, SourcePartition: int32(p), SourceOffset: o,
		Group: header(m, processor.HeaderGroup), ValueBytes: len(m.Value),
		RedrivenFrom: header(m, headerRedriveFrom),
		msg:          m,
	}
	if ms, err := strconv.ParseInt(header(m, processor.HeaderSourceTimestamp), 10, 64); err == nil {
		d.SourceTime = time.UnixMilli(ms).UTC()
	} else {
		d.SourceTime = m.Timestamp.UTC()
	}
	d.Key, d.KeyBase64, d.KeyNull = payload(m.Key)
	d.Value, d.ValueBase64, d.ValueNull = payload(m.Value)
	return d, true
}

// payload splits a key or value into printable text, other bytes, or null.
func payload(b []byte) (text string, raw []byte, null bool) {
	switch {
	case b == nil:
		return "", nil, true
	case printable(b):
		return string(b), nil, false
	default:
		return "", b, false
	}
}

// printable reports whether b is UTF-8 text without control characters other than tab
// and line breaks.
func printable(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

// cell shows a key or value in one table cell: its text on one line, cut at 40
// characters (the whole is in -o json), "(null)", or its size when it is not text.
func cell(text string, raw []byte, null bool) string {
	switch {
	case null:
		return "(null)"
	case raw != nil:
		return fmt.Sprintf("(%d bytes)", len(raw))
	}
	text = strings.Join(strings.Fields(text), " ")
	if r := []rune(text); len(r) > 40 {
		text = string(r[:40]) + "…"
	}
	if text == "" {
		return `""`
	}
	return text
}

// sourceID names the record a dead letter was read from.
func (d *deadLetter) sourceID() string {
	return fmt.Sprintf("%s/%d/%d", d.SourceTopic, d.SourcePartition, d.SourceOffset)
}

func listDeadLetters(e *env, c *conn, topic string, letters []deadLetter, foreign int) error {
	if c.output == "json" {
		if letters == nil {
			letters = []deadLetter{}
		}
		return writeJSON(e.stdout, map[string]any{"topic": topic, "dead_letters": letters, "not_dead_letters": foreign})
	}
	w := e.stdout
	fmt.Fprintf(w, "dead-letter topic %s: %d dead letter(s) match", topic, len(letters))
	if foreign > 0 {
		fmt.Fprintf(w, " (%d record(s) without samsa.dlq headers ignored)", foreign)
	}
	fmt.Fprintln(w)
	if len(letters) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	var t table
	t.add("PARTITION", "OFFSET", "SOURCE", "STAGE", "SOURCE-TIME", "GROUP", "KEY", "VALUE", "ERROR")
	for _, d := range letters {
		errText, _, _ := strings.Cut(d.Error, "\n") // a panic's calls are in -o json
		if r := []rune(errText); len(r) > 100 {
			errText = string(r[:100]) + "…" // the whole error is in -o json
		}
		if d.RedrivenFrom != "" {
			errText += " (redriven from " + d.RedrivenFrom + ")"
		}
		t.add(d.Partition, d.Offset, fmt.Sprintf("%s[%d]@%d", d.SourceTopic, d.SourcePartition, d.SourceOffset), d.Stage,
			d.SourceTime.Format(time.RFC3339Nano), d.Group, cell(d.Key, d.KeyBase64, d.KeyNull), cell(d.Value, d.ValueBase64, d.ValueNull), errText)
	}
	t.write(w)
	return nil
}

// redriveResult is what redrive reports.
type redriveResult struct {
	Topic    string `json:"topic"`
	Executed bool   `json:"executed"`
	Chosen   int    `json:"chosen"`
	Already  int    `json:"already_redriven"`
	// Copies: chosen dead letters of a source record another chosen one is sent for.
	Copies  int           `json:"copies_skipped"`
	Sent    int           `json:"sent"`
	Targets []string      `json:"targets"`
	Letters []redriveItem `json:"letters"` // what is sent (or, in a dry run, would be)
}

// redriveItem is one dead letter redrive sends.
type redriveItem struct {
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Source    string `json:"source"`
	Target    string `json:"target"` // topic[partition], or topic[by key]
}

type redriveOpts struct {
	execute   bool
	allCopies bool // send several dead letters of one source record
}

func redrive(ctx context.Context, e *env, c *conn, ac *admin.Client, brokers string, props kconf.Map, dlqTopic, to string, letters []deadLetter, o redriveOpts) error {
	execute := o.execute
	res := redriveResult{Topic: dlqTopic, Chosen: len(letters), Targets: []string{}, Letters: []redriveItem{}}
	// Where each dead letter goes, and from when each target partition must be read.
	type target struct {
		topic     string
		partition int32 // -1: by key, so any partition
	}
	dest := make([]target, len(letters))
	oldest := map[string]time.Time{}
	parts := map[string]map[int32]bool{} // per target topic: partitions to read (nil map: all)
	counts := map[string]int{}
	for i, d := range letters {
		t := target{topic: d.SourceTopic, partition: d.SourcePartition}
		if to != "" {
			t = target{topic: to, partition: -1}
		}
		dest[i] = t
		if _, ok := counts[t.topic]; !ok {
			tps, err := ac.Partitions(ctx, t.topic)
			if err != nil {
				return fmt.Errorf("redrive target: %w", err)
			}
			counts[t.topic] = len(tps)
		}
		if t.partition >= int32(counts[t.topic]) {
			return fmt.Errorf("dead letter %s[%d]@%d came from %s[%d], but topic %q has %d partitions now", dlqTopic, d.Partition, d.Offset, d.SourceTopic, d.SourcePartition, t.topic, counts[t.topic])
		}
		if o, ok := oldest[t.topic]; !ok || d.msg.Timestamp.Before(o) {
			oldest[t.topic] = d.msg.Timestamp
		}
		if parts[t.topic] == nil {
			parts[t.topic] = map[int32]bool{}
		}
		if t.partition < 0 {
			for p := range int32(counts[t.topic]) {
				parts[t.topic][p] = true
			}
		} else {
			parts[t.topic][t.partition] = true
		}
	}
	// The copies already in the targets. A copy keeps its dead letter's timestamp (on a
	// LogAppendTime topic it gets a later one), so it sits at or after the first offset
	// whose timestamp is at or after the oldest chosen dead letter's.
	redriven := map[string]bool{} // dead letters (their ids) and sources with a copy there
	for _, topic := range slices.Sorted(maps.Keys(parts)) {
		res.Targets = append(res.Targets, topic)
		var tps []record.TopicPartition
		for _, p := range slices.Sorted(maps.Keys(parts[topic])) {
			tps = append(tps, record.TopicPartition{Topic: topic, Partition: p})
		}
		starts, err := ac.ListOffsets(ctx, tps, admin.AtTime(oldest[topic]))
		if err != nil {
			return err
		}
		ends, err := ac.ListOffsets(ctx, tps, admin.Latest)
		if err != nil {
			return err
		}
		var ranges []admin.Range
		for _, tp := range tps {
			ranges = append(ranges, admin.Range{TopicPartition: tp, From: starts[tp], To: ends[tp]})
		}
		prefix := dlqTopic + "/"
		err = admin.Scan(ctx, brokers, props, ranges, func(m record.Message) error {
			if from := header(m, headerRedriveFrom); strings.HasPrefix(from, prefix) {
				redriven[from] = true
				if src := header(m, headerRedriveSource); src != "" {
					redriven[src] = true
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading redrive target %q: %w", topic, err)
		}
	}
	var todo []*record.Message
	chosen := map[string]bool{} // sources sent in this run
	for i, d := range letters {
		id := fmt.Sprintf("%s/%d/%d", dlqTopic, d.Partition, d.Offset)
		src := d.sourceID()
		if redriven[id] || (!o.allCopies && redriven[src]) {
			res.Already++
			continue
		}
		if !o.allCopies && chosen[src] {
			res.Copies++
			continue
		}
		chosen[src] = true
		h := make([]record.Header, 0, len(d.msg.Headers)+2)
		for _, x := range d.msg.Headers {
			if !strings.HasPrefix(x.Key, "samsa.dlq.") && x.Key != headerRedriveFrom && x.Key != headerRedriveSource {
				h = append(h, x)
			}
		}
		h = append(h, record.Header{Key: headerRedriveFrom, Value: []byte(id)}, record.Header{Key: headerRedriveSource, Value: []byte(src)})
		todo = append(todo, &record.Message{Topic: dest[i].topic, Partition: dest[i].partition, Key: d.msg.Key, Value: d.msg.Value, Headers: h, Timestamp: d.msg.Timestamp})
		target := fmt.Sprintf("%s[%d]", dest[i].topic, dest[i].partition)
		if dest[i].partition < 0 {
			target = dest[i].topic + "[by key]"
		}
		res.Letters = append(res.Letters, redriveItem{Partition: d.Partition, Offset: d.Offset, Source: fmt.Sprintf("%s[%d]@%d", d.SourceTopic, d.SourcePartition, d.SourceOffset), Target: target})
	}
	if execute && len(todo) > 0 {
		prod, err := produce.New(produce.Config{Brokers: brokers, Overrides: props, Defaults: kconf.Map{"partitioner": "murmur2_random", "log_level": 3}})
		if err != nil {
			return err
		}
		acks := make(chan error, len(todo))
		prod.ProduceBatch(ctx, todo, ackFunc(func(_ *record.Message, err error) { acks <- err }))
		var failed []error
		for range len(todo) {
			if err := <-acks; err != nil {
				failed = append(failed, err)
			}
		}
		prod.Close(c.timeout)
		res.Sent = len(todo) - len(failed)
		if len(failed) > 0 {
			return fmt.Errorf("redrive: %d of %d not acknowledged (first: %v); run the same redrive again: it skips the ones that landed", len(failed), len(todo), failed[0])
		}
	}
	res.Executed = execute
	if c.output == "json" {
		return writeJSON(e.stdout, res)
	}
	w := e.stdout
	copies := ""
	if res.Copies > 0 {
		copies = fmt.Sprintf("; %d more dead letter(s) of a source record sent once (skipped; -all-copies sends them)", res.Copies)
	}
	if execute {
		fmt.Fprintf(w, "redrive from %s: %d chosen, %d already redriven (skipped), %d sent to %s%s\n", dlqTopic, res.Chosen, res.Already, res.Sent, strings.Join(res.Targets, ", "), copies)
		return nil
	}
	fmt.Fprintf(w, "redrive from %s: %d chosen, %d already redriven (skipped), %d would be sent to %s%s\n", dlqTopic, res.Chosen, res.Already, len(todo), strings.Join(res.Targets, ", "), copies)
	if len(res.Letters) > 0 {
		fmt.Fprintln(w)
		var t table
		t.add("PARTITION", "OFFSET", "SOURCE", "TARGET")
		for _, l := range res.Letters {
			t.add(l.Partition, l.Offset, l.Source, l.Target)
		}
		t.write(w)
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "dry run: nothing sent; run again with --execute to send")
	return nil
}

type ackFunc func(m *record.Message, err error)

func (f ackFunc) Delivered(m *record.Message, err error) { f(m, err) }
