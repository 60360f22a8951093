package view_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/samsa-go/samsa/codec"
	"github.com/samsa-go/samsa/processor/view"
)

type User struct {
	Name    string `json:"name"`
	Country string `json:"country"`
}

// A View of the compacted "users" topic on every node: handlers look users up by id,
// and the node answers GET /users?key=<id>.
func ExampleNew() {
	users, err := view.New(view.Config{Brokers: "localhost:9092", MaxBytes: 512 << 20}, "users", codec.String(), codec.JSON[User]())
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- users.Run(ctx) }()

	wait, cancelWait := context.WithTimeout(ctx, 5*time.Minute)
	defer cancelWait()
	if err := users.WaitReady(wait); err != nil {
		log.Fatal(err) // Run's error (the topic is missing, the bound is too low), or the wait's
	}
	http.Handle("/users", users)

	u, found, err := users.Get("alice")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(u.Country, found)
}
