// Command migrate-schemas registers every schema file of a directory with a schema
// registry — the release task that comes before deploying a service whose encoders use
// the latest registered schemas (KaufmannEx's mix task, as a command):
//
//	go run ./examples/events/migrate-schemas -dir examples/events/schemas
//	go run ./examples/events/migrate-schemas -dir schemas/ -check    # test, register nothing
//
// Each *.avsc, *.proto or *.json file is registered under the subject named by the file
// name without its extension (the event name). A schema the subject's compatibility
// rule refuses is reported with the subject and the rule, the other files are still
// registered, and the command exits 1. The registry is -registry, else
// $SCHEMA_REGISTRY_URL, else http://localhost:8081.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/samsa-go/samsa/codec/registry"
	"github.com/samsa-go/samsa/examples/events/internal/events"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("migrate-schemas", flag.ContinueOnError)
	fs.SetOutput(out)
	dir := fs.String("dir", "", "directory of schema files (*.avsc, *.proto, *.json); required")
	url := fs.String("registry", "", "schema registry URL (default $SCHEMA_REGISTRY_URL, else http://localhost:8081)")
	user := fs.String("user", os.Getenv("SCHEMA_REGISTRY_USER"), "basic-auth user (default $SCHEMA_REGISTRY_USER)")
	check := fs.Bool("check", false, "only test compatibility; register nothing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("migrate-schemas: -dir is required")
	}
	if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
		return fmt.Errorf("migrate-schemas: -dir %q is not a directory", *dir)
	}
	if *url == "" {
		*url = os.Getenv("SCHEMA_REGISTRY_URL")
	}
	if *url == "" {
		*url = "http://localhost:8081"
	}
	client, err := registry.NewClient(registry.Config{URL: *url, Username: *user, Password: os.Getenv("SCHEMA_REGISTRY_PASSWORD")})
	if err != nil {
		return fmt.Errorf("migrate-schemas: %w", err)
	}
	defer client.Close()
	_, err = events.Migrate(client, os.DirFS(*dir), *check, out)
	return err
}
