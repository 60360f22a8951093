// Reach: Kasper's partition-wise join of two co-partitioned topics.
//
//	go run ./examples/reach
//
// "followers" carries follow and unfollow events keyed by the followed user; "tweets"
// carries tweets keyed by their author. Both have the same partition count and the same
// key, so partition p of both holds the same users, and one handler per partition can
// keep that partition's follower table and compute each tweet's reach (how many followers
// saw it) without any remote lookup. Results go to "reach". With KAFKA_BROKERS unset it
// runs on an in-process broker.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/examples/internal/devkafka"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
)

// Follow is one event on "followers".
type Follow struct {
	Follower string `json:"follower"`
	Unfollow bool   `json:"unfollow,omitempty"`
}

// Tweet is one event on "tweets".
type Tweet struct {
	ID   string `json:"id"`
	Text string `json:"text"`
}

// Event is what both inputs decode into: each input's decoder fills its own field.
type Event struct {
	Follow *Follow
	Tweet  *Tweet
}

// Reach is the output.
type Reach struct {
	Tweet     string `json:"tweet"`
	Author    string `json:"author"`
	Followers int    `json:"followers"`
}

var reachOut = processor.NewOutput("reach", codec.String(), codec.JSON[Reach]())

func inputs() []processor.Input[string, Event] {
	follows, tweets := codec.JSON[Follow](), codec.JSON[Tweet]()
	return []processor.Input[string, Event]{
		{Topic: "followers", Key: codec.String(), Value: codec.DecoderFunc[Event](func(b []byte) (Event, error) {
			f, err := follows.Decode(b)
			return Event{Follow: &f}, err
		})},
		{Topic: "tweets", Key: codec.String(), Value: codec.DecoderFunc[Event](func(b []byte) (Event, error) {
			t, err := tweets.Decode(b)
			return Event{Tweet: &t}, err
		})},
	}
}

// joiner is one partition's handler: its follower table covers exactly the users whose
// key hashes to this partition. (The state issue moves this table to a Store.)
type joiner struct {
	followers map[string]map[string]bool
}

func (j *joiner) Handle(_ context.Context, b *processor.Batch[string, Event]) error {
	for _, r := range b.Records {
		switch {
		case r.Value.Follow != nil:
			set := j.followers[r.Key]
			if set == nil {
				set = map[string]bool{}
				j.followers[r.Key] = set
			}
			if r.Value.Follow.Unfollow {
				delete(set, r.Value.Follow.Follower)
			} else {
				set[r.Value.Follow.Follower] = true
			}
		case r.Value.Tweet != nil:
			reach := Reach{Tweet: r.Value.Tweet.ID, Author: r.Key, Followers: len(j.followers[r.Key])}
			if err := reachOut.Send(b, reach.Tweet, reach); err != nil {
				return err
			}
		}
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	brokers, release, err := devkafka.Brokers(ctx,
		devkafka.Topic{Name: "followers", Partitions: 4}, devkafka.Topic{Name: "tweets", Partitions: 4}, devkafka.Topic{Name: "reach", Partitions: 4})
	if err != nil {
		return err
	}
	defer release()

	// Followers first, then the tweets: users u0..u9, user ui has 10·i followers, one of
	// whom unfollows again; every user tweets twice. The producers partition by key as
	// the processor's outputs do, so a user's follows and tweets meet in one partition.
	pcfg := topics.ProducerConfig{Brokers: brokers}
	follows, err := topics.NewProducer(pcfg, processor.NewOutput("followers", codec.String(), codec.JSON[Follow]()))
	if err != nil {
		return err
	}
	defer follows.Close()
	tweets, err := topics.NewProducer(pcfg, processor.NewOutput("tweets", codec.String(), codec.JSON[Tweet]()))
	if err != nil {
		return err
	}
	defer tweets.Close()
	want := map[string]int{}
	for i := range 10 {
		user := fmt.Sprintf("u%d", i)
		var fs []topics.Record[string, Follow]
		for f := range 10 * i {
			fs = append(fs, topics.Record[string, Follow]{Key: user, Value: Follow{Follower: fmt.Sprintf("f%d", f)}})
		}
		if i > 0 {
			fs = append(fs, topics.Record[string, Follow]{Key: user, Value: Follow{Follower: "f0", Unfollow: true}})
		}
		if err := follows.SendMany(ctx, fs); err != nil { // followers are in before the tweets
			return err
		}
		for n := range 2 {
			id := fmt.Sprintf("%s-t%d", user, n)
			if err := tweets.Send(ctx, user, Tweet{ID: id, Text: "hello"}); err != nil {
				return err
			}
			want[id] = max(10*i-1, 0)
		}
	}

	// Both topics are already written, so the first batch of each partition holds both, and
	// within a batch co-partitioned records are merged by timestamp: every follow event is
	// applied before the later tweets. (BatchWait leaves time for both fetches to arrive.)
	p, err := processor.NewPartitioned(
		processor.Config{Membership: processor.Membership{Brokers: brokers}, Group: "reach", BatchWait: 500 * time.Millisecond},
		inputs(),
		func(partition int32) processor.Handler[string, Event] {
			return &joiner{followers: map[string]map[string]bool{}}
		})
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()

	readCtx, cancelRead := context.WithTimeout(ctx, time.Minute)
	defer cancelRead()
	got := map[string]Reach{}
	for len(got) < len(want) && err == nil {
		var out []processor.Record[string, Reach]
		if out, err = devkafka.ReadAll(readCtx, brokers, "reach", codec.String(), codec.JSON[Reach]()); err != nil {
			break
		}
		for _, r := range out {
			got[r.Value.Tweet] = r.Value
		}
		if len(got) < len(want) {
			select {
			case <-readCtx.Done():
				err = readCtx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	cancel()
	if rerr := <-runErr; rerr != nil {
		return rerr
	}
	if err != nil {
		return fmt.Errorf("reading reach: %w (got %d of %d)", err, len(got), len(want))
	}
	ids := make([]string, 0, len(got))
	for id := range got {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	bad := 0
	for _, id := range ids {
		mark := ""
		if got[id].Followers != want[id] {
			mark = fmt.Sprintf("   <- want %d", want[id])
			bad++
		}
		fmt.Printf("%-8s by %-3s reached %2d followers%s\n", id, got[id].Author, got[id].Followers, mark)
	}
	if bad > 0 {
		return fmt.Errorf("%d tweets with a wrong reach", bad)
	}
	fmt.Printf("done: %d tweets joined with their authors' followers, partition by partition\n", len(got))
	return nil
}
