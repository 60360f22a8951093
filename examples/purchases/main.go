// Purchases: per-user purchase totals in Redis, kept by the node that consumes the user's
// partition, and readable from every node over HTTP (Akka's kafka-to-sharding sample, in
// samsa's terms).
//
//	go run ./examples/purchases -produce 1000     # one node: in-process Kafka, totals in memory
//
//	# two nodes sharing Kafka and Redis (docker compose up -d):
//	export KAFKA_BROKERS=localhost:9092 REDIS_ADDR=localhost:6379
//	go run ./examples/purchases -node a -http 127.0.0.1:8081 -produce 1000
//	go run ./examples/purchases -node b -http 127.0.0.1:8082
//	curl 127.0.0.1:8081/users/u07; curl 127.0.0.1:8082/users/u07
//
// Purchase events ({"user", "amount_cents"}) are keyed by user id on the topic
// "purchases". A processor keeps each user's count and total in a state.Table: the node
// that is assigned partition p reads the totals of the batch's users from Redis, adds the
// batch, and writes them back with the batch's offsets in one atomic Apply, so a batch
// replayed after a crash or a rebalance does not count twice. Every node answers
// GET /users/{id} from Redis with Table.Lookup: the user's partition is where the
// producer put it (murmur2 of the key, state.PartitionOf), so any node knows which table
// partition to read.
//
// REDIS_ADDR (host:port; several comma-separated addresses mean a Redis Cluster) is
// needed for more than one node. Without it the totals live in this process only (a
// state.NewMemoryTable), which is enough for one node. Without KAFKA_BROKERS the node runs
// on an in-process broker, which only it can reach.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/examples/internal/devkafka"
	"github.com/samsa-go/samsa/processor"
	"github.com/samsa-go/samsa/processor/topics"
	"github.com/samsa-go/samsa/state"
)

// Purchase is one event on "purchases", keyed by User.
type Purchase struct {
	User        string `json:"user"`
	AmountCents int64  `json:"amount_cents"`
}

// Totals is what the table keeps per user.
type Totals struct {
	User       string `json:"user"`
	Count      int64  `json:"count"`
	SpentCents int64  `json:"spent_cents"`
	Partition  int32  `json:"partition"`
	UpdatedBy  string `json:"updated_by"` // the node that applied the last batch
}

// config is what the flags set.
type config struct {
	Topic      string
	Namespace  string // of the Redis table
	Node       string
	HTTP       string
	Group      string
	Partitions int
	Produce    int // purchase events to produce at start
	Users      int
	RedisAddr  string
	// Ready, if set, is called with the HTTP address once the node serves (for tests).
	Ready func(httpAddr string)
	Out   *log.Logger
}

func main() {
	host, _ := os.Hostname()
	cfg := config{Topic: "purchases", Namespace: "purchases", Out: log.New(os.Stdout, "", log.Ltime)}
	flag.StringVar(&cfg.Node, "node", fmt.Sprintf("%s-%d", host, os.Getpid()), "this node's name, in logs and in the totals it writes")
	flag.StringVar(&cfg.HTTP, "http", "127.0.0.1:8081", "address of the HTTP endpoint (GET /users/{id})")
	flag.StringVar(&cfg.Group, "group", "purchases-totals", "consumer group of the processor")
	flag.IntVar(&cfg.Partitions, "partitions", 8, "partitions of the purchases topic (created with this many; an existing topic must have as many)")
	flag.IntVar(&cfg.Produce, "produce", 0, "purchase events to produce at start")
	flag.IntVar(&cfg.Users, "users", 20, "distinct users the produced events are spread over")
	runFor := flag.Duration("for", 0, "stop after this long (0: until interrupted)")
	flag.Parse()
	cfg.RedisAddr = os.Getenv("REDIS_ADDR")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *runFor)
		defer cancel()
	}
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, cfg config) error {
	// The HTTP endpoint computes partitions, so it needs the topic's real partition
	// count: Brokers fails when the topic exists with another one.
	brokers, release, err := devkafka.Brokers(ctx, devkafka.Topic{Name: cfg.Topic, Partitions: cfg.Partitions})
	if err != nil {
		return err
	}
	defer release()
	partitions := cfg.Partitions

	var table *state.Table[string, Totals]
	if cfg.RedisAddr != "" {
		client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: strings.Split(cfg.RedisAddr, ",")})
		defer client.Close()
		if table, err = state.NewTable(client, cfg.Namespace, codec.String(), codec.JSON[Totals]()); err != nil {
			return err
		}
		cfg.Out.Printf("node %s: totals in Redis at %s", cfg.Node, cfg.RedisAddr)
	} else {
		table = state.NewMemoryTable[string, Totals]()
		cfg.Out.Printf("node %s: REDIS_ADDR not set: totals kept in this process only (other nodes would not see them)", cfg.Node)
	}

	if cfg.Produce > 0 {
		if err := produce(ctx, brokers, cfg.Topic, 0, cfg.Produce, cfg.Users); err != nil {
			return err
		}
		cfg.Out.Printf("node %s: produced %d purchases of %d users to %q (%d partitions)", cfg.Node, cfg.Produce, cfg.Users, cfg.Topic, partitions)
	}

	proc, err := processor.NewPartitioned(
		processor.Config{Membership: processor.Membership{Brokers: brokers, SessionTimeout: 10 * time.Second}, Group: cfg.Group},
		[]processor.Input[string, Purchase]{{Topic: cfg.Topic, Key: codec.String(), Value: codec.JSON[Purchase]()}},
		func(p int32) processor.Handler[string, Purchase] {
			cfg.Out.Printf("node %s: handles partition %d", cfg.Node, p)
			return &totaler{node: cfg.Node, topic: cfg.Topic, partition: p, table: table, out: cfg.Out}
		},
		processor.WithCheckpoint(table),
		processor.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTP)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: usersHandler(table, partitions, cfg.Node), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Out.Printf("node %s: http: %v", cfg.Node, err)
		}
	}()
	cfg.Out.Printf("node %s: serving http://%s/users/{id}", cfg.Node, ln.Addr())
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr().String())
	}

	runErr := proc.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = errors.Join(runErr, srv.Shutdown(sctx))
	wg.Wait()
	return err
}

