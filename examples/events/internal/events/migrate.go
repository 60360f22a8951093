package events

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/samsa-go/samsa/codec/registry"
)

// schemaType is the registry's schema type of a schema file's extension, "" for none.
func schemaType(ext string) string {
	switch ext {
	case ".avsc":
		return "AVRO"
	case ".proto":
		return "PROTOBUF"
	case ".json":
		return "JSON"
	}
	return ""
}

// MigrateError is Migrate's failure: a one-line summary (the files' own lines were
// written already), with each file's error reachable through Unwrap.
type MigrateError struct {
	Summary string
	Errs    []error
}

func (e *MigrateError) Error() string   { return e.Summary }
func (e *MigrateError) Unwrap() []error { return e.Errs }

// MigrateResult is what Migrate did with one file.
type MigrateResult struct {
	File    string
	Subject string
	ID      int   // the schema's ID, when registered (or already there)
	Err     error // why not; an *registry.IncompatibleError names the rule
}

// Migrate registers every schema file of dir (*.avsc, *.proto, *.json; the subject is
// the file name without its extension, i.e. the event name) in name order, writing one
// line per file to w. Files that fail do not stop the others. With check set it only
// tests compatibility and registers nothing. It returns an error listing the failures.
func Migrate(client *registry.Client, dir fs.FS, check bool, w io.Writer) ([]MigrateResult, error) {
	entries, err := fs.ReadDir(dir, ".")
	if err != nil {
		return nil, fmt.Errorf("migrate-schemas: read the schema directory: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	var results []MigrateResult
	var errs []error
	for _, e := range entries {
		ext := path.Ext(e.Name())
		typ := schemaType(ext)
		if e.IsDir() || typ == "" {
			continue
		}
		res := MigrateResult{File: e.Name(), Subject: strings.TrimSuffix(e.Name(), ext)}
		text, err := fs.ReadFile(dir, e.Name())
		if err != nil {
			res.Err = err
		} else if check {
			res.Err = client.Check(res.Subject, registry.Schema{Type: typ, Text: string(text)})
		} else {
			res.ID, res.Err = client.Register(res.Subject, registry.Schema{Type: typ, Text: string(text)})
		}
		var inc *registry.IncompatibleError
		switch {
		case errors.As(res.Err, &inc):
			fmt.Fprintf(w, "INCOMPATIBLE %s: subject %q refuses it under compatibility %s", res.File, inc.Subject, inc.Compatibility)
			if inc.Detail != "" {
				fmt.Fprintf(w, ": %s", inc.Detail)
			}
			fmt.Fprintln(w)
			errs = append(errs, fmt.Errorf("%s: %w", res.File, res.Err))
		case res.Err != nil:
			fmt.Fprintf(w, "FAILED %s (subject %q): %v\n", res.File, res.Subject, res.Err)
			errs = append(errs, fmt.Errorf("%s: %w", res.File, res.Err))
		case check:
			fmt.Fprintf(w, "compatible %s: subject %q\n", res.File, res.Subject)
		default:
			fmt.Fprintf(w, "registered %s: subject %q, schema ID %d\n", res.File, res.Subject, res.ID)
		}
		results = append(results, res)
	}
	if len(results) == 0 && len(errs) == 0 {
		return nil, errors.New("migrate-schemas: no schema files (*.avsc, *.proto, *.json) in the directory")
	}
	if len(errs) > 0 {
		what := "not registered"
		if check {
			what = "not compatible"
		}
		return results, &MigrateError{Summary: fmt.Sprintf("migrate-schemas: %d of %d schemas %s", len(errs), len(results), what), Errs: errs}
	}
	return results, nil
}
