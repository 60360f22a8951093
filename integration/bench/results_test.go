package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteResultsReplacesOnlyItsSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	steps := []struct{ scenario, section string }{
		{"throughput", "## throughput\n\nfirst\n"},
		{"eos", "## eos\n\nkept\n"},
		{"throughput", "## throughput\n\nsecond\n"},
	}
	for _, s := range steps {
		if err := writeResults(path, s.scenario, s.section); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if !strings.HasPrefix(doc, resultsHeader) {
		t.Errorf("the file does not start with the header:\n%s", doc)
	}
	for _, want := range []string{"<!-- bench:throughput -->", "<!-- /bench:throughput -->", "second", "<!-- bench:eos -->", "kept"} {
		if n := strings.Count(doc, want); n != 1 {
			t.Errorf("%q appears %d times, want once:\n%s", want, n, doc)
		}
	}
	if strings.Contains(doc, "first") {
		t.Errorf("the replaced section is still there:\n%s", doc)
	}
	if strings.Index(doc, "second") > strings.Index(doc, "<!-- bench:eos -->") {
		t.Errorf("the replaced section moved after the eos section:\n%s", doc)
	}
	if matches, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".results-*")); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}

func TestMarkdownTable(t *testing.T) {
	s := &summary{about: []string{"broker: b"}}
	tb := s.table("figures:", "name", "value")
	tb.add("a|b", 1.5)
	tb.note("ratio %.1f", 2.0)
	md := s.markdown(runInfo{scenario: "eos"}, "RESULTS.md")
	for _, want := range []string{"## eos\n", "- broker: b\n", "figures:\n\n| name | value |\n| --- | --- |\n| a\\|b | 1.5 |\n", "\n- ratio 2.0\n"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// A section whose end marker is missing is refused, not guessed at: guessing would
// take the next sections with it.
func TestWriteResultsRefusesBrokenMarkers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "RESULTS.md")
	broken := resultsHeader + "\n<!-- bench:throughput -->\n## throughput\n\n<!-- bench:eos -->\n## eos\n\n<!-- /bench:eos -->\n"
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	err := writeResults(path, "throughput", "## throughput\n\nnew\n")
	if err == nil || !strings.Contains(err.Error(), "no \"<!-- /bench:throughput -->\"") {
		t.Fatalf("writeResults = %v, want an error naming the missing end marker", err)
	}
	if b, _ := os.ReadFile(path); string(b) != broken {
		t.Errorf("the file changed:\n%s", b)
	}
	if err := writeResults(path, "eos", "## eos\n\nnew\n"); err != nil {
		t.Errorf("a well-formed section next to a broken one: %v", err)
	}
}