// totaler is the handler of one partition.
type totaler struct {
	node      string
	topic     string
	partition int32
	table     *state.Table[string, Totals]
	out       *log.Logger
}

func (h *totaler) Handle(ctx context.Context, b *processor.Batch[string, Purchase]) error {
	var users []string
	index := map[string]int{}
	for _, r := range b.Records {
		if _, ok := index[r.Key]; !ok && !r.NullKey && !r.Tombstone {
			index[r.Key] = len(users)
			users = append(users, r.Key)
		}
	}
	if len(users) == 0 {
		return nil
	}
	current, _, err := h.table.Partition(b.Partition).GetMany(ctx, users)
	if err != nil {
		return err
	}
	for _, r := range b.Records {
		i, ok := index[r.Key]
		if !ok || r.NullKey || r.Tombstone {
			continue
		}
		current[i].User = r.Key
		current[i].Count++
		current[i].SpentCents += r.Value.AmountCents
	}
	puts := make([]state.Entry[string, Totals], len(users))
	for i, u := range users {
		current[i].Partition, current[i].UpdatedBy = b.Partition, h.node
		puts[i] = state.Entry[string, Totals]{Key: u, Value: current[i]}
	}
	next := b.NextOffsets()
	err = h.table.Apply(ctx, b.Partition, puts, nil, next)
	if errors.Is(err, state.ErrAlreadyApplied) {
		h.out.Printf("node %s: partition %d: batch up to offset %d was applied already; nothing written", h.node, b.Partition, next[h.topic])
		return nil
	}
	if err != nil {
		return err
	}
	h.out.Printf("node %s: partition %d: applied %d purchases of %d users, next offset %d", h.node, b.Partition, len(b.Records), len(users), next[h.topic])
	return nil
}

// Close is called when the partition is revoked.
func (h *totaler) Close() error {
	h.out.Printf("node %s: released partition %d", h.node, h.partition)
	return nil
}

// userReply is the HTTP answer.
type userReply struct {
	Totals
	ServedBy string `json:"served_by"`
	Error    string `json:"error,omitempty"`
}

func usersHandler(table *state.Table[string, Totals], partitions int, node string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		t, found, err := table.Lookup(r.Context(), int32(partitions), id)
		p := state.PartitionOf([]byte(id), int32(partitions))
		// A found user's Partition is the one Kafka put its purchases in, as recorded by the
		// handler: the same as p, or the user would not have been found there.
		reply := userReply{Totals: t, ServedBy: node}
		status := http.StatusOK
		switch {
		case err != nil:
			status, reply.Error = http.StatusBadGateway, err.Error()
		case !found:
			status, reply.Error = http.StatusNotFound, "no purchases"
		}
		if !found {
			reply.User, reply.Partition = id, p
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(reply)
	})
	return mux
}

// produce writes purchases from..from+n-1 (see purchaseN): spread over users u00, u01, ...
// with amounts that make each user's expected totals easy to recompute (see expected).
func produce(ctx context.Context, brokers, topic string, from, n, users int) error {
	prod, err := topics.NewProducer(topics.ProducerConfig{Brokers: brokers},
		processor.NewOutput(topic, codec.String(), codec.JSON[Purchase]()))
	if err != nil {
		return err
	}
	defer prod.Close()
	recs := make([]topics.Record[string, Purchase], 0, n)
	for i := from; i < from+n; i++ {
		p := purchaseN(i, users)
		recs = append(recs, topics.Record[string, Purchase]{Key: p.User, Value: p})
	}
	return prod.SendMany(ctx, recs)
}

// purchaseN is the i-th produced purchase.
func purchaseN(i, users int) Purchase {
	return Purchase{User: fmt.Sprintf("u%02d", (i*7)%users), AmountCents: int64(100 + (i%50)*25)}
}

// expected returns the totals of purchases 0..n-1.
func expected(n, users int) map[string]Totals {
	want := map[string]Totals{}
	for i := range n {
		p := purchaseN(i, users)
		t := want[p.User]
		t.User, t.Count, t.SpentCents = p.User, t.Count+1, t.SpentCents+p.AmountCents
		want[p.User] = t
	}
	return want
}
